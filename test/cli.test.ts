/**
 * The `motive-proxy` command as users run it: --help shows every option with its effective
 * value, bad settings exit 2 with a clear message, `npm start -- --port N` serves and says in
 * one log line where the console is, and SIGTERM shuts down gracefully (held requests get
 * 503) within 5 s.
 * Processes run in their own process group and the whole group is signalled, because npm
 * does not pass SIGTERM on to its child.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from './helpers/net.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function waitForHealth(url: string, child: ChildProcess): Promise<void> {
  // `npm start` builds first (incrementally: nothing is re-emitted when dist is current), and on
  // a loaded 2-core machine even starting node can take a while; wait by the clock, not a count.
  const deadline = Date.now() + 150_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`service exited with ${child.exitCode ?? child.signalCode}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('service did not answer /health');
}

const started: ChildProcess[] = [];
afterEach(() => {
  for (const child of started.splice(0)) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

function startService(command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(command, args, { cwd: root, detached: true, env: { ...process.env, LOG_FORMAT: 'json', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  return child;
}

describe('motive-proxy --help', () => {
  it('lists every option with its environment variable and effective value, flags winning over env', async () => {
    const { code, stdout } = await run(['--help', '--turn-timeout-seconds', '2.5'], { TURN_TIMEOUT_SECONDS: '9', MAX_SESSIONS: '7' });
    expect(code).toBe(0);
    for (const env of ['HOST', 'PORT', 'LOG_LEVEL', 'SESSION_TTL_SECONDS', 'HANDSHAKE_TIMEOUT_SECONDS', 'TURN_TIMEOUT_SECONDS', 'MAX_SESSIONS', 'MAX_MESSAGE_BYTES', 'ENABLE_PROMETHEUS']) {
      expect(stdout).toContain(`env ${env}`);
    }
    expect(stdout).toMatch(/--turn-timeout-seconds <value>\s+env TURN_TIMEOUT_SECONDS\n.*\n\s+= 2\.5 {2}\(from flag\)/);
    expect(stdout).toMatch(/--max-sessions <value>\s+env MAX_SESSIONS\n.*\n\s+= 7 {2}\(from env\)/);
    expect(stdout).toMatch(/--port <value>\s+env PORT\n.*\n\s+= 8000 {2}\(from default\)/);
  });

  it('exits 2 with a message naming the setting for a bad value, an unknown flag or a missing value', async () => {
    const bad = await run([], { PORT: 'eighty' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("invalid value for PORT: 'eighty'");
    expect(bad.stderr).not.toMatch(/\bat .*\.js:\d+/); // no stack trace

    const negative = await run(['--turn-timeout-seconds', '-1']);
    expect(negative.code).toBe(2);
    expect(negative.stderr).toContain('--turn-timeout-seconds');

    const unknown = await run(['--prot', '9000']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown option '--prot'");

    const missing = await run(['--port']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("'--port' needs a value");
  });

  it('exits 2 naming every setting a configured bridge lacks', async () => {
    const email = await run([], { JOURNAL_PATH: 'memory', BRIDGE_EMAIL_SMTP_URL: 'smtp://127.0.0.1:9' });
    expect(email.code).toBe(2);
    expect(email.stderr).toContain('needs BRIDGE_EMAIL_ADDRESS');
    expect(email.stderr).toContain('needs BRIDGE_EMAIL_IMAP_URL or BRIDGE_EMAIL_SMTP_LISTEN');

    const sms = await run([], { JOURNAL_PATH: 'memory', BRIDGE_SMS_ACCOUNT_SID: `AC${'0'.repeat(32)}`, BRIDGE_SMS_NUMBERS: '5551234=npc-guard' });
    expect(sms.code).toBe(2);
    expect(sms.stderr).toContain('needs BRIDGE_SMS_AUTH_TOKEN');
    expect(sms.stderr).toContain('needs PUBLIC_URL');
    expect(sms.stderr).toContain("BRIDGE_SMS_NUMBERS: '5551234' is not an E.164 phone number");

    // Keys required: the bridges are clients and need one of their own.
    const keyless = await run([], {
      JOURNAL_PATH: 'memory',
      PORT: '0',
      API_KEYS: 'client-key',
      BRIDGE_EMAIL_SMTP_URL: 'smtp://127.0.0.1:9',
      BRIDGE_EMAIL_ADDRESS: 'npc@game.test',
      BRIDGE_EMAIL_SMTP_LISTEN: `127.0.0.1:${await freePort()}`,
    });
    expect(keyless.code).toBe(2);
    expect(keyless.stderr).toContain('need: BRIDGE_API_KEY');
    const wrongKey = await run([], {
      JOURNAL_PATH: 'memory',
      PORT: '0',
      API_KEYS: 'client-key',
      BRIDGE_API_KEY: 'not-a-key-of-this-service',
      BRIDGE_EMAIL_SMTP_URL: 'smtp://127.0.0.1:9',
      BRIDGE_EMAIL_ADDRESS: 'npc@game.test',
      BRIDGE_EMAIL_SMTP_LISTEN: `127.0.0.1:${await freePort()}`,
    });
    expect(wrongKey.code).toBe(2);
    expect(wrongKey.stderr).toContain('BRIDGE_API_KEY is not a client key this service takes');
    expect(wrongKey.stderr).not.toContain('not-a-key-of-this-service');
    expect(keyless.stderr).not.toMatch(/\bat .*\.js:\d+/);
  });

  it('prints the chart for the visualizer', async () => {
    const { code, stdout } = await run(['chart']);
    expect(code).toBe(0);
    expect(stdout).toContain("import { setup } from 'xstate'");
    expect(stdout).toContain('"AWAITING_PEER"');
  });
});

describe('running the service as a process', () => {
  it('`npm start -- --port N` serves on N; SIGTERM to the group answers a held request 503 and exits within 5 s', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const journal = mkdtempSync(join(tmpdir(), 'cli-journal-'));
    const child = startService('npm', ['start', '--silent', '--', '--port', String(port)], { HANDSHAKE_TIMEOUT_SECONDS: '60', JOURNAL_PATH: journal });
    let log = '';
    const closed = once(child, 'close');
    let errors = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (errors += d.toString()));
    await waitForHealth(url, child).catch((err: Error) => {
      throw new Error(`${err.message}\n${errors}`);
    });

    const held = fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'cli-shutdown', messages: [{ role: 'user', content: 'ping' }] }),
    });
    // Wait until the handshake is held (the session appears waiting for a peer).
    for (const until = Date.now() + 20_000; Date.now() < until; ) {
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      if (models.data.some((m) => m.id === 'cli-shutdown')) break;
      await new Promise((r) => setTimeout(r, 50));
    }

    const t0 = Date.now();
    process.kill(-child.pid!, 'SIGTERM');
    const response = await held;
    expect(response.status).toBe(503);
    const body = (await response.json()) as { error: { code: string } };
    expect(body.error.code).toBe('shutting_down');
    // npm may die of the signal before the service does, and the service shares its stdout pipe:
    // 'close' comes once every process of the group has exited and the log is complete.
    await closed;
    expect(Date.now() - t0).toBeLessThan(5000);

    // One JSON line per request and per session transition, with ids, side and state.
    const lines = log.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    // A newcomer's first question, answered in one line: where it listens and where the console is.
    const listening = lines.filter((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('MotiveProxy listening on'));
    expect(listening).toHaveLength(1);
    expect(listening[0]!['msg']).toBe(`MotiveProxy listening on ${url} — console: ${url}/ — clients: ${url}/v1`);
    expect(listening[0]!['level']).toBe(30);
    expect(listening[0]!['console_url']).toBe(`${url}/`);
    expect(lines.some((l) => l['msg'] === 'session transition' && l['session_id'] === 'cli-shutdown' && l['fact'] === 'SideConnected' && l['state'] === 'AWAITING_PEER' && l['side'] === 'A')).toBe(true);
    expect(lines.some((l) => l['msg'] === 'request' && l['session_id'] === 'cli-shutdown' && l['status'] === 503 && typeof l['request_id'] === 'string')).toBe(true);
  }, 200_000);

  it('on every interface (HOST=0.0.0.0), the listening line says so and gives a loopback URL for the console', async () => {
    const port = await freePort();
    const child = startService(process.execPath, [cli], { HOST: '0.0.0.0', PORT: String(port), JOURNAL_PATH: 'memory', API_KEYS: 'cli-test-key' });
    let log = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    const expected = `MotiveProxy listening on http://0.0.0.0:${port} (every interface) — console: http://127.0.0.1:${port}/ — clients: http://127.0.0.1:${port}/v1`;
    for (const until = Date.now() + 60_000; Date.now() < until && !log.includes(expected); ) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(log).toContain(expected);
    // The URL it gives works: the console page answers there.
    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
  }, 90_000);
});
