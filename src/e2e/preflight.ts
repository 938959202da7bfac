/**
 * Before anything runs against a proxy the user names (--url): is a MotiveProxy answering
 * there, and what are its timers? A plainly broken target (nothing listening, an error for
 * everything, a server that never answers) is refused within seconds, with the reason,
 * instead of every scenario waiting out its timeout.
 */
import type { ProxyTimers } from './types.js';

/** How long each preflight request may take. */
export const PREFLIGHT_TIMEOUT_MS = 4000;

export const UNKNOWN_TIMERS: ProxyTimers = {
  keepaliveIntervalSeconds: null,
  handshakeTimeoutSeconds: null,
  turnTimeoutSeconds: null,
  streamTurnTimeoutSeconds: null,
  source: 'unknown',
};

type Answer = { readonly status: number; readonly body: unknown } | { readonly status: null; readonly problem: string };

/** Why a request got no HTTP answer, in words a user can act on. */
export function connectionProblem(err: unknown, url: string, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within ${timeoutMs / 1000} s (something accepts the connection but does not respond)`;
  const { host } = new URL(url);
  switch (e?.cause?.code) {
    case 'ECONNREFUSED':
      return `connection refused: nothing listens on ${host}`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host of ${host} is not found`;
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
      return 'the connection was closed without an answer';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${host} cannot be reached`;
    default:
      return `${e?.message ?? String(err)}${e?.cause ? ` (${e.cause.code ?? e.cause.message})` : ''}`;
  }
}

async function ask(url: string, apiKey: string, timeoutMs: number): Promise<Answer> {
  try {
    const signal = AbortSignal.timeout(timeoutMs);
    const res = await fetch(url, { headers: { authorization: `Bearer ${apiKey}` }, signal });
    const text = await res.text();
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = text.slice(0, 200);
    }
    return { status: res.status, body };
  } catch (err) {
    return { status: null, problem: connectionProblem(err, url, timeoutMs) };
  }
}

const seconds = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : null);

/** The timers a MotiveProxy reports under `settings` in GET /health (null: it reports none). */
export function timersOfHealth(body: unknown): ProxyTimers | null {
  const settings = (body as { settings?: Record<string, unknown> } | null)?.settings;
  if (!settings || typeof settings !== 'object') return null;
  return {
    keepaliveIntervalSeconds: seconds(settings['keepalive_interval_seconds']),
    handshakeTimeoutSeconds: seconds(settings['handshake_timeout_seconds']),
    turnTimeoutSeconds: seconds(settings['turn_timeout_seconds']),
    streamTurnTimeoutSeconds: seconds(settings['stream_turn_timeout_seconds']),
    source: 'health',
  };
}

export type Preflight = { readonly ok: true; readonly timers: ProxyTimers; readonly notes: readonly string[] } | { readonly ok: false; readonly reason: string };

const answered = (what: string, a: Answer): string => (a.status === null ? `${what}: ${a.problem}` : `${what} answered ${a.status}`);

/**
 * Asks the proxy at `url` for GET /health and GET /v1/models (what the runners poll), each
 * within `timeoutMs`. It passes when the model list answers as a MotiveProxy's does; /health
 * then gives the timers (a proxy behind a gateway that hides /health still passes, its
 * timers unknown).
 */
export async function preflight(url: string, apiKey: string, timeoutMs = PREFLIGHT_TIMEOUT_MS): Promise<Preflight> {
  const [health, models] = await Promise.all([ask(`${url}/health`, apiKey, timeoutMs), ask(`${url}/v1/models`, apiKey, timeoutMs)]);
  if (health.status === null && models.status === null) {
    const hint = /connection refused/.test(health.problem) ? ' Is the proxy running (npm start)?' : '';
    return { ok: false, reason: `${url} cannot be used: GET /health: ${health.problem}.${hint}` };
  }
  if (models.status === 401 || models.status === 403) {
    return { ok: false, reason: `${url} refuses the clients' API key (GET /v1/models answered ${models.status}): pass the key the proxy expects with --api-key.` };
  }
  const list = models.status === 200 ? (models.body as { data?: unknown } | null) : null;
  if (!list || !Array.isArray(list.data)) {
    const what = models.status === 200 ? 'GET /v1/models answered 200 without a model list' : answered('GET /v1/models', models);
    return { ok: false, reason: `${url} does not answer as a MotiveProxy: ${answered('GET /health', health)}; ${what}.` };
  }
  if (health.status !== 200) {
    return { ok: true, timers: UNKNOWN_TIMERS, notes: [`${answered('GET /health', health)}: the proxy's timers are unknown`] };
  }
  const status = (health.body as { status?: unknown } | null)?.status;
  if (status === 'shutting_down') return { ok: false, reason: `${url} is shutting down (GET /health says so).` };
  return { ok: true, timers: timersOfHealth(health.body) ?? UNKNOWN_TIMERS, notes: [] };
}
