/**
 * Admin routes answer trusted callers only: the admin key's holders when ADMIN_API_KEY is set,
 * else callers "on this machine": a request from a loopback address that no proxy relayed (a reverse proxy on the
 * same host would make every caller look local, so forwarding headers disqualify). Anyone
 * else gets the same 404 an unknown route gets, so the routes are not revealed.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isIPv4 } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ProxyError } from '../protocols/errors.js';
import { presentedKey, type AccessControl } from './access.js';
import { sendError } from './errors.js';

const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'] as const;

/** 127.0.0.0/8, ::1, and IPv4-mapped ::ffff:127.x.y.z. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const lower = address.toLowerCase();
  if (lower === '::1') return true;
  const v4 = lower.startsWith('::ffff:') ? lower.slice(7) : lower;
  return isIPv4(v4) && v4.startsWith('127.');
}

/** A caller on this machine: a loopback address (the socket's), and no proxy relayed the request. */
export function isLocalCaller(remoteAddress: string | undefined, headers: IncomingHttpHeaders): boolean {
  return isLoopback(remoteAddress) && !FORWARDING_HEADERS.some((name) => headers[name] !== undefined);
}

/** An onRequest hook: answers 404 not_found unless the request comes straight from loopback. */
export async function loopbackOnly(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
  // The socket's address, not request.ip: that one follows X-Forwarded-For if trustProxy is ever set.
  if (isLocalCaller(request.socket.remoteAddress, request.headers)) return undefined;
  request.turnLog = { ...request.turnLog, refused: 'not a loopback caller' };
  return sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${request.url.split('?')[0]}.`));
}

/**
 * An onRequest hook for operator routes: with ADMIN_API_KEY set, the request must carry it
 * (Authorization: Bearer, or x-api-key), else 401; without it, only loopback callers get in.
 * Wrong admin keys count against FAILED_KEYS_PER_MINUTE like wrong client keys.
 */
export function adminOnly(access: AccessControl) {
  return async function admin(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    if (!access.adminKeySet) return loopbackOnly(request, reply);
    const retryAfterSeconds = access.failedKeys?.retryAfter(request.ip) ?? 0;
    if (retryAfterSeconds > 0) {
      request.turnLog = { ...request.turnLog, refused: 'too many failed api keys' };
      return sendError(
        request,
        reply,
        new ProxyError('rate_limited', `This address sent too many requests with a missing or wrong key within a minute (FAILED_KEYS_PER_MINUTE); retry in ${retryAfterSeconds} s.`, {
          retryAfterSeconds,
        }),
      );
    }
    if (access.isAdmin(presentedKey(request))) return undefined;
    access.failedKeys?.recordFailure(request.ip);
    request.turnLog = { ...request.turnLog, refused: 'not the admin key' };
    return sendError(request, reply, new ProxyError('invalid_api_key', 'This route needs the admin key (ADMIN_API_KEY), sent as Authorization: Bearer <key>.'));
  };
}
