/** Starts the real service in-process on a free loopback port, for integration tests. */
import OpenAI from 'openai';
import { loadConfig, type OptionName } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';

export interface TestServer {
  readonly url: string;
  readonly service: Service;
  /** An official OpenAI SDK client pointed at the proxy. */
  client(options?: { maxRetries?: number; timeout?: number }): OpenAI;
  close(): Promise<void>;
}

export async function startTestServer(settings: Partial<Record<OptionName, string>> = {}): Promise<TestServer> {
  // Overload protection is off unless a test asks for it: a test process's own work (or a GC
  // pause on a loaded machine) must not turn into 503s in unrelated tests.
  const defaults = { host: '127.0.0.1', port: '0', logLevel: 'silent', logFormat: 'json', journalPath: 'memory', maxEventLoopDelayMs: '0' };
  const { config } = loadConfig({ ...defaults, ...settings }, {});
  const service = await createService(config, createLogger(config));
  return {
    url: service.url,
    service,
    client: (options = {}) =>
      new OpenAI({ baseURL: `${service.url}/v1`, apiKey: 'test-key', maxRetries: options.maxRetries ?? 2, timeout: options.timeout ?? 60_000 }),
    close: () => service.shutdown(),
  };
}
