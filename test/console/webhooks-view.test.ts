// The console's webhooks view in headless Chromium against a real server with an admin key and
// a real receiver on loopback (allowed with WEBHOOK_ALLOW_NETWORKS=127.0.0.1/32): the view asks
// for the admin key, refuses a bad URL beside the form, adds an endpoint and shows its secret
// once, sends a test event the receiver verifies with that secret, lists the attempt, sends it
// again with the same webhook-id, rotates the secret, disables the endpoint, shows a URL holding
// HTML as text, and deletes an endpoint.
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReceiver, verify, type Receiver } from '../helpers/webhook-receiver.js';
import { launchBrowser, startTestServer, type Browser, type TestServer } from './support.js';

const ADMIN = 'admin-secret-for-the-console';
const LONG = 120_000;
let server: TestServer;
let receiver: Receiver;
let browser: Browser;
let page: Page;
/** Every alert, confirm and prompt the page opened. */
const dialogs: string[] = [];

beforeAll(async () => {
  receiver = await startReceiver();
  server = await startTestServer({ adminApiKey: ADMIN, webhookAllowNetworks: '127.0.0.1/32' });
  browser = await launchBrowser();
  page = await browser.page();
  page.on('dialog', (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    if (dialog.type() === 'alert') void dialog.dismiss();
  });
}, LONG);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await receiver?.close();
}, LONG);

/** The endpoints as the admin API lists them. */
async function listed(): Promise<Array<Record<string, any>>> {
  const response = await fetch(`${server.url}/admin/webhooks`, { headers: { authorization: `Bearer ${ADMIN}` } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { data: Array<Record<string, any>> }).data;
}

/** Answers the next dialog (a confirm or a prompt) with `value`. */
const answerNextDialog = (value?: string) => page.once('dialog', (dialog) => void dialog.accept(value));

describe('the console webhooks view', () => {
  it(
    'adds an endpoint, shows its secret once, sends a test event and sends it again, rotates and disables it',
    async () => {
      await page.goto(`${server.url}/#/webhooks`);
      await page.locator('#webhooks-key-box').waitFor();
      await page.locator('#webhooks-admin-key').fill(ADMIN);
      await page.locator('#webhooks-key-box button[type="submit"]').click();
      await page.locator('#webhooks-empty').waitFor();
      expect(await page.locator('.bar-nav a[aria-current="page"]').innerText()).toBe('Webhooks');
      expect(await page.locator('#webhooks-sender').innerText()).toMatch(/This instance sends the events/);

      // A URL the API refuses: its message beside the form, nothing made.
      await page.locator('#webhook-form input[name="url"]').fill('ftp://example.com/hook');
      await page.getByRole('button', { name: 'Add endpoint' }).click();
      await page.locator('#webhook-form-error').waitFor();
      expect(await page.locator('#webhook-form-error').innerText()).toMatch(/^url: must be an http:\/\/ or https:\/\/ URL/);
      expect(await listed()).toEqual([]);

      // The types offered come from the catalogue; pressing one adds it to the field.
      await page.locator('#webhook-type-choices .chip[data-pattern="session.*"]').click();
      await page.locator('#webhook-type-choices .chip[data-pattern="webhook.test"]').click();
      expect(await page.locator('#webhook-types').inputValue()).toBe('session.* webhook.test');
      const url = `${receiver.url}/hooks/motive`;
      await page.locator('#webhook-form input[name="url"]').fill(url);
      await page.locator('#webhook-form input[name="description"]').fill('the game server');
      await page.getByRole('button', { name: 'Add endpoint' }).click();

      // The secret, once, with a Copy button; gone when dismissed.
      await page.locator('#new-secret').waitFor();
      expect(await page.locator('#webhook-form-error').isHidden()).toBe(true);
      const secret = await page.locator('#new-secret-value').inputValue();
      expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(await page.locator('#new-secret-title').innerText()).toMatch(/not shown again/);
      expect(await page.locator('#new-secret').innerText()).toMatch(/shown only once/);
      expect(await page.locator('#new-secret-copy').isVisible()).toBe(true);
      await page.locator('#new-secret-done').click();
      expect(await page.locator('#new-secret').isHidden()).toBe(true);
      expect(await page.locator('#new-secret-value').inputValue()).toBe('');

      const [endpoint] = await listed();
      expect(endpoint).toMatchObject({ url, types: ['session.*', 'webhook.test'], include_content: false, description: 'the game server', enabled: true });
      const row = page.locator(`#webhooks-body tr[data-endpoint="${endpoint!.id}"]`);
      await row.waitFor();
      expect(await row.locator('.webhook-url').innerText()).toBe(url);
      expect(await row.locator('td[data-label="Types"]').innerText()).toBe('session.* webhook.test');
      expect(await row.locator('td[data-label="Content"]').innerText()).toBe('no');
      expect(await row.locator('td[data-label="Status"]').innerText()).toBe('enabled');
      // A new endpoint is selected: its (empty) attempts are shown.
      await page.locator('#webhook-attempts-empty').waitFor();
      expect(await page.locator('#webhook-attempts-url').innerText()).toBe(url);

      // Send a test event: the receiver gets it, signed with the secret shown; the attempt is listed.
      await row.getByRole('button', { name: 'Send a test event' }).click();
      const [first] = await receiver.waitFor(1);
      const payload = verify(secret, first!) as { id: string; type: string; data: { endpoint: string } };
      expect(payload).toMatchObject({ type: 'webhook.test', data: { endpoint: endpoint!.id } });
      expect(first!.path).toBe('/hooks/motive');
      const eventId = String(first!.headers['webhook-id']);
      expect(payload.id).toBe(eventId);
      const attempts = page.locator('#webhook-attempts-body tr');
      const delivered = attempts.filter({ has: page.locator('.badge.outcome-delivered') });
      await delivered.first().waitFor();
      expect(await attempts.count()).toBe(1);
      expect(await attempts.first().getAttribute('data-event')).toBe(eventId);
      expect(await attempts.first().locator('td[data-label="Event type"]').innerText()).toBe('webhook.test');
      expect(await attempts.first().locator('td[data-label="Event id"]').innerText()).toBe(eventId);
      expect(await attempts.first().locator('td[data-label="Attempt"]').innerText()).toBe('1 (manual)');
      expect(await attempts.first().locator('td[data-label="Status"]').innerText()).toBe('204');
      expect(await attempts.first().locator('td[data-label="Time taken"]').innerText()).toMatch(/^\d+ ms$/);
      expect(await page.locator('#webhooks-notice').innerText()).toMatch(/delivered \(answered 204/);

      // Send again: a second delivery of the same event (the same webhook-id), signed anew.
      await attempts.first().getByRole('button', { name: 'Send again' }).click();
      const [, second] = await receiver.waitFor(2);
      expect(second!.headers['webhook-id']).toBe(eventId);
      expect(second!.body).toBe(first!.body);
      expect((verify(secret, second!) as { id: string }).id).toBe(eventId);
      await page.locator('#webhook-attempts-body tr:nth-child(2)').waitFor();
      expect(await attempts.count()).toBe(2);
      expect(await attempts.first().locator('td[data-label="Attempt"]').innerText()).toBe('2 (manual)');
      expect(await attempts.first().locator('td[data-label="Outcome"]').innerText()).toBe('delivered');
      expect(await attempts.first().getAttribute('data-event')).toBe(eventId);

      // Rotate with no overlap: the new secret is shown once and signs alone from now on.
      answerNextDialog('0');
      await row.getByRole('button', { name: 'Rotate secret' }).click();
      await page.locator('#new-secret-title', { hasText: 'New signing secret' }).waitFor();
      const rotated = await page.locator('#new-secret-value').inputValue();
      expect(rotated).toMatch(/^whsec_/);
      expect(rotated).not.toBe(secret);
      await page.locator('#new-secret-done').click();
      await row.getByRole('button', { name: 'Send a test event' }).click();
      const [, , third] = await receiver.waitFor(3);
      expect(verify(rotated, third!)).toMatchObject({ type: 'webhook.test' });
      expect(() => verify(secret, third!)).toThrow();
      await page.locator('#webhook-attempts-body tr:nth-child(3)').waitFor();

      // Disable: shown disabled with the reason; nothing can be sent to it from the page.
      await row.getByRole('switch').click();
      await row.locator('.badge.webhook-disabled').waitFor();
      expect(await row.getAttribute('data-enabled')).toBe('false');
      expect(await row.getByRole('switch').isChecked()).toBe(false);
      expect(await row.locator('.disabled-reason').innerText()).toBe('disabled by an admin');
      expect(await row.getByRole('button', { name: 'Send a test event' }).isDisabled()).toBe(true);
      expect(await attempts.first().getByRole('button', { name: 'Send again' }).isDisabled()).toBe(true);
      expect((await listed())[0]).toMatchObject({ enabled: false, disabled: { reason: 'disabled by an admin' } });

      // And enabled again.
      await row.getByRole('switch').click();
      await row.locator('.badge.webhook-enabled').waitFor();
      expect((await listed())[0]).toMatchObject({ enabled: true, disabled: null });
      expect(receiver.received).toHaveLength(3);
    },
    LONG,
  );

  it(
    'shows a URL and an error holding HTML as text, and deletes an endpoint after a confirmation',
    async () => {
      const hostile = 'http://127.0.0.1:1/<img src=x onerror=alert(1)>';
      await page.locator('#webhook-form input[name="url"]').fill(hostile);
      await page.locator('#webhook-form input[name="description"]').fill('<b>bold</b><script>alert(2)</script>');
      await page.getByRole('button', { name: 'Add endpoint' }).click();
      await page.locator('#new-secret').waitFor();
      await page.locator('#new-secret-done').click();
      const endpoint = (await listed()).find((e) => e.url === hostile);
      expect(endpoint).toBeDefined();
      const row = page.locator(`#webhooks-body tr[data-endpoint="${endpoint!.id}"]`);
      await row.waitFor();
      expect(await row.locator('.webhook-url').innerText()).toBe(hostile);
      expect(await row.locator('.webhook-description').innerText()).toBe('<b>bold</b><script>alert(2)</script>');
      expect(await row.locator('td[data-label="Types"]').innerText()).toBe('*');

      // Nothing answers on port 1: "no answer", the error as the sender wrote it, failed.
      await row.getByRole('button', { name: 'Send a test event' }).click();
      const failed = page.locator('#webhook-attempts-body tr[data-outcome="failed"]');
      await failed.waitFor();
      expect(await page.locator('#webhook-attempts-url').innerText()).toBe(hostile);
      expect(await failed.locator('td[data-label="Status"]').innerText()).toBe('no answer');
      expect(await failed.locator('td[data-label="Error"]').innerText()).not.toBe('');

      expect(await page.locator('#webhooks-view img, #webhooks-view b, #webhooks-view script').count()).toBe(0);
      expect(await page.evaluate("document.body.innerHTML.includes('<img src=x')")).toBe(false);

      // Delete, after the page asks.
      answerNextDialog();
      await row.getByRole('button', { name: 'Delete' }).click();
      await row.waitFor({ state: 'detached' });
      expect(dialogs.at(-1)).toMatch(/^confirm: Delete the webhook endpoint http:\/\/127\.0\.0\.1:1\/<img/);
      expect((await listed()).map((e) => e.url)).toEqual([`${receiver.url}/hooks/motive`]);
      expect(await page.locator('#webhook-attempts').isHidden()).toBe(true);
      // The only dialogs were the page's own prompt and confirmation: no script of the URL ran.
      expect(dialogs.filter((d) => d.startsWith('alert'))).toEqual([]);
    },
    LONG,
  );
});
