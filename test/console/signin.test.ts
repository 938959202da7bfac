// Console sign-in with OpenID Connect in headless Chromium: a real provider (oidc-provider, its
// own login and consent pages), the authorization code flow with PKCE, a session cookie; the
// signed-in person sees only their tenant's sessions and keys, their name, tenant and roles in
// the bar, and signs out; a forged callback is refused and said so; sign-ins are audited.
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { launchBrowser, startTestServer, type Browser, type TestServer } from './support.js';

const ADMIN = 'admin-secret-for-sign-in';
const CLIENT = { id: 'motive-console', secret: 'console-secret-0123456789abcdef0123456789' };
const LONG = 120_000;
/** Who may sign in at the test provider, and what their ID tokens say. */
const PEOPLE: Record<string, { tenant?: string; roles: string[] }> = {
  alice: { tenant: 'studio-a', roles: ['admin'] },
};

let idp: Server;
let issuer: string;
let server: TestServer;
let browser: Browser;
let page: Page;

async function startIdp(redirectUri: string): Promise<void> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  idp = createServer();
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(idp.address() as { port: number }).port}`;
  const provider = new Provider(issuer, {
    clients: [{ client_id: CLIENT.id, client_secret: CLIENT.secret, redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'] }],
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'signin-key', alg: 'RS256', use: 'sig' }] },
    claims: { openid: ['sub'], profile: ['tenant', 'roles'] },
    conformIdTokenClaims: false,
    findAccount: async (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: async () => ({ sub: id, ...(PEOPLE[id] ?? { roles: [] }) }),
    }),
    features: { devInteractions: { enabled: true } },
    ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 600, AccessToken: 600, AuthorizationCode: 60 },
  } as never);
  idp.on('request', provider.callback());
}

beforeAll(async () => {
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  await startIdp(`${publicUrl}/console/callback`);
  server = await startTestServer({
    port: String(port),
    adminApiKey: ADMIN,
    requireApiKey: 'true',
    oidcIssuer: issuer,
    oidcClientId: CLIENT.id,
    oidcClientSecret: CLIENT.secret,
    publicUrl,
    handshakeTimeoutSeconds: '60',
  });
  browser = await launchBrowser();
  page = await browser.page();
}, LONG);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  idp?.closeAllConnections();
  await new Promise<void>((resolve) => idp?.close(() => resolve()));
}, LONG);

const admin = (path: string, init: RequestInit = {}) => fetch(`${server.url}${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });

async function keyOf(tenant: string, name: string): Promise<string> {
  const made = await admin('/admin/keys', { method: 'POST', body: JSON.stringify({ name, tenant }) });
  return ((await made.json()) as { key: string }).key;
}

/** A client of `tenant` waiting in session `model` (its handshake held). */
async function waitIn(tenant: string, model: string): Promise<void> {
  const key = await keyOf(tenant, `${tenant} client`);
  void fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello' }] }),
  }).catch(() => undefined);
}

describe('console sign-in with OpenID Connect', () => {
  it(
    'signs a person in with the code flow and PKCE, and shows them only what their tenant and roles allow',
    async () => {
      await waitIn('studio-a', 'gate-a');
      await waitIn('studio-b', 'gate-b');
      await page.goto(`${server.url}/`);
      await page.locator('#signin-offer').click();
      // The provider's own login and consent pages.
      await page.locator('input[name="login"]').fill('alice');
      await page.locator('input[name="password"]').fill('any password');
      await page.locator('button[type="submit"]').click();
      await page.locator('button[type="submit"]', { hasText: /continue/i }).click();
      // Back in the console, signed in.
      await page.locator('#whoami:not([hidden])').waitFor();
      expect(await page.locator('#whoami-text').innerText()).toBe('alice · studio-a · admin');
      const cookies = await browser.context.cookies(server.url);
      const session = cookies.find((c) => c.name === 'motive_console');
      expect(session).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/' });
      expect(cookies.some((c) => c.name === 'motive_console_login')).toBe(false);

      // The sessions of studio-a only.
      await page.locator('#feed-status[data-state="live"]').waitFor();
      await page.locator('#sessions-body tr', { hasText: 'studio-a/gate-a' }).waitFor();
      expect(await page.locator('#sessions-body').innerText()).not.toContain('gate-b');
      // The keys of studio-a only, through the admin routes with the cookie alone.
      await page.goto(`${server.url}/#/keys`);
      await page.locator('#keys-body tr').first().waitFor();
      const tenants = await page.locator('#keys-body td[data-label="Tenant"]').allInnerTexts();
      expect(tenants.length).toBeGreaterThan(0);
      expect(new Set(tenants)).toEqual(new Set(['studio-a']));

      // Opening a transcript in the page is recorded as a read, by this person.
      await page.goto(`${server.url}/#/s/${encodeURIComponent('studio-a\u001fgate-a')}`);
      await page.locator('#transcript li').first().waitFor();
      const reads = (await (await admin('/admin/audit?action=transcript.read')).json()) as { data: Array<{ actor: { subject: string }; target: { id: string }; tenant: string; details: { via: string } }> };
      expect(reads.data).toContainEqual(expect.objectContaining({ actor: expect.objectContaining({ subject: 'alice' }), tenant: 'studio-a', target: { type: 'session', id: 'gate-a' }, details: { via: 'console' } }));

      // A request with the cookie from another origin is refused.
      const cookie = `motive_console=${session!.value}`;
      const crossSite = await fetch(`${server.url}/admin/keys`, { method: 'POST', headers: { cookie, origin: 'https://evil.example', 'content-type': 'application/json' }, body: '{"name":"x"}' });
      expect(crossSite.status).toBe(403);
      const sameSite = await fetch(`${server.url}/admin/keys`, { headers: { cookie } });
      expect(sameSite.status).toBe(200);

      // Audited, then signed out: the cookie is gone and means nothing any more.
      const audit = (await (await admin('/admin/audit?action=signin')).json()) as { data: Array<{ action: string; actor: { subject: string; tenant: string } }> };
      expect(audit.data).toContainEqual(expect.objectContaining({ action: 'signin.ok', actor: expect.objectContaining({ subject: 'alice', tenant: 'studio-a' }) }));
      await page.locator('#signout').click();
      await page.locator('#signin-offer:not([hidden])').waitFor();
      expect((await browser.context.cookies(server.url)).some((c) => c.name === 'motive_console')).toBe(false);
      expect((await fetch(`${server.url}/admin/keys`, { headers: { cookie } })).status).toBe(401);
    },
    LONG,
  );

  it(
    'refuses a callback no sign-in started, says so, and audits it',
    async () => {
      await page.goto(`${server.url}/console/callback?code=forged&state=forged`);
      await page.locator('#signin-view:not([hidden])').waitFor();
      expect(await page.locator('#signin-error').innerText()).toMatch(/Sign-in failed: no sign-in was started in this browser/);
      const audit = (await (await admin('/admin/audit?action=signin.failed')).json()) as { data: unknown[] };
      expect(audit.data.length).toBeGreaterThan(0);
    },
    LONG,
  );
});
