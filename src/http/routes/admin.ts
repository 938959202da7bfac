import type { FastifyInstance } from 'fastify';
import { buildTranscript, loadSessionRecords, toJson, toMarkdown } from '../../journal/transcript.js';
import { splitModel } from '../../protocols/adapter.js';
import { ProxyError } from '../../protocols/errors.js';
import { refuseOtherMethods } from '../app.js';
import type { AppContext } from '../context.js';
import { loopbackOnly } from '../loopback-only.js';

/** Routes for operators, answered to trusted callers only (every route of this plugin goes through loopbackOnly). */
export async function adminRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }): Promise<void> {
  app.addHook('onRequest', loopbackOnly);

  /** A session's conversation from the journal: JSON by default, Markdown with ?format=md. */
  app.get<{ Params: { id: string }; Querystring: { format?: string } }>('/admin/sessions/:id/transcript', async (request, reply) => {
    const { sessionId } = splitModel(request.params.id);
    request.turnLog = { session_id: sessionId };
    const format = request.query.format ?? 'json';
    if (format !== 'json' && format !== 'md') {
      throw new ProxyError('invalid_request', `format must be json or md, not '${String(format).slice(0, 50)}'.`, { param: 'format' });
    }
    const transcript = buildTranscript(await loadSessionRecords(ctx.journal.store, sessionId));
    if (!transcript) {
      throw new ProxyError('not_found', `The journal has no session '${sessionId}' (closed sessions are dropped when the journal is compacted).`, {
        param: 'id',
      });
    }
    if (format === 'json') return toJson(transcript);
    reply.type('text/markdown; charset=utf-8');
    return toMarkdown(transcript);
  });
  refuseOtherMethods(app, '/admin/sessions/:id/transcript', ['GET']);
}
