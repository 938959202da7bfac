#!/usr/bin/env node
/** The `motive-proxy` command: runs the service with settings from flags and environment. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError, flagName, isSecret, loadConfig, OPTIONS, parseArgs, type LoadedConfig, type OptionName } from './config.js';
import { chartSource } from './chart.js';
import { createService } from './server.js';
import { createLogger } from './telemetry/logger.js';
import { Tracing, tracingRequested } from './telemetry/tracing.js';
import { TRANSCRIPT_USAGE, transcriptCommand } from './transcript-command.js';

const SHUTDOWN_GRACE_MS = 5000;

/** The e2e harness's client SDKs that cannot be found from here. */
function missingHarnessPackages(): string[] {
  const require = createRequire(import.meta.url);
  return ['openai', '@anthropic-ai/sdk'].filter((name) => {
    try {
      require.resolve(name);
      return false;
    } catch {
      return true;
    }
  });
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * The one line a newcomer looks for: where the service listens (the address as bound, so
 * HOST=0.0.0.0 says so), where to open the console, and where to point clients.
 */
function listeningLine(host: string, url: string, consoleUrl: string | null): string {
  const { port } = new URL(url);
  const wildcard = host === '0.0.0.0' || host === '::';
  const listening = wildcard ? `http://${host.includes(':') ? `[${host}]` : host}:${port} (every interface)` : url;
  // On every interface, loopback is the address that surely works from this machine.
  const local = wildcard && consoleUrl ? consoleUrl.replace(/\/$/, '') : url;
  const consoleText = consoleUrl ?? `none on HOST ${host} (it answers callers on this machine only: see docs/console.md)`;
  return `MotiveProxy listening on ${listening} — console: ${consoleText} — clients: ${local}/v1`;
}

function help(loaded: LoadedConfig | null): string {
  const lines = (Object.keys(OPTIONS) as OptionName[]).map((name) => {
    const option = OPTIONS[name];
    const shown = (raw: string): string => (isSecret(name) ? (raw ? '(set, hidden)' : '(not set)') : raw);
    const value = loaded ? `${shown(loaded.raw[name])}  (from ${loaded.sources[name]})` : shown(option.default);
    const kind = option.default === 'true' || option.default === 'false' ? '[=true|false]' : ' <value>';
    return `  ${flagName(name)}${kind}   env ${option.env}\n      ${option.help}\n      = ${value}`;
  });
  return `motive-proxy ${version()} — pairs two LLM clients: each one's requests become the other's replies.

Usage: motive-proxy [options]          run the service
       motive-proxy chart            print the session state chart for the Stately visualizer
       ${TRANSCRIPT_USAGE}
                                     print a session's transcript from the journal (no server needed)
       motive-proxy e2e [--scenario NAME ...|--all] [options]
                                     run real clients through a real service and report
                                     (motive-proxy e2e --help lists the scenarios)

Point two OpenAI-compatible clients at http://HOST:PORT/v1 and give both the same
model name (the session id). The first to call waits; the second's prompt becomes its reply.

Options (a flag wins over its environment variable; shown with the value in effect):
${lines.join('\n')}
  -h, --help     show this help
  -v, --version  print the version

Exit codes: 0 after a clean shutdown, 1 on a failure while running, 2 for bad settings.
`;
}

async function main(): Promise<void> {
  if (process.argv[2] === 'chart') {
    process.stdout.write(chartSource());
    return;
  }
  if (process.argv[2] === 'transcript') {
    const { code, stdout, stderr } = await transcriptCommand(process.argv.slice(3), process.env);
    process.stdout.write(stdout);
    process.stderr.write(stderr);
    process.exitCode = code;
    return;
  }
  if (process.argv[2] === 'e2e') {
    // The harness drives the proxy with the official SDKs, which the service itself never loads:
    // they are not among its dependencies, and an installation without them is told so.
    const missing = missingHarnessPackages();
    if (missing.length > 0) {
      process.stderr.write(`motive-proxy e2e: the harness needs ${missing.join(' and ')}, which the service does not: npm install ${missing.join(' ')}\n`);
      process.exitCode = 2;
      return;
    }
    const { e2eCommand } = await import('./e2e/command.js');
    process.exitCode = await e2eCommand(process.argv.slice(3), process.env, version());
    return;
  }
  let loaded: LoadedConfig;
  let wantHelp = false;
  try {
    const args = parseArgs(process.argv.slice(2));
    if (args.version) {
      process.stdout.write(`${version()}\n`);
      return;
    }
    wantHelp = args.help;
    loaded = loadConfig(args.values, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    if (wantHelp) process.stdout.write(help(null));
    process.stderr.write(`motive-proxy: ${err.message.replaceAll('\n', '\nmotive-proxy: ')}\n`);
    process.exitCode = 2;
    return;
  }
  if (wantHelp) {
    process.stdout.write(help(loaded));
    return;
  }

  const { config } = loaded;
  const logger = createLogger(config);
  let service;
  try {
    // Tracing starts before the app is built, so every request is instrumented.
    const tracing = tracingRequested(process.env) ? await Tracing.start(process.env) : null;
    service = await createService(config, logger, { tracing });
  } catch (err) {
    // Settings that only make sense together (found while assembling): a usage error like any other.
    if (err instanceof ConfigError) {
      process.stderr.write(`motive-proxy: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
    process.exitCode = 1;
    return;
  }
  logger.info(
    {
      url: service.url,
      console_url: service.consoleUrl,
      handshake_timeout_s: config.handshakeTimeoutSeconds,
      turn_timeout_s: config.turnTimeoutSeconds,
      max_sessions: config.maxSessions,
    },
    listeningLine(config.host, service.url, service.consoleUrl),
  );

  const stop = (signal: string) => {
    logger.info({ signal }, 'signal received');
    setTimeout(() => {
      logger.error('shutdown took longer than 5 s; exiting');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS).unref();
    service.shutdown().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err) => {
  process.stderr.write(`motive-proxy: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
