/** Addresses in cluster mode, without loading the Redis client. */
import { hostname } from 'node:os';

/** A Redis URL fit for a log line: its password replaced. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'redis://(unparsable)';
  }
}

/**
 * Where the other instances reach this one, given what it listens on (CLUSTER_ADVERTISE_URL
 * overrides it): a wildcard host is named by the machine's host name.
 */
export function advertisedUrl(host: string, listening: string): string {
  const { port } = new URL(listening);
  if (host === '0.0.0.0' || host === '::' || host === '') return `http://${hostname()}:${port}`;
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}
