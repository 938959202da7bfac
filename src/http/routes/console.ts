/**
 * The web console (docs/console.md): a page that watches every session live and lets a person
 * play either side from the browser.
 *
 *   GET /                    the page (src/console/public/index.html)
 *   GET /console/*           its scripts and styles, all served from here (nothing from the internet)
 *   GET /console/chart.json  the session chart, read from machines/session.machine.ts
 *   GET /console/live        WebSocket: session snapshots pushed as they change (console-feed.ts)
 *
 * Playing a side uses the WebSocket side (GET /v1/realtime); ending a session uses
 * DELETE /v1/sessions/{id}; the transcript comes from GET /admin/sessions/{id}/transcript.
 *
 * Who may open it: callers on this machine only, like the admin routes (loopbackOnly), since it
 * shows every conversation in full. Everyone else gets the 404 of an unknown route. Because a
 * page of any other web site in the same browser is also "on this machine", requests must name
 * a loopback host (no DNS rebinding) and WebSocket upgrades must come from the console's own
 * origin (no cross-site WebSocket reads).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ProxyError } from '../../protocols/errors.js';
import { refuseOtherMethods, sendError } from '../errors.js';
import { sessionChart } from '../console-chart.js';
import { ConsoleFeed } from '../console-feed.js';
import type { AppContext } from '../context.js';
import { presentedKey } from '../access.js';
import { isLoopbackName, isOwnOrigin } from '../browser-guard.js';
import { consolePrincipal, holds, isLocalCaller, LOCAL_CALLER, loopbackOnly, OPERATOR_KEY } from '../loopback-only.js';
import { ConsoleSignIn, LOGIN_COOKIE, SESSION_COOKIE, SignInFailed } from '../../auth/console-signin.js';
import { rolesOf } from '../../auth/principal.js';
import { sessionName, tenantOfSession } from '../../auth/tenants.js';
import { sideHolders } from '../side-holders.js';
import { timingOf } from '../../config.js';

/**
 * The page's folder. Running from src (tsx) it is beside this file's folder; running the
 * build from dist/, tsc has not copied it there, so it is found in the source tree.
 */
export function consoleAssetsDir(): string {
  const candidates = ['../../console/public/', '../../../../src/console/public/'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((dir) => existsSync(`${dir}index.html`));
  if (!found) throw new Error(`the console's files are missing: looked in ${candidates.join(' and ')}`);
  return found;
}

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

/**
 * Requests must name a loopback host (or, with sign-in, PUBLIC_URL's host), and cross-origin
 * ones (a WebSocket from another site) are refused.
 */
function sameOriginOnly(publicHost: string | null) {
  return async function sameOrigin(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const { host, origin } = request.headers;
    const named = isLoopbackName(host) || (publicHost !== null && host?.toLowerCase() === publicHost);
    if (named && (origin === undefined || isOwnOrigin(origin, host))) return undefined;
    request.turnLog = { ...request.turnLog, refused: 'console: not a loopback host or another origin' };
    return sendError(request, reply, new ProxyError('not_found', `There is no route ${request.method} ${request.url.split('?')[0]}.`));
  };
}

/** GET /console/login, GET /console/callback, POST /console/logout, GET /console/me. */
function signInRoutes(scope: FastifyInstance, ctx: AppContext, signIn: ConsoleSignIn): void {
  const cookie = (secure: boolean, maxAgeSeconds: number) => ({ httpOnly: true, sameSite: 'lax' as const, secure, path: '/', maxAge: maxAgeSeconds });
  const back = (reply: FastifyReply, error?: string) => reply.redirect(error ? `/?signin_error=${encodeURIComponent(error.slice(0, 300))}` : '/', 302);
  type WithCookies = FastifyRequest & { cookies: Record<string, string | undefined> };
  type CookieReply = FastifyReply & { setCookie(name: string, value: string, options: object): FastifyReply; clearCookie(name: string, options: object): FastifyReply };

  scope.get('/console/login', async (request, reply) => {
    try {
      const { url, login } = await signIn.begin();
      (reply as CookieReply).setCookie(LOGIN_COOKIE, login, cookie(signIn.secureCookies, 600));
      return reply.redirect(url, 302);
    } catch (err) {
      request.log.warn({ err: { message: (err as Error).message } }, 'console sign-in could not start');
      return back(reply, `Sign-in cannot start: ${(err as Error).message}`);
    }
  });
  refuseOtherMethods(scope, '/console/login', ['GET']);

  scope.get('/console/callback', async (request, reply) => {
    const r = reply as CookieReply;
    r.clearCookie(LOGIN_COOKIE, { path: '/' });
    const query = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
    try {
      const person = await signIn.complete(new URL(`${signIn.callbackUrl}${query}`), (request as WithCookies).cookies[LOGIN_COOKIE]);
      const session = await signIn.open(person);
      r.setCookie(SESSION_COOKIE, session, cookie(signIn.secureCookies, Math.round(signIn.settings.sessionMs / 1000)));
      request.actor = person;
      void ctx.audit.record(request, { action: 'signin.ok', tenant: person.tenant, target: { type: 'console', id: 'sign-in' }, details: { roles: rolesOf(person.grants).join(' ') } });
      return back(reply);
    } catch (err) {
      const why = err instanceof SignInFailed ? err.message : 'the sign-in could not be completed';
      void ctx.audit.record(request, { action: 'signin.failed', outcome: 'denied', tenant: null, target: { type: 'console', id: 'sign-in' }, details: { reason: why.slice(0, 300) } });
      return back(reply, `Sign-in failed: ${why}`);
    }
  });
  refuseOtherMethods(scope, '/console/callback', ['GET']);

  scope.post('/console/logout', async (request, reply) => {
    const session = (request as WithCookies).cookies[SESSION_COOKIE];
    const person = await signIn.principalOf(session);
    await signIn.close(session);
    (reply as CookieReply).clearCookie(SESSION_COOKIE, { path: '/' });
    if (person) {
      request.actor = person;
      void ctx.audit.record(request, { action: 'signout', tenant: person.tenant, target: { type: 'console', id: 'sign-out' } });
    }
    return { signed_out: true };
  });
  refuseOtherMethods(scope, '/console/logout', ['POST']);
}

async function consolePlugin(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const signIn = ctx.access.signIn;
  const feed = new ConsoleFeed(ctx, sideHolders(ctx));
  const unsubscribe = ctx.facts.subscribe(feed.onStep);
  // Cluster mode: every instance's sessions, through Redis.
  const cluster = ctx.cluster;
  const relay = cluster
    ? new (await import('../../cluster/console-relay.js')).ConsoleRelay({
        redis: cluster.redis,
        prefix: ctx.config.redisPrefix,
        instanceId: cluster.instanceId,
        store: ctx.journal.store,
        timing: timingOf(ctx.config),
        local: feed.localSummaries,
        onRemoteChange: feed.remoteChanged,
      })
    : null;
  if (relay) {
    feed.useRelay(relay);
    await relay.start();
  }

  app.addHook('onClose', async () => {
    unsubscribe();
    relay?.stop();
    feed.stop();
  });

  // The console's own routes, behind their guards.
  await app.register(async (scope) => {
    // Client API keys are not asked for here (a browser sends none with a page load): these
    // routes have their own guard. Playing a side and ending a session carry the key the
    // person enters in the page, like any client's.
    scope.addHook('onRoute', (route) => {
      route.config = { ...(route.config as object), access: 'public' };
    });
    // With sign-in, the page and its files (code, no data) are served to anyone who reaches the
    // service, and what they show is what the person's roles allow; without it, callers on this
    // machine only.
    if (!signIn) scope.addHook('onRequest', loopbackOnly);
    scope.addHook('onRequest', sameOriginOnly(signIn ? new URL(signIn.settings.publicUrl).host.toLowerCase() : null));
    scope.addHook('onSend', async (_request, reply, payload) => {
      reply.headers(SECURITY_HEADERS);
      return payload;
    });
    const root = consoleAssetsDir();
    // wildcard: false registers one route per file, so that every other URL keeps its 404.
    await scope.register(fastifyStatic, { root, prefix: '/console/', wildcard: false, index: false, cacheControl: false, dotfiles: 'deny' });
    scope.get('/', (_request, reply) => reply.type('text/html; charset=utf-8').sendFile('index.html'));
    refuseOtherMethods(scope, '/', ['GET']);

    scope.get('/console/chart.json', async () => sessionChart());
    // Who the page is shown to: what it may offer (sign-in, the person's roles and tenant).
    scope.get('/console/me', async (request) => {
      const signed = await consolePrincipal(ctx.access, request);
      const person = signed === 'cross-site' ? null : signed;
      return {
        signin: signIn !== null,
        local: isLocalCaller(request.socket.remoteAddress, request.headers),
        signed_in: person !== null,
        ...(person ? { subject: person.subject, tenant: person.tenant, roles: rolesOf(person.grants) } : {}),
      };
    });
    refuseOtherMethods(scope, '/console/me', ['GET']);
    refuseOtherMethods(scope, '/console/chart.json', ['GET']);

    scope.route({
      method: 'GET',
      url: '/console/live',
      handler: async (request, reply) =>
        sendError(request, reply, new ProxyError('upgrade_required', 'GET /console/live is a WebSocket endpoint: the console page connects to it.')),
      // Every caller that gets this far is on this machine: transcripts and the admin actions
      // are theirs, unless an admin key guards them, as it guards the admin routes; then the
      // page must send it (?key=, typed by the person).
      wsHandler: async (socket, request) => {
        const common = { keys: ctx.access.keysRequired, adminKey: ctx.access.adminKeySet };
        // A signed-in person sees the sessions their roles reach, and reads what they may.
        const signed = await consolePrincipal(ctx.access, request);
        const person = signed === 'cross-site' ? null : signed;
        // Opening a transcript in the page is reading it: the audit trail records who and which.
        const onRead = (id: string) =>
          void ctx.audit.record(request, { action: 'transcript.read', tenant: tenantOfSession(id), target: { type: 'session', id: sessionName(id) }, details: { via: 'console' } });
        if (person) {
          request.actor = person;
          return feed.attach(socket, {
            ...common,
            onRead,
            admin: holds(person, 'operator', person.tenant),
            sees: (id) => holds(person, 'viewer', tenantOfSession(id)),
            reads: (id) => holds(person, 'operator', tenantOfSession(id)),
          });
        }
        if (!isLocalCaller(request.socket.remoteAddress, request.headers)) {
          socket.send(JSON.stringify({ type: 'error', code: 'invalid_api_key', message: 'Sign in first: open the console and choose Sign in.' }));
          socket.close(1008, 'sign in');
          return undefined;
        }
        const admin = !ctx.access.adminKeySet || ctx.access.isAdmin(presentedKey(request));
        request.actor = ctx.access.adminKeySet ? OPERATOR_KEY : LOCAL_CALLER;
        return feed.attach(socket, { ...common, admin, ...(admin ? { onRead } : {}) });
      },
    });
    if (signIn) signInRoutes(scope, ctx, signIn);
  });
}

/** Registered once on the app: `await app.register(consoleRoutes, { ctx })`. */
export const consoleRoutes = fp(consolePlugin, { name: 'motive-console', fastify: '5.x' });
