// JWT bearer tokens through a real listening server, issued by a real OpenID provider (the
// oidc-provider package, found by discovery): clients of two SDKs talk with their tokens and
// their sides are bound to the tokens' subjects; forged, expired, misaddressed and foreign
// tokens are refused with 401 and a reason that names the rule, never a key; an unreachable
// issuer is a 503 the SDKs retry; a key id the service has not seen fetches the key set again.
import Anthropic from '@anthropic-ai/sdk';
import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey as JoseCryptoKey, type JWK } from 'jose';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type OptionName } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { scopedId } from '../../src/auth/tenants.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { apiError, sleep, uniqueId, until } from '../http/support.js';
import { AUDIENCE, startProvider, type StartedProvider } from '../helpers/oidc.js';

const GAME_A = { id: 'game-a', secret: 'secret-a-0123456789abcdef0123456789abcdef', claims: { tenant: 'studio-a' } };
const GAME_B = { id: 'game-b', secret: 'secret-b-0123456789abcdef0123456789abcdef', claims: { tenant: 'studio-a' } };
const STRANGER = { id: 'stranger', secret: 'secret-s-0123456789abcdef0123456789abcdef', claims: { tenant: 'studio-a' } };
const WATCHER = { id: 'watcher', secret: 'secret-w-0123456789abcdef0123456789abcdef', claims: { roles: ['global:viewer'] } };
const ADMIN = 'admin-secret-for-jwt-tests';

let provider: StartedProvider;
let other: StartedProvider;
beforeAll(async () => {
  provider = await startProvider([GAME_A, GAME_B, STRANGER, WATCHER]);
  // A second, unrelated provider: its tokens must mean nothing here.
  other = await startProvider([GAME_A]);
});
afterAll(async () => {
  await provider?.close();
  await other?.close();
});

const running: Service[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
});

async function start(settings: Partial<Record<OptionName, string>> = {}): Promise<{ url: string; service: Service; log: string[] }> {
  const { config } = loadConfig(
    { host: '127.0.0.1', port: '0', logLevel: 'info', logFormat: 'json', journalPath: 'memory', oidcIssuer: provider.issuer, jwtAudience: AUDIENCE, ...settings },
    {},
  );
  const log: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      log.push(chunk.toString());
      done();
    },
  });
  const service = await createService(config, createLogger(config, sink));
  running.push(service);
  return { url: service.url, service, log };
}

const user = (content: string) => ({ role: 'user' as const, content });

async function chat(url: string, token: string, model = uniqueId('jwt')) {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ model, messages: [user('hi')] }),
    signal: AbortSignal.timeout(5_000),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as any };
}

/** A token signed with the provider's own key, with whatever claims a test needs. */
async function forged(claims: Record<string, unknown>, header: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: provider.issuer, aud: AUDIENCE, sub: 'game-a', iat: now, exp: now + 300, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: provider.privateJwk.kid, ...header })
    .sign(provider.privateKey);
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('JWT bearer tokens from an OpenID provider', () => {
  it('lets two SDK clients talk with their tokens, and binds each side to its subject', async () => {
    const s = await start();
    const model = uniqueId('npc');
    const a = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: await provider.token(GAME_A), maxRetries: 0 });
    const b = new Anthropic({ baseURL: s.url, apiKey: await provider.token(GAME_B), maxRetries: 0 });

    const handshake = a.chat.completions.create({ model, messages: [user('Halt! Who goes there?')] });
    await until(() => s.service.ctx.sessions.get(scopedId('studio-a', model))?.state === 'AWAITING_PEER', 'A is held');
    const reply = b.messages.create({ model, max_tokens: 100, messages: [user('A traveller.')] });
    expect((await handshake).choices[0]!.message.content).toBe('A traveller.');
    const next = a.chat.completions.create({ model, messages: [user('Halt! Who goes there?'), { role: 'assistant', content: 'A traveller.' }, user('Pass, then.')] });
    const answered = await reply;
    expect(answered.content[0]).toMatchObject({ type: 'text', text: 'Pass, then.' });
    next.catch(() => undefined);

    // Both sides are bound: a third subject, with a perfectly valid token, may not join.
    const stranger = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: await provider.token(STRANGER), maxRetries: 0 });
    const refused = await apiError(stranger.chat.completions.create({ model, messages: [user('let me in')] }));
    expect(refused.status).toBe(403);
    expect((refused.error as { code?: string }).code).toBe('session_forbidden');

    // A fresh token for the same subject (a refreshed one) still speaks for its side.
    const refreshed = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: await provider.token(GAME_A), maxRetries: 0 });
    const retry = refreshed.chat.completions.create({ model, messages: [user('Halt! Who goes there?'), { role: 'assistant', content: 'A traveller.' }, user('Pass, then.')] });
    await until(() => s.service.ctx.sessions.get(scopedId('studio-a', model))?.context.sides.A.held !== null, 'the refreshed token re-attaches to side A');
    retry.catch(() => undefined);
    // The token never reaches the log; its subject's fingerprint does not either.
    expect(s.log.join('')).not.toContain(GAME_A.secret);
    expect(s.log.join('')).not.toMatch(/eyJ[A-Za-z0-9_-]{20,}/);
  });

  it('refuses forged, expired, misaddressed and foreign tokens with 401 and a reason that names the rule', async () => {
    const s = await start({ handshakeTimeoutSeconds: '0.3' });
    const now = Math.floor(Date.now() / 1000);
    const publicPem = await exportSPKI((await import('node:crypto')).createPublicKey({ key: provider.publicJwk as never, format: 'jwk' }) as never).catch(() => '');
    const confusion = await new SignJWT({ iss: provider.issuer, aud: AUDIENCE, sub: 'game-a', exp: now + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: provider.privateJwk.kid })
      .sign(new TextEncoder().encode(publicPem || JSON.stringify(provider.publicJwk)));
    const cases: Array<[string, string, RegExp]> = [
      ['expired', await forged({ exp: now - 120 }), /expired/],
      ['another audience', await forged({ aud: 'https://someone-else.test' }), /audience/],
      ['another issuer', await forged({ iss: 'https://evil.test' }), /another issuer/],
      ['not valid yet', await forged({ nbf: now + 600 }), /not valid yet/],
      ['no exp', await new SignJWT({ iss: provider.issuer, aud: AUDIENCE, sub: 'game-a' }).setProtectedHeader({ alg: 'RS256', kid: provider.privateJwk.kid }).sign(provider.privateKey), /exp/],
      ['second provider', await other.token(GAME_A), /key the issuer does not publish/],
      ['alg none', `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ iss: provider.issuer, aud: AUDIENCE, sub: 'game-a', exp: now + 300 })}.`, /alg: none/],
      ['HS256 with the public key', confusion, /HS256 are refused|public-key/],
      ['bad signature', (await forged({})).replace(/.{8}$/, 'AAAAAAAA'), /signature/],
    ];
    for (const [what, token, reason] of cases) {
      const refused = await chat(s.url, token);
      expect(refused.status, what).toBe(401);
      expect(refused.body.error.code, what).toBe('invalid_api_key');
      expect(refused.body.error.message, what).toMatch(reason);
      expect(refused.headers.get('x-should-retry'), what).toBe('false');
      // Nothing about the configured issuer, audience or keys.
      expect(refused.body.error.message, what).not.toContain(AUDIENCE);
      expect(refused.body.error.message, what).not.toContain(provider.privateJwk.kid);
    }
    // The clock skew: a token expired 10 s ago is still taken (JWT_CLOCK_SKEW_SECONDS=30).
    expect((await chat(s.url, await forged({ exp: now - 10 }), uniqueId('skew'))).status).toBe(408);
    // In the Anthropic route's own shape too.
    const anthropic = await fetch(`${s.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': await forged({ exp: now - 120 }) },
      body: JSON.stringify({ model: 'm', max_tokens: 5, messages: [user('hi')] }),
    });
    expect(anthropic.status).toBe(401);
    expect(await anthropic.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error', message: 'The bearer token has expired.' } });
    expect(s.service.ctx.sessions.size).toBeLessThanOrEqual(1);
  });

  it('answers 503 with Retry-After, which the SDKs retry, while the issuer cannot be reached', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const s = await start({ oidcIssuer: `http://127.0.0.1:${port}` });
    const token = await forged({});
    const answer = await chat(s.url, token);
    expect(answer.status).toBe(503);
    expect(answer.body.error.code).toBe('auth_unavailable');
    expect(answer.headers.get('retry-after')).toBe('5');
    expect(answer.headers.get('x-should-retry')).toBeNull();
  });

  it('answers 503, not 401, while the key set answers an error, and static keys keep working', async () => {
    const down: Server = createServer((_req, res) => res.writeHead(503).end('maintenance'));
    await new Promise<void>((resolve) => down.listen(0, '127.0.0.1', resolve));
    try {
      const s = await start({ oidcIssuer: '', jwksUrl: `http://127.0.0.1:${(down.address() as { port: number }).port}/keys`, jwtIssuer: provider.issuer, apiKeys: 'sk-static-still-works', failedKeysPerMinute: '2', handshakeTimeoutSeconds: '0.2' });
      for (let i = 0; i < 4; i++) {
        const answer = await chat(s.url, await forged({}));
        expect(answer.status).toBe(503);
        expect(answer.body.error.code).toBe('auth_unavailable');
      }
      // Not counted as failed keys: the address is not locked out.
      expect((await chat(s.url, 'sk-static-still-works')).status).toBe(408);
    } finally {
      down.closeAllConnections();
      await new Promise<void>((resolve) => down.close(() => resolve()));
    }
  });

  it('gives a token without the tenant claim its global: roles only', async () => {
    const s = await start({ adminApiKey: ADMIN });
    const plainAdmin = await forged({ sub: 'someone', roles: ['admin', 'operator'] });
    expect((await fetch(`${s.url}/admin/sessions`, { headers: { authorization: `Bearer ${plainAdmin}` } })).status).toBe(200); // the masked list of a client
    expect((await fetch(`${s.url}/admin/keys`, { headers: { authorization: `Bearer ${plainAdmin}` } })).status).toBe(401);
    const tenantAdmin = await forged({ sub: 'someone-else', tenant: 'studio-a', roles: ['admin'] });
    expect((await fetch(`${s.url}/admin/keys`, { headers: { authorization: `Bearer ${tenantAdmin}` } })).status).toBe(200);
  });

  it('with JWKS_URL, fetches the key set again when a token names a key id it has not seen', async () => {
    const first = await generateKeyPair('ES256', { extractable: true });
    const second = await generateKeyPair('ES256', { extractable: true });
    const keys: JWK[] = [{ ...(await exportJWK(first.publicKey)), kid: 'one', alg: 'ES256' }];
    let fetches = 0;
    const jwks: Server = createServer((_req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    try {
      const s = await start({ oidcIssuer: '', jwksUrl: `http://127.0.0.1:${(jwks.address() as { port: number }).port}/keys`, jwtIssuer: 'https://idp.test', handshakeTimeoutSeconds: '0.3' });
      const sign = (key: JoseCryptoKey, kid: string) =>
        new SignJWT({ iss: 'https://idp.test', aud: AUDIENCE, sub: `user-${kid}`, exp: Math.floor(Date.now() / 1000) + 300 })
          .setProtectedHeader({ alg: 'ES256', kid })
          .sign(key);
      expect((await chat(s.url, await sign(first.privateKey, 'one'))).status).toBe(408); // taken, and held until the handshake timeout
      expect(fetches).toBe(1);
      // The issuer rotates in a new key; tokens signed with it are taken once the set is fetched again.
      keys.push({ ...(await exportJWK(second.publicKey)), kid: 'two', alg: 'ES256' });
      await sleep(5_100); // the key set is fetched again at most once in 5 s
      expect((await chat(s.url, await sign(second.privateKey, 'two'))).status).toBe(408);
      expect(fetches).toBe(2);
    } finally {
      jwks.closeAllConnections();
      await new Promise<void>((resolve) => jwks.close(() => resolve()));
    }
  }, 20_000);

  it('maps roles to admin rights: a global viewer reads the sessions, and may not end them', async () => {
    const s = await start({ adminApiKey: ADMIN });
    const model = uniqueId('watched');
    const pending = chat(s.url, await provider.token(GAME_A), model);
    await until(() => s.service.ctx.sessions.get(scopedId('studio-a', model)) !== undefined, 'the session exists');
    const viewer = { authorization: `Bearer ${await provider.token(WATCHER)}` };
    const list = await fetch(`${s.url}/admin/sessions`, { headers: viewer });
    expect(list.status).toBe(200);
    const body = (await list.json()) as { ids_masked: boolean; data: Array<{ id: string }> };
    expect(body.ids_masked).toBe(false);
    expect(body.data.map((d) => d.id)).toContain(model);
    const end = await fetch(`${s.url}/admin/sessions/${model}?tenant=studio-a`, { method: 'DELETE', headers: viewer });
    expect(end.status).toBe(403);
    expect(((await end.json()) as any).error.message).toMatch(/operator role; this credential has the global viewer role/);
    // A client's token without a role sees the list with the ids masked.
    const client = await fetch(`${s.url}/admin/sessions`, { headers: { authorization: `Bearer ${await provider.token(GAME_B)}` } });
    expect(((await client.json()) as { ids_masked: boolean }).ids_masked).toBe(true);
    const ended = await fetch(`${s.url}/admin/sessions/${model}?tenant=studio-a`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(ended.status).toBe(200);
    expect((await pending).status).toBe(410);
  });

  it('refuses settings that would accept tokens meant for other applications', () => {
    const load = (settings: Partial<Record<OptionName, string>>) => () => loadConfig({ port: '0', ...settings }, {});
    expect(load({ oidcIssuer: 'https://idp.test' })).toThrow(ConfigError);
    expect(load({ oidcIssuer: 'https://idp.test' })).toThrow(/JWT_AUDIENCE is required/);
    expect(load({ jwksUrl: 'https://idp.test/keys', jwtAudience: 'x' })).toThrow(/JWT_ISSUER is required/);
    expect(load({ jwksUrl: 'https://idp.test/keys', oidcIssuer: 'https://idp.test', jwtAudience: 'x' })).toThrow(/not both/);
    expect(load({ oidcIssuer: 'https://idp.test', jwtAudience: 'x' })()).toBeTruthy();
    // Console sign-in: where people come back to is required; alone, it needs no audience (it takes no bearer tokens).
    expect(load({ oidcIssuer: 'https://idp.test', oidcClientId: 'console' })).toThrow(/needs PUBLIC_URL/);
    expect(load({ oidcClientId: 'console', publicUrl: 'https://proxy.test' })).toThrow(/needs OIDC_ISSUER/);
    expect(load({ oidcIssuer: 'https://idp.test', oidcClientId: 'console', publicUrl: 'https://proxy.test' })()).toBeTruthy();
  });
});
