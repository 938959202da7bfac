/**
 * Errors as values: a code from PROTOCOL.md §7 and a message that names what was wrong.
 * Each protocol adapter renders them in its own wire shape.
 */

export const ERROR_STATUS = {
  invalid_json: 400,
  bad_request: 400,
  invalid_api_key: 401,
  session_forbidden: 403,
  admin_only: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  handshake_timeout: 408,
  turn_timeout: 408,
  session_conflict: 409,
  superseded: 409,
  preview_withdrawn: 409,
  key_not_active: 409,
  endpoint_disabled: 409,
  session_closed: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  invalid_request: 422,
  headers_too_large: 431,
  upgrade_required: 426,
  rate_limited: 429,
  queue_full: 429,
  internal_error: 500,
  max_sessions: 503,
  shutting_down: 503,
  overloaded: 503,
  journal_unavailable: 503,
  session_moved: 503,
  cluster_unavailable: 503,
  auth_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** Statuses a retry cannot mend: the official SDKs honour `x-should-retry: false`. */
const NOT_RETRYABLE = new Set<number>([400, 401, 403, 409, 410, 413, 415, 422, 431]);

export class ProxyError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly options: { param?: string | null; retryAfterSeconds?: number; allow?: string } = {},
  ) {
    super(message);
    this.name = 'ProxyError';
    this.status = ERROR_STATUS[code];
  }

  get retryable(): boolean {
    return !NOT_RETRYABLE.has(this.status);
  }

  /** Headers every protocol sends with this error. */
  headers(): Record<string, string> {
    const headers: Record<string, string> = {};
    if (!this.retryable) headers['x-should-retry'] = 'false';
    // A rate limit passes: the SDKs that read x-should-retry retry it after Retry-After.
    if (this.code === 'rate_limited') headers['x-should-retry'] = 'true';
    if (this.options.retryAfterSeconds !== undefined) headers['retry-after'] = String(this.options.retryAfterSeconds);
    if (this.options.allow !== undefined) headers['allow'] = this.options.allow;
    return headers;
  }
}

/** Messages for the codes a held request can end with. */
export const WAIT_ENDED: Record<string, string> = {
  superseded: 'This request was superseded by a newer request from the same side of the session (a retry or a new turn).',
  handshake_timeout: 'No peer joined the session before the handshake timeout. Retry the same request to keep waiting; nothing is lost.',
  turn_timeout: 'The other side did not answer before the turn timeout. Retry the same request to keep waiting; nothing is lost.',
  session_closed: 'The session was closed while this request was waiting.',
  shutting_down: 'The proxy is shutting down. Retry shortly; with a durable journal the retry re-attaches.',
  journal_unavailable: 'The event journal could not record this turn, so its answer is withheld. Retry; the session keeps it.',
  session_moved: 'Another instance of the cluster runs this session now. Retry the same request: it re-attaches there, and nothing is lost.',
};
