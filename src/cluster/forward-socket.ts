/**
 * A WebSocket side whose session another instance runs (cluster mode): the connection is
 * relayed to the owner's /v1/realtime, frame by frame in both directions, so that the side is
 * held where the session's actor runs. When the owner goes away the client's socket is closed
 * with 1012 (service restart), and the client's reconnect lands where the session runs next.
 */
import type { FastifyRequest } from 'fastify';
import { WebSocket, type RawData } from 'ws';
import { CLUSTER_TOKEN, FORWARDED_BY, FORWARDED_FOR } from './forward.js';

const CLOSE_RESTART = 1012;
/** Codes a peer may send (1005, 1006 and 1015 are reserved for reports, never sent). */
const sendable = (code: number): boolean => code === 1000 || (code >= 1001 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999);

export function relaySocket(client: WebSocket, request: FastifyRequest, address: string, self: { id: string; token: string }): void {
  const url = new URL(request.url, address);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const headers: Record<string, string> = { [FORWARDED_BY]: self.id, [CLUSTER_TOKEN]: self.token, [FORWARDED_FOR]: request.ip };
  for (const name of ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'origin', 'user-agent']) {
    const value = request.headers[name];
    if (typeof value === 'string') headers[name] = value;
  }
  const owner = new WebSocket(url, { headers });
  const early: Array<{ data: RawData; binary: boolean }> = [];
  client.on('message', (data, binary) => {
    if (owner.readyState === WebSocket.OPEN) owner.send(data, { binary });
    else if (owner.readyState === WebSocket.CONNECTING) early.push({ data, binary });
  });
  owner.on('open', () => {
    for (const { data, binary } of early.splice(0)) owner.send(data, { binary });
  });
  owner.on('message', (data, binary) => {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary });
  });
  owner.on('close', (code, reason) => {
    if (client.readyState !== WebSocket.OPEN && client.readyState !== WebSocket.CONNECTING) return;
    // The owner said goodbye: the same to the client. It went away: a restart, so the client reconnects.
    if (sendable(code)) client.close(code, reason);
    else client.close(CLOSE_RESTART, 'the instance running this session went away; reconnect');
  });
  owner.on('error', () => {
    if (client.readyState === WebSocket.OPEN) client.close(CLOSE_RESTART, 'the instance running this session cannot be reached; reconnect');
  });
  client.on('close', (code, reason) => {
    if (owner.readyState === WebSocket.OPEN) owner.close(sendable(code) ? code : 1000, reason);
    else if (owner.readyState === WebSocket.CONNECTING) owner.terminate();
  });
}
