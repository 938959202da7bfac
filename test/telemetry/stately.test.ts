/**
 * INSPECT=true streams the live actor system to the Stately inspector: a browser-side client
 * of the local bridge (here a plain WebSocket client, as the bridge page is) receives each
 * session actor's snapshots as the conversation moves through the chart.
 */
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import WebSocket from 'ws';
import { uniqueId, until, useServers } from '../http/support.js';

const start = useServers();

describe('Stately inspection', () => {
  it('relays session snapshots to a viewer of the inspector bridge', async () => {
    const port = await freePort();
    const server = await start({ inspect: 'true', inspectPort: String(port) });
    const messages: Array<{ type: string; snapshot?: { value?: unknown }; event?: { type?: string } }> = [];
    let viewer: WebSocket | null = null;
    for (let i = 0; i < 50 && !viewer; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}`);
      const opened = await Promise.race([once(ws, 'open').then(() => true), once(ws, 'error').then(() => false)]);
      if (opened) viewer = ws;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(viewer).not.toBeNull();
    viewer!.on('message', (data) => messages.push(JSON.parse(data.toString())));

    const model = uniqueId('inspected');
    const a = server.client();
    const handshake = a.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] });
    await until(() => server.service.ctx.sessions.get(model)?.state === 'AWAITING_PEER', 'A is held');
    const b = server.client().chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }] });
    expect((await handshake).choices[0]!.message.content).toBe('b1');

    await until(() => messages.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'ACTIVE'), 'the viewer sees ACTIVE');
    expect(messages.some((m) => m.type === '@xstate.snapshot' && m.snapshot?.value === 'AWAITING_PEER')).toBe(true);
    expect(messages.some((m) => m.type === '@xstate.event' && m.event?.type === 'CONNECT_B')).toBe(true);
    viewer!.close();
    await server.service.app.inject({ method: 'DELETE', url: `/v1/sessions/${model}` });
    await expect(b).rejects.toMatchObject({ status: 410 });
  });
});
