/**
 * One webhook delivery over HTTP(S): a POST with a deadline, through an agent that refuses to
 * connect to private, loopback, link-local and reserved addresses (request-filtering-agent checks
 * the address actually connected to, so DNS rebinding does not get round it) unless the operator
 * allows those networks. Redirects are followed only to the same origin (307/308, which keep the
 * POST), at most three; any other redirect is a failed attempt that says where it pointed.
 */
import http from 'node:http';
import https from 'node:https';
import { RequestFilteringHttpAgent, RequestFilteringHttpsAgent } from 'request-filtering-agent';

export interface PostOptions {
  readonly timeoutMs: number;
  /** CIDRs (or addresses) the guard lets through: `127.0.0.1/32`, `10.0.0.0/8`. */
  readonly allowNetworks: readonly string[];
  /** No guard at all (WEBHOOK_ALLOW_NETWORKS=*). */
  readonly unguarded: boolean;
}

export interface PostResult {
  readonly status: number | null;
  readonly ms: number;
  readonly error: string | null;
  /** Retry-After, in ms from now, when the receiver sent one. */
  readonly retryAfterMs: number | null;
  /** The first bytes of the receiver's answer (for the console). */
  readonly answer: string;
}

const MAX_REDIRECTS = 3;
const ANSWER_BYTES = 512;

export class WebhookClient {
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(private readonly options: PostOptions) {
    const guard = { allowIPAddressList: [...options.allowNetworks], keepAlive: true, maxSockets: 8 };
    this.httpAgent = options.unguarded ? new http.Agent({ keepAlive: true, maxSockets: 8 }) : new RequestFilteringHttpAgent(guard);
    this.httpsAgent = options.unguarded ? new https.Agent({ keepAlive: true, maxSockets: 8 }) : new RequestFilteringHttpsAgent(guard);
  }

  async post(url: string, headers: Record<string, string>, body: string): Promise<PostResult> {
    const started = performance.now();
    let target = new URL(url);
    for (let hop = 0; ; hop++) {
      const result = await this.once(target, headers, body, started);
      if (!('location' in result)) return result;
      let next: URL;
      try {
        next = new URL(result.location, target);
      } catch {
        return { status: result.status, ms: elapsed(started), error: 'redirected to an unreadable Location: webhooks do not follow it', retryAfterMs: null, answer: '' };
      }
      if (next.origin !== target.origin || (result.status !== 307 && result.status !== 308) || hop >= MAX_REDIRECTS) {
        const why = next.origin !== target.origin ? 'to another origin' : hop >= MAX_REDIRECTS ? 'more than three times' : 'with a method change';
        return { status: result.status, ms: elapsed(started), error: `redirected ${why} (${next.origin}${next.pathname}): webhooks do not follow it`, retryAfterMs: null, answer: '' };
      }
      target = next;
    }
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private once(url: URL, headers: Record<string, string>, body: string, started: number): Promise<PostResult | { status: number; location: string }> {
    const secure = url.protocol === 'https:';
    const transport = secure ? https : http;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (result: PostResult | { status: number; location: string }): void => {
        if (settled) return;
        settled = true;
        resolve(result);
      };
      const request = transport.request(
        url,
        {
          method: 'POST',
          agent: secure ? this.httpsAgent : this.httpAgent,
          headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
          timeout: this.options.timeoutMs,
        },
        (response) => {
          const status = response.statusCode ?? 0;
          const location = response.headers.location;
          if (status >= 300 && status < 400 && location) {
            response.resume();
            finish({ status, location });
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            if (size < ANSWER_BYTES) chunks.push(chunk);
            size += chunk.length;
          });
          response.on('error', () => undefined);
          response.on('end', () => {
            const answer = Buffer.concat(chunks).subarray(0, ANSWER_BYTES).toString('utf8');
            const ok = status >= 200 && status < 300;
            finish({
              status,
              ms: elapsed(started),
              error: ok ? null : `the receiver answered ${status}`,
              retryAfterMs: retryAfter(response.headers['retry-after']),
              answer,
            });
          });
        },
      );
      const deadline = setTimeout(() => {
        request.destroy(new Error(`no answer within ${this.options.timeoutMs} ms`));
      }, this.options.timeoutMs);
      request.on('timeout', () => request.destroy(new Error(`no answer within ${this.options.timeoutMs} ms`)));
      request.on('error', (err) => finish({ status: null, ms: elapsed(started), error: describe(err), retryAfterMs: null, answer: '' }));
      request.on('close', () => clearTimeout(deadline));
      request.end(body);
    });
  }
}

const elapsed = (started: number): number => Math.round(performance.now() - started);

function describe(err: Error & { code?: string }): string {
  // request-filtering-agent's refusal names the address and why it is not allowed.
  // (Without naming the address: a test event must not become a way to resolve internal names.)
  if (/is not allowed/.test(err.message)) return 'blocked: the address is private, loopback, link-local or reserved (WEBHOOK_ALLOW_NETWORKS can allow it)';
  return err.code ? `${err.code}: ${err.message}` : err.message;
}

/** Retry-After as seconds or an HTTP date, in ms from now; null when absent or unreadable. */
export function retryAfter(value: string | string[] | undefined, now = Date.now()): number | null {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return null;
  if (/^\s*\d+\s*$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
