/**
 * Live inspection in Stately's inspector (INSPECT=true): a small bridge that serves a page
 * embedding the inspector UI (which the browser loads from stately.ai) and streams every
 * session actor's events to that page over a WebSocket.
 *
 * The bridge is ours rather than @statelyai/inspect/server's: that one listens on every
 * interface, asks for no key, lets any web site's page connect, and relays whatever one viewer
 * sends to all the others. The events carry what was said (a session's context holds its
 * transcript), so this one listens on the service's HOST, admits whom the admin routes admit
 * (the admin key when ADMIN_API_KEY is set, else callers on this machine only), refuses pages
 * of other sites and DNS rebinding as the console does, and only ever sends.
 */
import { createServer, STATUS_CODES, type IncomingMessage } from 'node:http';
import { isIPv6 } from 'node:net';
import { createInspector } from '@statelyai/inspect';
import { WebSocketServer, WebSocket } from 'ws';
import type { InspectionEvent } from 'xstate';
import { isLoopbackHost } from '../config.js';
import type { AccessControl } from '../http/access.js';
import { browserRefusal } from '../http/browser-guard.js';
import { isLocalCaller } from '../http/loopback-only.js';

export interface StatelyInspection {
  readonly url: string;
  /** Who may open it, for the start-up line. */
  readonly who: string;
  readonly inspect: (event: InspectionEvent) => void;
  stop(): void;
}

export interface InspectionOptions {
  /** The service's HOST: the bridge listens there too. */
  readonly host: string;
  readonly port: number;
  readonly access: AccessControl;
}

/** A page that opens late first gets this many of the latest events (as the library's bridge does). */
const RECENT_EVENTS = 200;

// The page hands each event to the inspector frame once it says it is ready, at the origin it
// said so from. It opens the stream with its own query, so ?key= reaches the WebSocket too.
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MotiveProxy · Stately inspector</title>
<style>html, body { height: 100%; margin: 0; } iframe { width: 100%; height: 100%; border: 0; }</style>
</head>
<body>
<iframe id="inspector" src="https://stately.ai/inspect" title="Stately inspector"></iframe>
<script>
  const frame = document.getElementById('inspector');
  const waiting = [];
  let target = null;
  window.addEventListener('message', (e) => {
    if (e.source !== frame.contentWindow || !e.data || e.data.type !== '@statelyai.connected') return;
    target = e.origin;
    for (const event of waiting.splice(0)) frame.contentWindow.postMessage(event, target);
  });
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/' + location.search);
  ws.onmessage = (m) => {
    const event = JSON.parse(m.data);
    if (target) frame.contentWindow.postMessage(event, target);
    else waiting.push(event);
  };
</script>
</body>
</html>
`;

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  // The page's URL may hold the admin key: it must not travel to stately.ai as a Referer.
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
};

function presentedKey(request: IncomingMessage, url: URL): string | null {
  const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization?.trim() ?? '');
  return bearer ? bearer[1]!.trim() : url.searchParams.get('key');
}

export async function startStatelyInspection({ host, port, access }: InspectionOptions): Promise<StatelyInspection> {
  // Admitted by being on this machine, a caller must also name it (DNS rebinding); admitted by
  // the key, a loopback service still insists on a loopback name, as the WebSocket side does.
  const rule = { loopbackHost: !access.adminKeySet || isLoopbackHost(host), origins: '' };

  const refusal = (request: IncomingMessage): { status: number; message: string } | null => {
    const url = new URL(request.url ?? '/', 'http://bridge');
    const browser = browserRefusal(request.headers, rule);
    if (browser) return { status: 403, message: browser };
    if (access.adminKeySet) {
      if (!access.isAdmin(presentedKey(request, url))) {
        return { status: 401, message: 'The inspector needs the admin key (ADMIN_API_KEY): open it with ?key=<admin key>, or send Authorization: Bearer <admin key>.' };
      }
    } else if (!isLocalCaller(request.socket.remoteAddress, request.headers)) {
      return { status: 404, message: 'Not found.' };
    }
    return url.pathname === '/' ? null : { status: 404, message: 'Not found.' };
  };

  const server = createServer((request, response) => {
    const refused = refusal(request);
    if (refused) {
      response.writeHead(refused.status, { 'content-type': 'text/plain; charset=utf-8' }).end(refused.message);
      return;
    }
    response.writeHead(200, PAGE_HEADERS).end(request.method === 'HEAD' ? undefined : PAGE);
  });
  // Viewers send nothing: whatever they do send is dropped, never relayed.
  const viewers = new WebSocketServer({ noServer: true, maxPayload: 4096 });
  const recent: string[] = [];
  server.on('upgrade', (request: IncomingMessage, socket, head) => {
    socket.on('error', () => socket.destroy());
    const refused = refusal(request);
    if (refused) {
      const body = Buffer.from(refused.message);
      socket.end(
        `HTTP/1.1 ${refused.status} ${STATUS_CODES[refused.status]}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${refused.message}`,
      );
      return;
    }
    viewers.handleUpgrade(request, socket, head, (ws) => {
      ws.on('error', () => ws.terminate());
      for (const data of recent) ws.send(data);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`INSPECT: cannot listen on ${host}:${port} (INSPECT_PORT): ${err.code ?? err.message}`)));
    server.listen(port, host, () => resolve());
  });

  // The library turns XState's inspection events into the inspector's; this adapter sends them.
  const inspector = createInspector({
    send(event) {
      let data: string;
      try {
        data = JSON.stringify(event);
      } catch {
        return; // a snapshot that is not JSON is left out rather than stopping the others
      }
      recent.push(data);
      if (recent.length > RECENT_EVENTS) recent.shift();
      for (const ws of viewers.clients) if (ws.readyState === WebSocket.OPEN) ws.send(data);
    },
  });

  const wildcard = host === '0.0.0.0' || host === '::';
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : isIPv6(host) ? `[${host}]` : host;
  const who = access.adminKeySet
    ? 'with the admin key: add ?key=<ADMIN_API_KEY>'
    : wildcard || isLoopbackHost(host)
      ? 'callers on this machine only; set ADMIN_API_KEY to open it from elsewhere'
      : `nobody: without ADMIN_API_KEY it answers callers on this machine only, and ${host} is not a loopback address`;
  return {
    url: `http://${shown}:${port}/`,
    who,
    inspect: (event) => inspector.inspect.next?.(event),
    stop() {
      for (const ws of viewers.clients) ws.terminate();
      viewers.close();
      server.close();
      server.closeAllConnections();
    },
  };
}
