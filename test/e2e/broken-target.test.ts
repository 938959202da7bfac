/**
 * `motive-proxy e2e --url` against a target that is plainly broken fails within seconds, with a
 * message that names the problem, instead of waiting out its 300 s scenario timeout: nothing
 * listening, a server answering 500 to everything, a server that accepts connections and never
 * answers, and one that passes the preflight but drops every chat request (the scenario's
 * sides then give up early).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunReport } from '../../src/e2e/types.js';
import { freePort } from '../helpers/net.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

const servers: Array<{ server: Server; sockets: Set<Socket> }> = [];
const children: ChildProcess[] = [];
const outputs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(-child.pid, 'SIGKILL');
  }
  for (const { server, sockets } of servers.splice(0)) {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  for (const dir of outputs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A plain node:http server on a free loopback port. */
async function serve(handler: (req: import('node:http').IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  servers.push({ server, sockets });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
  report: RunReport | null;
}

async function e2e(url: string, scenario = 'multi-turn'): Promise<Run> {
  const out = mkdtempSync(join(tmpdir(), 'e2e-broken-'));
  outputs.push(out);
  const t0 = Date.now();
  const child = spawn(process.execPath, [cli, 'e2e', '--url', url, '--scenario', scenario, '--concurrent', '2', '--turns', '2', '--quiet', '--output', out], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  const path = join(out, 'report.json');
  return { code, stdout, stderr, seconds: (Date.now() - t0) / 1000, report: existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as RunReport) : null };
}

describe('motive-proxy e2e --url against a broken target', () => {
  it('nothing listening: refused at once, naming the refused connection', { timeout: 30_000 }, async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const run = await e2e(url);
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.seconds).toBeLessThan(10);
    expect(run.stderr).toContain(`${url} cannot be used: GET /health: connection refused: nothing listens on 127.0.0.1:`);
    expect(run.stderr).toContain('Is the proxy running');
  });

  it('a server answering 500 to everything: refused at once, naming both answers', { timeout: 30_000 }, async () => {
    const url = await serve((_req, res) => {
      res.statusCode = 500;
      res.end('internal error');
    });
    const run = await e2e(url);
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.seconds).toBeLessThan(10);
    expect(run.stderr).toContain(`${url} does not answer as a MotiveProxy: GET /health answered 500; GET /v1/models answered 500.`);
  });

  it('a server that accepts connections and never answers: refused after the preflight timeout', { timeout: 30_000 }, async () => {
    const url = await serve(() => {
      // never answers
    });
    const run = await e2e(url);
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.seconds).toBeLessThan(10);
    expect(run.stderr).toContain(`${url} cannot be used: GET /health: no answer within 4 s`);
  });

  /** Answers the preflight as a MotiveProxy would, and cuts every other request off unanswered. */
  const dropsChats = () =>
    serve((req, res) => {
      if (req.method === 'GET' && req.url === '/health') return void res.end(JSON.stringify({ status: 'ok' }));
      if (req.method === 'GET' && req.url === '/v1/models') return void res.end(JSON.stringify({ object: 'list', data: [] }));
      req.socket.destroy();
    });

  it('a server that answers the preflight but drops every chat request: the sides give up early', { timeout: 60_000 }, async () => {
    const url = await dropsChats();
    const run = await e2e(url);
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.seconds).toBeLessThan(20);
    expect(run.stdout).toMatch(/^multi-turn\s+FAIL\s+0\/2/m);
    const reasons = run.report!.scenarios[0]!.reasons;
    // Side A's handshake never got an answer; side B, waiting for A to be listed, is told.
    expect(reasons.some((r) => /side A failed at message 1: .*Connection error.*\/v1\/chat\/completions: fetch failed/.test(r)), reasons.join('\n')).toBe(true);
    expect(reasons.some((r) => r.includes('side B failed at message 1: peer_failed: the other side failed and ended before this session was listed')), reasons.join('\n')).toBe(true);
  });

  it('where applications call again for a minute (load), a side none of whose requests was ever answered gives up after 10 s', { timeout: 60_000 }, async () => {
    const url = await dropsChats();
    const run = await e2e(url, 'load');
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.seconds).toBeLessThan(25);
    const reasons = run.report!.scenarios[0]!.reasons;
    expect(reasons.some((r) => /side A failed at message 1: unreachable: the service at \S+ never answered this side \(no answer for 1\d s\)/.test(r)), reasons.join('\n')).toBe(true);
  });
});
