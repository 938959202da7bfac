// The audit trail through a real listening server with a real journal directory: every admin
// action is recorded with who, when, from where and what, never a secret; it is filtered by
// tenant, actor, action and time, exported as JSON lines, kept through a restart, read by a
// tenant's admin for its own tenant only, and shared by the instances of a cluster.
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileAuditStore } from '../../src/audit/audit.js';
import { startCluster } from '../cluster/instances.js';
import { until } from '../http/support.js';

import { call, useServices } from './support.js';
const ADMIN = 'admin-secret-for-audit';
const { start, redis: privateRedis } = useServices(ADMIN);
const audit = async (url: string, query = '', key = ADMIN) => (await call(url, 'GET', `/admin/audit${query}`, key)).body.data as any[];

describe('the audit trail', () => {
  it('records every admin action with who, when, from where and what, never a secret, and keeps it through a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'motive-audit-'));
    const s = await start({ journalPath: dir, handshakeTimeoutSeconds: '5' });
    const made = await call(s.url, 'POST', '/admin/keys', ADMIN, { name: 'guard', tenant: 'studio-a', scopes: ['client', 'viewer'] });
    const peer = await call(s.url, 'POST', '/admin/keys', ADMIN, { name: 'player', tenant: 'studio-a' });
    const rotated = await call(s.url, 'POST', `/admin/keys/${made.body.id}/rotate`, ADMIN, { overlap_seconds: 60 });
    await call(s.url, 'PUT', '/admin/tenants/studio-a', ADMIN, { limits: { max_held: 5 } });
    // A conversation, its transcript read, then it is ended.
    const held = fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${rotated.body.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gate', messages: [{ role: 'user', content: 'Halt!' }] }),
    }).catch(() => undefined);
    await until(() => s.ctx.sessions.size === 1, 'the session exists');
    expect((await call(s.url, 'GET', '/admin/sessions/gate/transcript?tenant=studio-a', ADMIN)).status).toBe(200);
    // Refused: a wrong key, and a viewer trying to end a session.
    expect((await call(s.url, 'GET', '/admin/keys', 'not-the-admin-key')).status).toBe(401);
    expect((await call(s.url, 'DELETE', '/admin/sessions/gate', rotated.body.key)).status).toBe(403);
    expect((await call(s.url, 'DELETE', '/admin/sessions/gate?tenant=studio-a', ADMIN)).status).toBe(200);
    await held;
    await call(s.url, 'DELETE', `/admin/keys/${peer.body.id}`, ADMIN);

    const entries = await audit(s.url);
    expect(entries.map((e) => e.action)).toEqual([
      'key.created',
      'key.created',
      'key.rotated',
      'tenant.limits_set',
      'transcript.read',
      'admin.denied',
      'admin.denied',
      'session.ended',
      'key.revoked',
    ]);
    expect(entries[0]).toMatchObject({
      outcome: 'ok',
      actor: { subject: 'admin key', kind: 'static-key', tenant: null },
      from: '127.0.0.1',
      tenant: 'studio-a',
      target: { type: 'key', id: made.body.id },
      details: { name: 'guard', scopes: 'client viewer' },
    });
    expect(Date.parse(entries[0].at)).toBeGreaterThan(Date.now() - 60_000);
    expect(entries[4]).toMatchObject({ action: 'transcript.read', tenant: 'studio-a', target: { type: 'session', id: 'gate' } });
    expect(entries[5]).toMatchObject({ action: 'admin.denied', outcome: 'denied', actor: { subject: 'anonymous' }, target: { type: 'route', id: 'GET /admin/keys' } });
    expect(entries[6]).toMatchObject({ action: 'admin.denied', actor: { subject: `guard (${made.body.id})`, kind: 'managed-key', tenant: 'studio-a' }, details: { reason: 'needs the operator role' } });
    // Never a secret: no key, no admin key, no digest.
    const stored = readFileSync(join(dir, 'audit.jsonl'), 'utf8');
    for (const secret of [made.body.key, rotated.body.key, peer.body.key, ADMIN, 'not-the-admin-key']) {
      expect(stored).not.toContain(secret);
      expect(JSON.stringify(entries)).not.toContain(secret);
    }
    expect(stored).not.toContain('digest');
    // Private, as the journal beside it.
    expect(statSync(join(dir, 'audit.jsonl')).mode & 0o777).toBe(0o600);

    // Filters: action (a prefix), tenant, actor, time, limit.
    expect((await audit(s.url, '?action=key')).map((e) => e.action)).toEqual(['key.created', 'key.created', 'key.rotated', 'key.revoked']);
    expect((await audit(s.url, '?action=key.revoked')).length).toBe(1);
    expect((await audit(s.url, '?actor=guard')).map((e) => e.action)).toEqual(['admin.denied']);
    expect((await audit(s.url, '?tenant=')).map((e) => e.action)).toEqual(['admin.denied']);
    expect((await audit(s.url, `?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).length).toBe(0);
    expect((await audit(s.url, `?until=${Date.parse(entries[1].at)}`)).length).toBeGreaterThanOrEqual(2);
    expect((await audit(s.url, '?limit=2')).map((e) => e.action)).toEqual(['session.ended', 'key.revoked']);
    expect((await call(s.url, 'GET', '/admin/audit?limit=0', ADMIN)).status).toBe(422);
    expect((await call(s.url, 'GET', '/admin/audit?colour=red', ADMIN)).status).toBe(422);

    // The export: JSON lines, every matching entry.
    const exported = await call(s.url, 'GET', '/admin/audit?format=jsonl&action=key', ADMIN);
    expect(exported.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    const lines = exported.text.trim().split('\n').map((line: string) => JSON.parse(line));
    expect(lines.map((e: { action: string }) => e.action)).toEqual(['key.created', 'key.created', 'key.rotated', 'key.revoked']);

    // Kept through a restart.
    await s.shutdown();
    const again = await start({ journalPath: dir });
    expect((await audit(again.url)).length).toBe(entries.length);
  });

  it('keeps its file private, and makes a file an older version left readable private too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'motive-audit-mode-'));
    const entry = { id: 'old', at: new Date(0).toISOString(), action: 'key.created', outcome: 'ok' };
    writeFileSync(join(dir, 'audit.jsonl'), `${JSON.stringify(entry)}\n`, { mode: 0o644 });
    expect(statSync(join(dir, 'audit.jsonl')).mode & 0o777).toBe(0o644);
    const store = await new FileAuditStore(dir).open();
    try {
      expect(statSync(join(dir, 'audit.jsonl')).mode & 0o777).toBe(0o600);
      const read = [];
      for await (const e of store.read()) read.push(e);
      expect(read).toEqual([entry]);
    } finally {
      await store.close();
    }
    const fresh = join(dir, 'fresh');
    await (await new FileAuditStore(fresh).open()).close();
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    expect(statSync(join(fresh, 'audit.jsonl')).mode & 0o777).toBe(0o600);
  });

  it("lets a tenant's admin read its own tenant's entries only", async () => {
    const s = await start();
    const adminA = (await call(s.url, 'POST', '/admin/keys', ADMIN, { name: 'admin a', tenant: 'studio-a', scopes: ['admin'] })).body.key;
    await call(s.url, 'POST', '/admin/keys', ADMIN, { name: 'b key', tenant: 'studio-b' });
    await call(s.url, 'POST', '/admin/keys', adminA, { name: 'a key' });
    const seen = await audit(s.url, '', adminA);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((e) => e.tenant === 'studio-a')).toBe(true);
    expect(seen.some((e) => e.actor.subject.startsWith('admin a'))).toBe(true);
    expect((await call(s.url, 'GET', '/admin/audit?tenant=studio-b', adminA)).status).toBe(403);
  });

  it('in cluster mode, every instance writes to one trail and reads all of it', async () => {
    const redis = await privateRedis();
    const [one, two] = await startCluster(redis.url, 2, { ADMIN_API_KEY: ADMIN });
    await call(one!.url, 'POST', '/admin/keys', ADMIN, { name: 'made on one' });
    await call(two!.url, 'POST', '/admin/keys', ADMIN, { name: 'made on two' });
    for (const instance of [one!, two!]) {
      const names = (await audit(instance.url, '?action=key.created')).map((e) => e.details.name);
      expect(names).toEqual(['made on one', 'made on two']);
    }
  }, 40_000);
});
