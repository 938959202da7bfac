// The admin API's OpenAPI 3.1 description, served by a real listening server: it names every
// admin route with its method, summary, security and parameters, its request bodies are the
// very schemas the routes check, and it is guarded like the routes it describes.
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createService, type Service } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';

const ADMIN = 'admin-secret-for-openapi';
const running: Service[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown()));
});

describe('GET /admin/openapi.json', () => {
  it('describes every admin route, with the bodies the routes check', async () => {
    const { config } = loadConfig({ host: '127.0.0.1', port: '0', logLevel: 'silent', journalPath: 'memory', adminApiKey: ADMIN }, {});
    const service = await createService(config, createLogger(config));
    running.push(service);
    expect((await fetch(`${service.url}/admin/openapi.json`)).status).toBe(401);
    const response = await fetch(`${service.url}/admin/openapi.json`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(response.status).toBe(200);
    const doc = (await response.json()) as any;
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: 'MotiveProxy admin API', version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    const operations = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(operations.sort()).toEqual(
      [
        'GET /admin/sessions',
        'GET /admin/sessions/{id}',
        'DELETE /admin/sessions/{id}',
        'GET /admin/sessions/{id}/transcript',
        'GET /admin/health',
        'GET /admin/keys',
        'POST /admin/keys',
        'GET /admin/keys/{id}',
        'DELETE /admin/keys/{id}',
        'POST /admin/keys/{id}/rotate',
        'GET /admin/tenants',
        'GET /admin/tenants/{name}',
        'PUT /admin/tenants/{name}',
        'DELETE /admin/tenants/{name}',
        'GET /admin/audit',
        'GET /admin/events/types',
        'GET /admin/webhooks',
        'POST /admin/webhooks',
        'GET /admin/webhooks/{id}',
        'PATCH /admin/webhooks/{id}',
        'DELETE /admin/webhooks/{id}',
        'POST /admin/webhooks/{id}/rotate',
        'GET /admin/webhooks/{id}/attempts',
        'POST /admin/webhooks/{id}/events/{event}/resend',
        'POST /admin/webhooks/{id}/test',
        'GET /admin/bridges',
        'GET /admin/bridges/conversations',
        'GET /admin/bridges/conversations/{id}',
        'DELETE /admin/bridges/conversations/{id}',
      ].sort(),
    );
    for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(methods)) {
        expect(op.summary, `${method} ${path}`).toBeTruthy();
        expect(op.tags?.length, `${method} ${path}`).toBe(1);
        expect(op.security, `${method} ${path}`).toEqual([{ bearer: [] }]);
        expect(Object.keys(op.responses ?? {}).length, `${method} ${path}`).toBeGreaterThan(0);
      }
    }
    const create = doc.paths['/admin/keys'].post.requestBody.content['application/json'].schema;
    expect(create.required).toEqual(['name']);
    expect(create.properties.scopes.items.enum).toContain('global:admin');
    expect(create.properties.limits.properties).toHaveProperty('max_live_sessions');
    expect(create.additionalProperties).toBe(false);
    const audit = doc.paths['/admin/audit'].get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`);
    expect(audit).toEqual(expect.arrayContaining(['query:tenant', 'query:actor', 'query:action', 'query:since', 'query:until', 'query:limit', 'query:format']));
    expect(doc.paths['/admin/keys/{id}'].get.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ in: 'path', name: 'id', required: true })]));
    // The description documents; it does not change how the routes check and answer.
    const bad = await fetch(`${service.url}/admin/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{"name":""}' });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as any).error).toMatchObject({ code: 'invalid_request', param: 'name' });
  });
});
