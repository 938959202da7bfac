/**
 * Web pages in the user's own browser are callers too. Browsers apply no CORS to WebSockets, so
 * a page of any site may open one to 127.0.0.1 and read it; and a site may point its own name at
 * 127.0.0.1 (DNS rebinding) to make its requests same-origin. The Origin header names the site
 * of the page that opened a connection, and the Host header the name the browser resolved:
 * these checks read them. Clients that are not browsers send no Origin.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** localhost (and its subdomains, which browsers resolve to loopback themselves), 127.x.y.z, [::1]. */
const LOOPBACK_NAME = /^(?:localhost|(?:[a-z0-9-]+\.)*localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i;

/** Is the Host header (with any port) a loopback name? */
export function isLoopbackName(host: string | undefined): boolean {
  return host !== undefined && LOOPBACK_NAME.test(host.replace(/:\d+$/, ''));
}

/** Is `origin` the origin of the service the Host header names (same host and port)? */
export function isOwnOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const url = new URL(origin);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.host === host.toLowerCase();
  } catch {
    return false; // "null" (a sandboxed page, a file) and anything else that is not a URL
  }
}

export interface BrowserRule {
  /** Refuse a Host header that is not a loopback name (the service listens on loopback). */
  readonly loopbackHost: boolean;
  /** Origins allowed besides the service's own, as CORS_ORIGINS lists them ('*': any). */
  readonly origins: string;
}

/** Why a request breaks the rule, or null when it does not. */
export function browserRefusal(headers: IncomingHttpHeaders, rule: BrowserRule): string | null {
  const { host, origin } = headers;
  if (rule.loopbackHost && !isLoopbackName(host)) {
    return `The Host header must name this machine (localhost, 127.0.0.1 or [::1]); '${String(host ?? '').slice(0, 100)}' does not (DNS rebinding).`;
  }
  if (origin === undefined || isOwnOrigin(origin, host)) return null;
  const listed = rule.origins.split(',').map((o) => o.trim());
  if (listed.includes('*') || listed.includes(origin)) return null;
  return `Connections from pages of other sites are refused: origin '${origin.slice(0, 200)}' is neither this service's own nor listed in CORS_ORIGINS.`;
}
