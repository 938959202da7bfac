/**
 * How the HTTP layer answers what went wrong, in one place: any thrown value becomes a contract
 * error, rendered in the error shape of the route's protocol (or, for a URL no route matched,
 * of the protocol its prefix belongs to); a known route answers other methods with 405.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ProtocolAdapter } from '../protocols/adapter.js';
import { ProxyError } from '../protocols/errors.js';
import { PROTOCOLS } from '../protocols/index.js';
import { openAIChat } from '../protocols/openai-chat.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The wire format whose error shape this route answers in. */
    protocol?: ProtocolAdapter;
  }
}

/** Maps whatever was thrown to a contract error. */
export function toProxyError(err: unknown, maxBytes: number): ProxyError {
  if (err instanceof ProxyError) return err;
  const e = err as FastifyError;
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ProxyError('unsupported_media_type', 'The request body must be JSON, sent with Content-Type: application/json.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ProxyError('payload_too_large', `The request body is larger than MAX_MESSAGE_BYTES (${maxBytes} bytes).`);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ProxyError('invalid_json', 'The request body does not match its Content-Length.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ProxyError('invalid_json', 'The request body is empty; send a JSON object.');
  }
  if (e.statusCode === 400) return new ProxyError('invalid_json', e.message);
  return new ProxyError('internal_error', 'The proxy failed to handle this request; see its log.');
}

/** The protocol whose error shape a request gets when no route matched it: by URL prefix. */
export function protocolOfUrl(url: string): ProtocolAdapter {
  for (const adapter of PROTOCOLS) {
    if (adapter.pathPrefixes?.some((prefix) => url.startsWith(prefix))) return adapter;
  }
  return openAIChat;
}

export function sendError(request: FastifyRequest, reply: FastifyReply, error: ProxyError): FastifyReply {
  const adapter = request.routeOptions.config?.protocol ?? protocolOfUrl(request.url);
  return reply.code(error.status).headers(error.headers()).headers(requestIdHeaders(adapter, request.id)).send(adapter.renderError(error, request.id));
}

/**
 * The request's id on an error, where the real APIs put theirs, so that the SDKs show it
 * (`err.request_id` / `requestID`: OpenAI's `x-request-id`, Anthropic's `request-id`) and a
 * user can find the proxy's log lines for it, which carry the same id.
 */
export function requestIdHeaders(adapter: ProtocolAdapter, id: string): Record<string, string> {
  return adapter.name === 'anthropic' ? { 'x-request-id': id, 'request-id': id } : { 'x-request-id': id };
}

// OPTIONS is refused too until CORS is configured (then the CORS plugin answers preflights).
// CONNECT never reaches a route (see the 'connect' listener in buildApp).
const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'] as const;

/** Answers 405 (with Allow) for every method a known route does not take. */
export function refuseOtherMethods(
  app: FastifyInstance,
  url: string,
  allowed: readonly string[],
  protocol: ProtocolAdapter = openAIChat,
  /** The methods a particular path takes, where they differ from the route's (a wildcard route shared by two uses). */
  allowedFor?: (path: string) => readonly string[],
): void {
  const withHead = (methods: readonly string[]) => (methods.includes('GET') ? [...methods, 'HEAD'] : methods);
  const allow = withHead(allowed);
  // With CORS on, OPTIONS belongs to the CORS plugin's preflight answer.
  const cors = app.hasPlugin('@fastify/cors');
  app.route({
    method: ALL_METHODS.filter((m) => !allow.includes(m) && !(cors && m === 'OPTIONS')),
    url,
    config: { protocol },
    handler: async (request, reply) => {
      const methods = allowedFor?.(request.url.split('?')[0] ?? request.url) ?? allowed;
      reply.header('allow', withHead(methods).join(', '));
      return sendError(request, reply, new ProxyError('method_not_allowed', `${request.method} is not allowed on ${url}; use ${methods.join(' or ')}.`));
    },
  });
}
