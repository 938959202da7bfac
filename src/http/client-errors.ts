/**
 * Requests Node's HTTP parser refuses before any route sees them (a malformed request, headers
 * too large, a body that does not match its framing, data sent after the client's own
 * `Connection: close`, a client too slow to send its request): answered in the contract's error
 * shape and logged, never Fastify's bare `Client Error`.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../telemetry/logger.js';
import { openAIErrorBody } from '../protocols/openai-chat.js';
import { ProxyError } from '../protocols/errors.js';
import { stopLingering } from './linger.js';

/** What the parser's error codes mean, for the client that caused them. */
function explain(code: string | undefined): ProxyError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new ProxyError('headers_too_large', 'The request headers are larger than the proxy accepts (16 KB in all).');
    case 'HPE_CLOSED_CONNECTION':
      return new ProxyError(
        'bad_request',
        'A request arrived on a connection whose previous request asked to close it (Connection: close); send each such request on a new connection.',
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ProxyError('request_timeout', 'The request was not sent in full in time (BODY_TIMEOUT_SECONDS / HEADERS_TIMEOUT_SECONDS).');
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_CONTENT_LENGTH':
      return new ProxyError('bad_request', 'The request has an invalid or conflicting Content-Length.');
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return new ProxyError('bad_request', 'The request has both Content-Length and Transfer-Encoding, or a Transfer-Encoding that does not end with chunked.');
    case 'HPE_INVALID_EOF_STATE':
      return new ProxyError('bad_request', 'The connection was closed before the request was sent in full.');
    default:
      return new ProxyError('bad_request', `The request is not valid HTTP/1.1 (${code ?? 'unreadable'}).`);
  }
}

/** The same request on a new connection succeeds, so that one error invites a retry. */
const retryHint = (code: string | undefined, error: ProxyError): Record<string, string> => (code === 'HPE_CLOSED_CONNECTION' ? {} : error.headers());

/** Writes a whole error response on a socket that no route answers, then closes it. */
export function answerOnSocket(socket: Socket, error: ProxyError, body: unknown = openAIErrorBody(error), headers: Record<string, string> = error.headers()): void {
  if (socket.writable) {
    const json = JSON.stringify(body);
    const lines = Object.entries({ 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(json)), connection: 'close', ...headers })
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.end(`HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\n${lines}\r\n${json}`);
  }
  socket.destroySoon();
}

export function clientErrorHandler(logger: Logger) {
  return (err: Error & { code?: string }, socket: Socket): void => {
    // A reset connection has nobody left to answer; a 413's drain (src/http/linger.ts) has
    // answered already, and a malformed or overdue rest ends it.
    if (stopLingering(socket) || err.code === 'ECONNRESET' || socket.destroyed) return;
    const error = explain(err.code);
    logger.info({ err_code: err.code, status: error.status, remote_address: socket.remoteAddress }, 'client error: request refused before routing');
    answerOnSocket(socket, error, openAIErrorBody(error), retryHint(err.code, error));
  };
}
