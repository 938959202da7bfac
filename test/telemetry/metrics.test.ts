/**
 * ENABLE_PROMETHEUS: GET /metrics serves Prometheus text with request counts by status,
 * session events by type and resulting state, live sessions by state and wait times; without
 * the setting the route does not exist.
 */
import { describe, expect, it } from 'vitest';
import { uniqueId, until, useServers } from '../http/support.js';

const start = useServers();

describe('Prometheus metrics', () => {
  it('counts a paired conversation in /metrics when enabled', async () => {
    const server = await start({ enablePrometheus: 'true' });
    const model = uniqueId('metrics');
    const a = server.client();
    const b = server.client();
    const handshake = a.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] });
    await until(() => server.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const held = b.chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');
    await until(() => server.service.ctx.sessions.get(model)?.state === 'ACTIVE', 'B is held');

    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toMatch(/^motiveproxy_requests_total\{protocol="openai",status="200"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_session_events_total\{event="CONNECT_A",state="AWAITING_PEER"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_session_events_total\{event="CONNECT_B",state="ACTIVE"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_sessions\{state="ACTIVE"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_process_cpu_seconds_total /m);

    await fetch(`${server.url}/v1/sessions/${model}`, { method: 'DELETE' });
    await expect(held).rejects.toMatchObject({ status: 410 });
    const after = await (await fetch(`${server.url}/metrics`)).text();
    expect(after).toMatch(/^motiveproxy_requests_total\{protocol="openai",status="410"\} 1$/m);
    expect(after).not.toMatch(/^motiveproxy_sessions\{state="ACTIVE"\}/m);
  });

  it('has no /metrics route when disabled', async () => {
    const server = await start();
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });
});
