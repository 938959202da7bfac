/**
 * ENABLE_PROMETHEUS: GET /metrics serves Prometheus text whose numbers move as a conversation
 * runs: requests by status, messages by protocol and direction, handshake and turn latency
 * histograms, timeouts by kind, errors by code, journal appends, session events and live
 * sessions by state. Without the setting the route does not exist.
 */
import { describe, expect, it } from 'vitest';
import { uniqueId, until, useServers } from '../http/support.js';

const start = useServers();

describe('Prometheus metrics', () => {
  it('counts a paired conversation in /metrics when enabled', async () => {
    const server = await start({ enablePrometheus: 'true', turnTimeoutSeconds: '0.3' });
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
    expect(text).toMatch(/^motiveproxy_session_events_total\{event="SideConnected",state="AWAITING_PEER"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_session_events_total\{event="SideConnected",state="ACTIVE"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_session_events_total\{event="MessageDelivered",state="ACTIVE"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_sessions_active\{state="ACTIVE"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_messages_total\{protocol="openai",direction="in"\} 2$/m);
    expect(text).toMatch(/^motiveproxy_messages_total\{protocol="openai",direction="out"\} 1$/m);
    expect(text).toMatch(/^motiveproxy_handshake_time_ms_count 1$/m);
    expect(text).toMatch(/^motiveproxy_journal_append_seconds_count [1-9]\d*$/m);
    expect(text).toMatch(/^motiveproxy_process_cpu_seconds_total /m);
    // B's request is held; the cap and the journal lag are there for the alert rules.
    expect(text).toMatch(/^motiveproxy_held_requests 1$/m);
    expect(text).toMatch(new RegExp(`^motiveproxy_max_sessions ${server.service.ctx.config.maxSessions}$`, 'm'));
    expect(text).toMatch(/^motiveproxy_journal_pending_records \d+$/m);

    // B's wait runs out (the SDK retries twice and each retry times out too).
    await expect(held).rejects.toMatchObject({ status: 408 });
    const later = await (await fetch(`${server.url}/metrics`)).text();
    expect(later).toMatch(/^motiveproxy_timeouts_total\{kind="turn"\} 3$/m);
    expect(later).toMatch(/^motiveproxy_errors_total\{code="turn_timeout"\} 3$/m);

    const again = b.chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }] }, { maxRetries: 0 });
    await until(() => server.service.ctx.sessions.get(model)?.state === 'ACTIVE', 'B is held again');
    again.catch(() => undefined); // handled below: its 410 may come before the DELETE's answer
    await fetch(`${server.url}/v1/sessions/${model}`, { method: 'DELETE' });
    await expect(again).rejects.toMatchObject({ status: 410 });
    const after = await (await fetch(`${server.url}/metrics`)).text();
    expect(after).toMatch(/^motiveproxy_requests_total\{protocol="openai",status="410"\} 1$/m);
    expect(after).toMatch(/^motiveproxy_errors_total\{code="session_closed"\} 1$/m);
    expect(after).toMatch(/^motiveproxy_messages_total\{protocol="openai",direction="in"\} 2$/m); // retries are not new messages
    expect(after).not.toMatch(/^motiveproxy_sessions_active\{state="ACTIVE"\}/m);
  });

  it('has no /metrics route when disabled', async () => {
    const server = await start();
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });
});
