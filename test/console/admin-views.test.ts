// The console's admin views in headless Chromium against a real server with an admin key: the
// keys view asks for the admin key, creates a key and shows it once, rotates and revokes it, and
// each step holds for a client of the official SDK; the admin API view renders the service's
// OpenAPI description.
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, startTestServer, type Browser, type TestServer } from './support.js';

const ADMIN = 'admin-secret-for-the-console';
const LONG = 120_000;
let server: TestServer;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  server = await startTestServer({ adminApiKey: ADMIN, requireApiKey: 'true' });
  browser = await launchBrowser();
  page = await browser.page();
}, LONG);

afterAll(async () => {
  await browser?.close();
  await server?.close();
}, LONG);

const sdk = (apiKey: string) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
const status = (apiKey: string) => sdk(apiKey).models.list().then(() => 200, (err: { status?: number }) => err.status ?? 0);

describe('the console admin views', () => {
  it(
    'creates a key shown once, rotates it and revokes it, each taking effect for clients',
    async () => {
      await page.goto(`${server.url}/#/keys`);
      await page.locator('#keys-key-box').waitFor();
      await page.locator('#keys-admin-key').fill(ADMIN);
      await page.locator('#keys-key-box button[type="submit"]').click();
      await page.locator('#keys-empty').waitFor();
      expect(await page.locator('.bar-nav a[aria-current="page"]').innerText()).toBe('Keys');

      await page.locator('#key-form input[name="name"]').fill('guard bot');
      await page.locator('#key-form input[name="tenant"]').fill('studio-a');
      await page.locator('#key-form input[name="requests_per_minute"]').fill('50');
      await page.getByRole('button', { name: 'Create key' }).click();
      await page.locator('#new-key').waitFor();
      const secret = await page.locator('#new-key-value').inputValue();
      expect(secret).toMatch(/^mp_[0-9A-Za-z]{36}$/);
      expect(await page.locator('#new-key-title').innerText()).toMatch(/not shown again/);
      await page.getByRole('button', { name: 'Done' }).click();
      expect(await page.locator('#new-key-value').inputValue()).toBe('');

      const row = page.locator('#keys-body tr').filter({ hasText: 'guard bot' });
      await row.waitFor();
      expect(await row.locator('td[data-label="Tenant"]').innerText()).toBe('studio-a');
      expect(await row.locator('td[data-label="Limits"]').innerText()).toMatch(/requests per minute: 50/);
      expect(await row.locator('td[data-label="Secrets"]').innerText()).toBe(`${secret.slice(0, 7)}…`);
      expect(await status(secret)).toBe(200);

      // Rotate with no overlap: the old secret stops, the new one works.
      page.once('dialog', (dialog) => void dialog.accept('0'));
      await row.getByRole('button', { name: 'Rotate' }).click();
      await page.locator('#new-key-title', { hasText: 'New secret of “guard bot”' }).waitFor();
      const rotated = await page.locator('#new-key-value').inputValue();
      expect(rotated).not.toBe(secret);
      expect(await status(secret)).toBe(401);
      expect(await status(rotated)).toBe(200);
      await page.getByRole('button', { name: 'Done' }).click();

      page.once('dialog', (dialog) => void dialog.accept());
      await row.getByRole('button', { name: 'Revoke' }).click();
      await row.locator('.badge', { hasText: 'revoked' }).waitFor();
      expect(await row.getByRole('button', { name: 'Rotate' }).count()).toBe(0);
      expect(await status(rotated)).toBe(401);
    },
    LONG,
  );

  it(
    'renders the admin API from its OpenAPI description',
    async () => {
      await page.goto(`${server.url}/#/api`);
      const create = page.locator('details[data-operation="POST /admin/keys"]');
      await create.waitFor();
      expect(await page.locator('#api-intro').innerText()).toMatch(/MotiveProxy admin API .* \(OpenAPI 3\.1\.0\)/);
      expect(await page.locator('.api-tag h2').allInnerTexts()).toEqual(['Sessions', 'Keys', 'Tenants', 'Audit', 'Webhooks', 'Bridges', 'Service']);
      await create.locator('summary').click();
      expect(await create.locator('.api-body code').innerText()).toContain('"max_live_sessions"');
      expect(await create.locator('.api-responses').innerText()).toMatch(/201 The new key/);
      const audit = page.locator('details[data-operation="GET /admin/audit"]');
      await audit.locator('summary').click();
      expect(await audit.locator('.api-params').innerText()).toMatch(/since\s+query/);
      expect(await page.locator('details.api-op').count()).toBe(29);
    },
    LONG,
  );
});
