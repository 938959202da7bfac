/**
 * `motive-proxy e2e --url` against a target that is plainly broken fails within seconds, with a
 * message that names the problem, instead of waiting out its 300 s scenario timeout: nothing
 * listening, a server answering 500 to everything, a server that accepts connections and never
 * answers, and one that passes the preflight but drops every chat request (the scenario's
 * sides then give up early).
 */
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { useE2eProcesses, type E2eRun } from './process.js';


const servers: Array<{ server: Server; sockets: Set<Socket> }> = [];

afterEach(async () => {
  for (const { server, sockets } of servers.splice(0)) {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
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

const run = useE2eProcesses();
const e2e = (url: string, scenario = 'multi-turn'): Promise<E2eRun> => run(['--url', url, '--scenario', scenario, '--concurrent', '2', '--turns', '2', '--quiet']);

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
