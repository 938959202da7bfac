// Shared pieces of the identity tests: in-process services with an admin key, shut down after
// each test; a private Redis for their cluster cases, and the instances started on it, stopped
// after them; and an admin-route call that reads any answer.
import { afterAll, afterEach } from 'vitest';
import { loadConfig, type OptionName } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { killAll } from '../cluster/instances.js';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';

export type Settings = Partial<Record<OptionName, string>>;

/**
 * `start` makes a listening service (loopback, a free port, a memory journal, `adminKey`, keys
 * required, then `settings`); `redis` a private redis-server, made once for the file.
 */
export function useServices(adminKey: string): { start(settings?: Settings): Promise<Service>; redis(): Promise<PrivateRedis> } {
  const running: Service[] = [];
  let redis: PrivateRedis | null = null;
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.shutdown()));
    killAll();
  });
  afterAll(async () => {
    killAll();
    await redis?.destroy();
  });
  return {
    async start(settings = {}) {
      const defaults = { host: '127.0.0.1', port: '0', logLevel: 'silent', journalPath: 'memory', adminApiKey: adminKey, requireApiKey: 'true' };
      const { config } = loadConfig({ ...defaults, ...settings }, {});
      const service = await createService(config, createLogger(config));
      running.push(service);
      return service;
    },
    async redis() {
      redis ??= await startRedis();
      return redis;
    },
  };
}

/** A request with `key` as its bearer; the answer's status, headers, body (JSON when it is) and text. */
export async function call(url: string, method: string, path: string, key: string, body?: unknown) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: any = text;
  try {
    json = JSON.parse(text);
  } catch {
    // JSON lines, or text
  }
  return { status: response.status, headers: response.headers, body: json, text };
}
