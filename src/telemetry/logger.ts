/** pino: JSON lines for machines, pretty lines for a person at a terminal. */
import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';
import type { Config } from '../config.js';

// Loaded only for a person's terminal: a service writing JSON lines never carries it.
const loadPretty = (): typeof import('pino-pretty') => createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');

export type { Logger };

export function createLogger(config: Pick<Config, 'logLevel' | 'logFormat'>, destination: NodeJS.WritableStream = process.stdout): Logger {
  const isTty = (destination as { isTTY?: boolean }).isTTY === true;
  const wantPretty = config.logFormat === 'pretty' || (config.logFormat === 'auto' && isTty);
  const options = { level: config.logLevel, base: { service: 'motive-proxy' } };
  if (wantPretty) {
    return pino(options, loadPretty()({ colorize: isTty, destination, ignore: 'service,pid,hostname', translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return pino(options, destination);
}
