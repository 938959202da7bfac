import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SIDES } from '../../../machines/session.logic.js';
import { splitModel, type JoinableSession, type ModelRoutes, type ProtocolAdapter, type WireRequest } from '../../protocols/adapter.js';
import { ProxyError } from '../../protocols/errors.js';
import { PROTOCOLS } from '../../protocols/index.js';
import type { Session } from '../../sessions/session.js';
import { refuseOtherMethods, requestIdHeaders } from '../errors.js';
import { scopedId, sessionName, tenantOfRequest, tenantOfSession } from '../../auth/tenants.js';
import type { AppContext } from '../context.js';

type WithModels = ProtocolAdapter & { readonly models: ModelRoutes };

/** A URL's query string, `?` included (a Gemini client's `?key=` goes along to the other instances). */
const queryOf = (url: string): string => (url.includes('?') ? url.slice(url.indexOf('?')) : '');

/**
 * Model routes: lists (OpenAI's and Anthropic's /v1/models, Gemini's /v1beta/models, Ollama's
 * /api/tags) name the sessions a client could join now, so a chat UI's model picker can join
 * one; retrieving one model (/v1/models/{id}, /v1beta/models/{id}, POST /api/show) answers for
 * any id, since every id names a session (one not in use yet starts on first request).
 *
 * A session is listed while it waits for its peer and a side is waiting or listening now, or
 * was active within MODEL_LIST_WINDOW_SECONDS: a session whose client left long ago is not
 * offered. With API keys, a caller sees only sessions a side of which joined with its key.
 */
export async function modelRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  const windowMs = ctx.config.modelListWindowSeconds * 1000;
  // A caller sees its own tenant's sessions only, and with keys, only those a side of which it joined.
  const visibleTo = (session: Session, client: string | null, tenant: string | null): boolean =>
    tenantOfSession(session.id) === tenant && (client === null || SIDES.some((side) => session.context.sides[side].client === client));
  const startedAt = (session: Session): number => session.context.transcript[0]?.at ?? ctx.startedAt;

  const joinable = (client: string | null, tenant: string | null): JoinableSession[] => {
    const now = Date.now();
    const list: JoinableSession[] = [];
    for (const session of ctx.sessions.list()) {
      if (session.state !== 'AWAITING_PEER' || !visibleTo(session, client, tenant)) continue;
      const { sides, lastActivityAt } = session.context;
      const waiting = sides.A.held !== null || sides.B.held !== null;
      if (!waiting && (lastActivityAt === null || now - lastActivityAt > windowMs)) continue;
      list.push({ id: sessionName(session.id), createdAt: startedAt(session) });
    }
    return list;
  };

  const describe = (id: string, client: string | null, tenant: string | null): JoinableSession => {
    const session = ctx.sessions.get(scopedId(tenant, splitModel(id).sessionId));
    const known = session !== undefined && !session.closed && visibleTo(session, client, tenant);
    return { id, createdAt: known ? startedAt(session) : Date.now() };
  };

  // Which adapter answers a request on a route two protocols share: the one whose header it carries.
  const fallbackOf = (adapters: readonly WithModels[]): WithModels => adapters.find((a) => a.models.header === undefined) ?? adapters[0]!;
  const pick = (adapters: readonly WithModels[], request: FastifyRequest): WithModels =>
    adapters.find((a) => a.models.header !== undefined && request.headers[a.models.header] !== undefined) ?? fallbackOf(adapters);
  const answerError = (reply: FastifyReply, adapter: ProtocolAdapter, err: unknown): FastifyReply => {
    if (!(err instanceof ProxyError)) throw err;
    return reply.code(err.status).headers(err.headers()).headers(requestIdHeaders(adapter, reply.request.id)).send(adapter.renderError(err, reply.request.id));
  };

  const withModels = PROTOCOLS.filter((a): a is WithModels => a.models !== undefined);
  const chatUrls = new Set(PROTOCOLS.flatMap((a) => a.routes));

  /**
   * Cluster mode: the sessions every instance could offer (each runs its own share), merged;
   * one instance's own share answers `GET /cluster/joinable`, which the others ask.
   */
  const joinableEverywhere = async (request: FastifyRequest): Promise<JoinableSession[]> => {
    const list = joinable(request.client.key, tenantOfRequest(request));
    if (!ctx.cluster) return list;
    const seen = new Set(list.map((s) => s.id));
    for (const answer of await ctx.cluster.askOthers<{ data?: JoinableSession[] }>(request, `/cluster/joinable${queryOf(request.url)}`)) {
      for (const session of answer.data ?? []) {
        if (typeof session?.id !== 'string' || seen.has(session.id)) continue;
        seen.add(session.id);
        list.push({ id: session.id, createdAt: Number(session.createdAt) || Date.now() });
      }
    }
    return list.sort((a, b) => a.createdAt - b.createdAt);
  };
  if (ctx.cluster) {
    app.get('/cluster/joinable', async (request) => ({ object: 'list', instance: ctx.cluster!.instanceId, data: joinable(request.client.key, tenantOfRequest(request)) }));
    refuseOtherMethods(app, '/cluster/joinable', ['GET']);
  }

  for (const [route, adapters] of groupBy(withModels, (a) => a.models.route)) {
    app.get(route, { config: { protocol: fallbackOf(adapters) } }, async (request) =>
      pick(adapters, request).models.render(await joinableEverywhere(request)),
    );
    refuseOtherMethods(app, route, ['GET'], adapters[0]);
  }

  const retrievers = withModels.filter((a) => a.models.retrieve !== undefined);
  for (const adapters of groupBy(retrievers, (a) => `${a.models.retrieve!.method} ${a.models.retrieve!.route}`).values()) {
    const { method, route } = adapters[0]!.models.retrieve!;
    const fallback = fallbackOf(adapters);
    app.route({
      method,
      url: route,
      config: { protocol: fallback },
      handler: async (request, reply) => {
        const adapter = pick(adapters, request);
        const retrieve = adapter.models.retrieve!;
        const wire: WireRequest = {
          body: request.body,
          headers: request.headers,
          params: request.params as Record<string, string | undefined>,
          query: request.query as Record<string, unknown>,
        };
        try {
          return retrieve.render(describe(retrieve.sessionOf(wire), request.client.key, tenantOfRequest(request)));
        } catch (err) {
          return answerError(reply, adapter, err);
        }
      },
    });
    // A chat route on the same path (Gemini's) refuses the other methods itself.
    if (!chatUrls.has(route)) refuseOtherMethods(app, route, [method], fallback);
  }
}

function groupBy<T>(items: readonly T[], keyOf: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    groups.set(key, [...(groups.get(key) ?? []), item]);
  }
  return groups;
}
