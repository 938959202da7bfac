// Managed API keys through a real listening server and the official SDKs: issued by
// /admin/keys, shown once, kept as a digest in a real file beside the journal, recognisable by
// shape and checksum; revoked or expired keys stop at once, rotation keeps the old secret for
// its overlap and the session bound to the key; a tenant's admin manages its own tenant's keys
// only; keys survive a restart; in cluster mode a key made on one instance works on another at
// once, and a revocation reaches every instance within a second.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isManagedKeyShape } from '../../src/auth/keys.js';
import { scopedId } from '../../src/auth/tenants.js';
import { loadConfig, type OptionName } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';
import { killAll, startCluster } from '../cluster/instances.js';
import { apiError, sleep, uniqueId, until } from '../http/support.js';

const ADMIN = 'admin-secret-for-managed-keys';
const asAdmin = { authorization: `Bearer ${ADMIN}` };

const running: Service[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
  killAll();
});
let redis: PrivateRedis | null = null;
afterAll(async () => {
  killAll();
  await redis?.destroy();
});

async function start(settings: Partial<Record<OptionName, string>> = {}): Promise<{ url: string; service: Service }> {
  const { config } = loadConfig(
    { host: '127.0.0.1', port: '0', logLevel: 'silent', journalPath: 'memory', adminApiKey: ADMIN, requireApiKey: 'true', ...settings },
    {},
  );
  const service = await createService(config, createLogger(config));
  running.push(service);
  return { url: service.url, service };
}

async function call(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = asAdmin) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as any };
}

const user = (content: string) => ({ role: 'user' as const, content });
const client = (url: string, apiKey: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });

/** Status of one chat request, held no longer than the handshake timeout the server was started with. */
async function statusWith(url: string, key: string): Promise<number> {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: uniqueId('probe'), messages: [user('hi')] }),
  });
  await response.arrayBuffer();
  return response.status;
}

describe('managed API keys', () => {
  it('issues a key shown once, with a checksum, kept only as a digest; the SDKs talk with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'motive-keys-'));
    const s = await start({ journalPath: dir });
    const made = await call(s.url, 'POST', '/admin/keys', { name: 'guard NPC', tenant: 'studio-a' });
    expect(made.status).toBe(201);
    const secret: string = made.body.key;
    expect(secret).toMatch(/^mp_[0-9A-Za-z]{36}$/);
    expect(isManagedKeyShape(secret)).toBe(true);
    expect(isManagedKeyShape(`${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`)).toBe(false);
    expect(made.body).toMatchObject({ object: 'api_key', name: 'guard NPC', tenant: 'studio-a', scopes: ['client'], status: 'active', created_by: 'admin key' });
    const other = (await call(s.url, 'POST', '/admin/keys', { name: 'player' })).body.key as string;

    // A key of studio-a and a key of the default tenant name the same session, and do not meet.
    const model = uniqueId('guard');
    const peer = (await call(s.url, 'POST', '/admin/keys', { name: 'player', tenant: 'studio-a' })).body.key as string;
    const a = client(s.url, secret).chat.completions.create({ model, messages: [user('Halt!')] });
    await until(() => s.service.ctx.sessions.get(scopedId('studio-a', model))?.state === 'AWAITING_PEER', 'A is held');
    const elsewhere = client(s.url, other).chat.completions.create({ model, messages: [user('Who?')] });
    elsewhere.catch(() => undefined);
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', "the default tenant's session of that name");
    const b = client(s.url, peer).chat.completions.create({ model, messages: [user('Friend.')] });
    expect((await a).choices[0]!.message.content).toBe('Friend.');
    b.catch(() => undefined);

    // Listed and read without any secret or digest; the file beside the journal has the digest only.
    const listed = await call(s.url, 'GET', '/admin/keys');
    expect(listed.body.data).toHaveLength(3);
    const text = JSON.stringify(listed.body) + JSON.stringify((await call(s.url, 'GET', `/admin/keys/${made.body.id}`)).body);
    expect(text).not.toContain(secret);
    expect(text).not.toContain('digest');
    const stored = readFileSync(join(dir, 'keys.jsonl'), 'utf8');
    expect(stored).not.toContain(secret);
    expect(stored).toContain(made.body.secrets[0].hint.replace('…', ''));
    // A mistyped key is told apart from a stranger's.
    expect((await apiError(client(s.url, `${secret.slice(0, -1)}x`).models.list())).message).toMatch(/checksum/);
  });

  it('stops a revoked key at once, and an expired one when it expires', async () => {
    const s = await start({ handshakeTimeoutSeconds: '0.2' });
    const made = await call(s.url, 'POST', '/admin/keys', { name: 'short-lived', expires_in_seconds: 1 });
    const revoked = await call(s.url, 'POST', '/admin/keys', { name: 'revoked' });
    expect(await statusWith(s.url, revoked.body.key)).toBe(408);
    const gone = await call(s.url, 'DELETE', `/admin/keys/${revoked.body.id}`);
    expect(gone.body).toMatchObject({ status: 'revoked' });
    expect(gone.body.revoked_at).toBeTruthy();
    const refused = await apiError(client(s.url, revoked.body.key).models.list());
    expect(refused.status).toBe(401);
    expect(refused.message).toMatch(/revoked/);

    expect(await statusWith(s.url, made.body.key)).toBe(408);
    await sleep(1_100);
    const expired = await apiError(client(s.url, made.body.key).models.list());
    expect(expired.status).toBe(401);
    expect(expired.message).toMatch(/expired/);
    expect((await call(s.url, 'GET', '/admin/keys?status=expired')).body.data.map((k: { id: string }) => k.id)).toEqual([made.body.id]);
    // Neither can be rotated back to life.
    expect((await call(s.url, 'POST', `/admin/keys/${revoked.body.id}/rotate`, {})).status).toBe(409);
  });

  it('rotates with an overlap: both secrets work until it ends, and the session bound to the key stays its', async () => {
    const s = await start();
    const made = await call(s.url, 'POST', '/admin/keys', { name: 'rotating' });
    const peer = (await call(s.url, 'POST', '/admin/keys', { name: 'peer' })).body.key as string;
    const model = uniqueId('rotate');
    const a = client(s.url, made.body.key).chat.completions.create({ model, messages: [user('one')] });
    await until(() => s.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b = client(s.url, peer).chat.completions.create({ model, messages: [user('two')] });
    expect((await a).choices[0]!.message.content).toBe('two');

    const rotated = await call(s.url, 'POST', `/admin/keys/${made.body.id}/rotate`, { overlap_seconds: 1 });
    expect(rotated.status).toBe(200);
    expect(rotated.body.key).not.toBe(made.body.key);
    expect(rotated.body.secrets).toHaveLength(2);
    // The new secret speaks for side A of the session the old one joined.
    const next = client(s.url, rotated.body.key).chat.completions.create({ model, messages: [user('one'), { role: 'assistant', content: 'two' }, user('three')] });
    expect((await b).choices[0]!.message.content).toBe('three');
    next.catch(() => undefined);
    expect((await client(s.url, made.body.key).models.list()).data).toBeDefined();
    await sleep(1_100);
    const retired = await apiError(client(s.url, made.body.key).models.list());
    expect(retired.status).toBe(401);
    expect(retired.message).toMatch(/rotated/);
    expect((await client(s.url, rotated.body.key).models.list()).data).toBeDefined();
  });

  it('closes an open WebSocket side at its next message once its key is revoked', async () => {
    const s = await start();
    const made = await call(s.url, 'POST', '/admin/keys', { name: 'socket' });
    const { default: WebSocket } = await import('ws');
    const socket = new WebSocket(`${s.url.replace('http', 'ws')}/v1/realtime?session=${uniqueId('ws')}&side=A`, { headers: { authorization: `Bearer ${made.body.key}` } });
    const frames: any[] = [];
    socket.on('message', (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => (socket.once('open', resolve), socket.once('error', reject)));
    socket.send(JSON.stringify({ type: 'message', content: 'before', id: 'm1' }));
    await until(() => frames.some((f) => f.type === 'accepted' && f.id === 'm1'), 'the first message is taken');
    await call(s.url, 'DELETE', `/admin/keys/${made.body.id}`);
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    socket.send(JSON.stringify({ type: 'message', content: 'after', id: 'm2' }));
    expect(await closed).toBe(1008);
    expect(frames.find((f) => f.id === 'm2')).toMatchObject({ type: 'error', code: 'invalid_api_key', message: 'The API key has been revoked.' });
  });

  it('keeps keys through a restart, revocations included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'motive-keys-'));
    const first = await start({ journalPath: dir });
    const kept = await call(first.url, 'POST', '/admin/keys', { name: 'kept' });
    const dropped = await call(first.url, 'POST', '/admin/keys', { name: 'dropped' });
    await call(first.url, 'DELETE', `/admin/keys/${dropped.body.id}`);
    await running.pop()!.shutdown();
    const second = await start({ journalPath: dir });
    expect((await client(second.url, kept.body.key).models.list()).data).toBeDefined();
    expect((await apiError(client(second.url, dropped.body.key).models.list())).message).toMatch(/revoked/);
    expect((await call(second.url, 'GET', '/admin/keys')).body.data).toHaveLength(2);
  });

  it('lets a tenant admin manage its own tenant only, and refuses bad requests clearly', async () => {
    const s = await start();
    const tenantAdmin = (await call(s.url, 'POST', '/admin/keys', { name: 'studio-a admin', tenant: 'studio-a', scopes: ['admin'] })).body.key as string;
    const theirs = await call(s.url, 'POST', '/admin/keys', { name: 'studio-b npc', tenant: 'studio-b' });
    const as = { authorization: `Bearer ${tenantAdmin}` };
    const own = await call(s.url, 'POST', '/admin/keys', { name: 'studio-a npc' }, as);
    expect(own.status).toBe(201);
    expect(own.body.tenant).toBe('studio-a');
    expect(own.body.created_by).toMatch(/^studio-a admin \(key_[A-Za-z0-9_-]{12}\)$/);
    expect((await call(s.url, 'POST', '/admin/keys', { name: 'x', tenant: 'studio-b' }, as)).status).toBe(403);
    expect((await call(s.url, 'POST', '/admin/keys', { name: 'x', scopes: ['global:admin'] }, as)).status).toBe(403);
    const listed = await call(s.url, 'GET', '/admin/keys', undefined, as);
    expect(listed.body.data.every((k: { tenant: string }) => k.tenant === 'studio-a')).toBe(true);
    expect((await call(s.url, 'DELETE', `/admin/keys/${theirs.body.id}`, undefined, as)).status).toBe(404);
    // A key of its own tenant with a role over every tenant is not the tenant admin's to see or
    // rotate: the new secret would make it a global admin.
    const mighty = await call(s.url, 'POST', '/admin/keys', { name: 'ops', tenant: 'studio-a', scopes: ['global:admin'] });
    expect((await call(s.url, 'GET', '/admin/keys', undefined, as)).body.data.map((k: { id: string }) => k.id)).not.toContain(mighty.body.id);
    expect((await call(s.url, 'POST', `/admin/keys/${mighty.body.id}/rotate`, { overlap_seconds: 0 }, as)).status).toBe(404);
    expect((await call(s.url, 'DELETE', `/admin/keys/${mighty.body.id}`, undefined, as)).status).toBe(404);
    expect((await call(s.url, 'GET', `/admin/keys/${theirs.body.id}`)).body.status).toBe('active');
    // A tenant's admin does not reach the session routes, which are not yet split by tenant.
    expect((await call(s.url, 'GET', '/admin/sessions', undefined, as)).status).toBe(200); // masked list, as for any client
    expect((await call(s.url, 'GET', '/admin/health', undefined, as)).status).toBe(403);
    // An admin-only key cannot chat; a plain client key cannot administer.
    expect((await apiError(client(s.url, tenantAdmin).models.list())).message).toMatch(/no 'client' scope/);
    expect((await call(s.url, 'GET', '/admin/keys', undefined, { authorization: `Bearer ${own.body.key}` })).status).toBe(401);

    for (const [body, param] of [
      [{}, 'name'],
      [{ name: 'x', tenant: 'has space' }, 'tenant'],
      [{ name: 'x', scopes: ['root'] }, 'scopes.0'],
      [{ name: 'x', colour: 'red' }, null],
      [{ name: 'x', expires_at: '2001-01-01T00:00:00Z' }, 'expires_at'],
      [{ name: 'x', limits: { requests_per_minute: -1 } }, 'limits.requests_per_minute'],
    ] as const) {
      const bad = await call(s.url, 'POST', '/admin/keys', body);
      expect(bad.status, JSON.stringify(body)).toBe(422);
      expect(bad.body.error.code).toBe('invalid_request');
      expect(bad.body.error.param).toBe(param);
    }
    expect((await call(s.url, 'POST', '/admin/keys/key_nope/rotate', {})).status).toBe(404);
    expect((await call(s.url, 'PUT', '/admin/keys')).status).toBe(405);
    expect((await call(s.url, 'GET', '/admin/keys', undefined, {})).status).toBe(401);
  });

  it('warns when keys are issued on a service that does not require them', async () => {
    const s = await start({ requireApiKey: 'false' });
    const made = await call(s.url, 'POST', '/admin/keys', { name: 'open' });
    expect(made.body.warning).toMatch(/REQUIRE_API_KEY/);
    expect(made.body.warning_durability).toMatch(/JOURNAL_PATH=memory/);
  });

  it('in cluster mode, a key made on one instance works on the others, and a revocation reaches them within a second', async () => {
    redis ??= await startRedis();
    const [one, two] = await startCluster(redis.url, 2, { ADMIN_API_KEY: ADMIN, REQUIRE_API_KEY: 'true', HANDSHAKE_TIMEOUT_SECONDS: '0.2' });
    const made = await call(one!.url, 'POST', '/admin/keys', { name: 'shared' });
    expect(made.status).toBe(201);
    expect(await statusWith(two!.url, made.body.key)).toBe(408);
    const revokedAt = Date.now();
    expect((await call(two!.url, 'DELETE', `/admin/keys/${made.body.id}`)).status).toBe(200);
    let refused = 0;
    while (Date.now() - revokedAt < 1_000) {
      refused = await statusWith(one!.url, made.body.key);
      if (refused === 401) break;
      await sleep(20);
    }
    expect(refused).toBe(401);
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
  }, 40_000);
});
