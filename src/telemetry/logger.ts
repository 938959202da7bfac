/** pino: JSON lines for machines, pretty lines for a person at a terminal. */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from '../config.js';

export type { Logger };

export function createLogger(config: Pick<Config, 'logLevel' | 'logFormat'>, destination: NodeJS.WritableStream = process.stdout): Logger {
  const isTty = (destination as { isTTY?: boolean }).isTTY === true;
  const wantPretty = config.logFormat === 'pretty' || (config.logFormat === 'auto' && isTty);
  const options = { level: config.logLevel, base: { service: 'motive-proxy' } };
  if (wantPretty) {
    return pino(options, pretty({ colorize: isTty, destination, ignore: 'service,pid,hostname', translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return pino(options, destination);
}
