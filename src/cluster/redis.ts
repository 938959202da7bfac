/**
 * The cluster's Redis connection (ioredis): `redis://` or `rediss://` (TLS), with a user and
 * password when the URL has them. A command fails within a couple of seconds while Redis is
 * unreachable instead of waiting for it, so that requests get a clear 503 (`cluster_unavailable`)
 * and nothing falls back to memory; the client reconnects by itself.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../telemetry/logger.js';
import { redactRedisUrl } from './addresses.js';

let commandsSent = 0;

/** Commands sent to Redis by this process since it started. */
export const redisCommandsSent = (): number => commandsSent;

export async function connectRedis(url: string, logger: Logger): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(100 * times, 1_000),
  });
  // Every command this instance sends (a script is one): /health reports it, the benchmark
  // divides it by turns (Redis round trips a turn costs).
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    commandsSent++;
    return send(...args);
  }) as Redis['sendCommand'];
  let down = false;
  let lastError: string | null = null;
  redis.on('error', (err: Error) => {
    lastError = err.message;
    if (down) return;
    down = true;
    logger.error({ err: { message: err.message } }, `cluster: Redis at ${redactRedisUrl(url)} is unreachable (${err.message}); requests get 503 until it is back`);
  });
  redis.on('ready', () => {
    if (!down) return;
    down = false;
    logger.info(`cluster: Redis at ${redactRedisUrl(url)} is reachable again`);
  });
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    // The reason Redis gave (a wrong password: WRONGPASS) beats "Connection is closed".
    const reason = lastError ?? (error instanceof Error ? error.message : String(error));
    throw new Error(`cannot reach Redis at ${redactRedisUrl(url)}: ${reason}`, { cause: error });
  }
  return redis;
}
