/**
 * OpenTelemetry, for real: the service runs as a process with OTEL_EXPORTER_OTLP_ENDPOINT
 * pointing at an OTLP receiver in this test (HTTP with protobuf, the default, or JSON bodies;
 * gRPC over HTTP/2), decoded here from the wire, and a two-turn conversation through the
 * official openai SDK must arrive as request spans carrying the session's attributes, one
 * `session.transition` event per chart transition, and links between the request whose
 * message was delivered and the request that received it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { createServer as createHttp2Server, constants as h2, type Http2Server } from 'node:http2';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeTraceExport } from '../helpers/otlp-protobuf.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

type AnyValue = { stringValue?: string; intValue?: number | string; boolValue?: boolean; doubleValue?: number };
type Attr = { key: string; value: AnyValue };
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  attributes?: Attr[];
  events?: Array<{ name: string; attributes?: Attr[] }>;
  links?: Array<{ traceId: string; spanId: string; attributes?: Attr[] }>;
}

const attr = (attrs: Attr[] | undefined, key: string) => {
  const v = attrs?.find((a) => a.key === key)?.value;
  return v?.stringValue ?? v?.intValue ?? v?.boolValue;
};

let receiver: Server | Http2Server | null = null;
let child: ChildProcess | null = null;
afterEach(() => {
  receiver?.close();
  if (child?.pid && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
});

type ExportRequest = { resourceSpans: Array<{ resource: { attributes: Attr[] }; scopeSpans: Array<{ spans: OtlpSpan[] }> }> };
type Receiver = { url: string; spans: OtlpSpan[]; serviceNames: Set<string>; contentTypes: Set<string>; errors: Error[] };

function collect(into: Receiver, payload: ExportRequest): void {
  for (const rs of payload.resourceSpans) {
    into.serviceNames.add(String(attr(rs.resource.attributes, 'service.name')));
    for (const ss of rs.scopeSpans) into.spans.push(...ss.spans);
  }
}

/** An OTLP/HTTP receiver: protobuf or JSON bodies on /v1/traces. */
async function otlpReceiver(): Promise<Receiver> {
  const got: Receiver = { url: '', spans: [], serviceNames: new Set(), contentTypes: new Set(), errors: [] };
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const type = String(req.headers['content-type']);
      got.contentTypes.add(type);
      const body = Buffer.concat(chunks);
      if (req.url === '/v1/traces') {
        try {
          collect(got, type === 'application/x-protobuf' ? decodeTraceExport(body) : (JSON.parse(body.toString('utf8')) as ExportRequest));
        } catch (err) {
          got.errors.push(err as Error); // checked by the tests: an export this receiver cannot read
          res.writeHead(400).end();
          return;
        }
        if (type === 'application/x-protobuf') {
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
          return;
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  got.url = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
  return got;
}

/** An OTLP/gRPC receiver on plain HTTP/2: length-prefixed protobuf messages, answered with grpc-status 0. */
async function otlpGrpcReceiver(): Promise<Receiver & { paths: Set<string> }> {
  const got = { url: '', spans: [] as OtlpSpan[], serviceNames: new Set<string>(), contentTypes: new Set<string>(), errors: [] as Error[], paths: new Set<string>() };
  const server = createHttp2Server();
  server.on('stream', (stream, headers) => {
    got.paths.add(String(headers[h2.HTTP2_HEADER_PATH]));
    got.contentTypes.add(String(headers[h2.HTTP2_HEADER_CONTENT_TYPE]));
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      // gRPC framing: a compressed flag (0), a 4-byte big-endian length, the message.
      try {
        for (let pos = 0; pos + 5 <= body.length; ) {
          const length = body.readUInt32BE(pos + 1);
          collect(got, decodeTraceExport(body.subarray(pos + 5, pos + 5 + length)));
          pos += 5 + length;
        }
      } catch (err) {
        got.errors.push(err as Error);
      }
      stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0])); // an empty ExportTraceServiceResponse
    });
  });
  receiver = server;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  got.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return got;
}

/** Runs the service as a process that exports its traces to `otlpUrl`; resolves with its URL. */
async function startTracedService(otlpUrl: string, env: Record<string, string> = {}): Promise<string> {
  const port = 20000 + Math.floor(Math.random() * 10000);
  child = spawn(process.execPath, [cli, '--port', String(port)], {
    detached: true,
    stdio: 'ignore',
    env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_BSP_SCHEDULE_DELAY: '50', JOURNAL_PATH: 'memory', LOG_LEVEL: 'warn', ...env },
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if ((await fetch(`${url}/health`).catch(() => null))?.ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return url;
}

const PROTOCOLS = [
  { protocol: 'http/protobuf', env: {}, contentType: 'application/x-protobuf', grpc: false }, // the default
  { protocol: 'http/json', env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, contentType: 'application/json', grpc: false },
  { protocol: 'grpc', env: { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' }, contentType: 'application/grpc', grpc: true },
] as const;

describe('OpenTelemetry traces', () => {
  it.each(PROTOCOLS)('exports request spans with session attributes, transition events and who-answered-whom links ($protocol)', async ({ env, contentType, grpc }) => {
    const otlp = grpc ? await otlpGrpcReceiver() : await otlpReceiver();
    const url = await startTracedService(otlp.url, env);
    const client = () => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k', maxRetries: 0 });
    const model = 'traced';
    const hs = client().chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }] });
    await new Promise((r) => setTimeout(r, 150));
    const b1 = client().chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }] });
    expect((await hs).choices[0]!.message.content).toBe('b1');
    const a1 = client().chat.completions.create({ model, messages: [{ role: 'user', content: 'ping' }, { role: 'assistant', content: 'b1' }, { role: 'user', content: 'a1' }] });
    expect((await b1).choices[0]!.message.content).toBe('a1');
    const b2 = client().chat.completions.create({ model, messages: [{ role: 'user', content: 'b1' }, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'b2' }] });
    expect((await a1).choices[0]!.message.content).toBe('b2');
    b2.catch(() => undefined);
    await fetch(`${url}/v1/sessions/${model}`, { method: 'DELETE' });
    process.kill(-child!.pid!, 'SIGTERM'); // graceful: the SDK flushes its spans
    await once(child!, 'exit');

    expect(otlp.errors).toEqual([]);
    expect(otlp.contentTypes).toEqual(new Set([contentType]));
    if ('paths' in otlp) expect(otlp.paths).toEqual(new Set(['/opentelemetry.proto.collector.trace.v1.TraceService/Export']));
    expect(otlp.serviceNames).toEqual(new Set(['motive-proxy']));
    const turns = otlp.spans.filter((s) => attr(s.attributes, 'session.id') === model);
    expect(turns).toHaveLength(4); // ping, b1, a1, b2
    for (const s of turns) expect(attr(s.attributes, 'protocol')).toBe('openai');
    expect(turns.map((s) => attr(s.attributes, 'session.side')).sort()).toEqual(['A', 'A', 'B', 'B']);

    const transitions = turns.flatMap((s) => (s.events ?? []).filter((e) => e.name === 'session.transition'));
    const steps = transitions.map((e) => `${attr(e.attributes, 'state.from')}->${attr(e.attributes, 'state.to')}`);
    expect(steps).toContain('EMPTY->AWAITING_PEER');
    expect(steps).toContain('AWAITING_PEER->ACTIVE');

    // B's first request delivered b1 to A's handshake: each links to the other.
    const byId = new Map(turns.map((s) => [s.spanId, s]));
    const linked = turns.flatMap((s) => (s.links ?? []).map((l) => [s, byId.get(l.spanId), attr(l.attributes, 'motiveproxy.link')] as const));
    expect(linked.filter(([, target]) => target).length).toBeGreaterThanOrEqual(6); // three deliveries, linked both ways
    for (const [from, to, kind] of linked) {
      if (!to) continue;
      expect(attr(from.attributes, 'session.side')).not.toBe(attr(to.attributes, 'session.side'));
      expect(['delivered_to', 'answered_by']).toContain(kind);
    }
  }, 30_000);
  it('continues the caller\'s trace from a W3C traceparent, with the HTTP attributes of a server span', async () => {
    const otlp = await otlpReceiver();
    const url = await startTracedService(otlp.url);
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentSpanId = '00f067aa0ba902b7';
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${parentSpanId}-01`, 'user-agent': 'tracing-test/1.0' },
      body: JSON.stringify({ model: 'traced-child|A', messages: [{ role: 'user', content: 'ping' }] }),
      signal: AbortSignal.timeout(300),
    }).catch((err: Error) => err);
    expect(res).toBeInstanceOf(Error); // the handshake is held; the client gives up
    await fetch(`${url}/v1/models`, { headers: { 'x-request': 'untraced' } });
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-child!.pid!, 'SIGTERM');
    await once(child!, 'exit');

    expect(otlp.errors).toEqual([]);
    const handshake = otlp.spans.find((s) => attr(s.attributes, 'session.id') === 'traced-child');
    expect(handshake).toMatchObject({ traceId, parentSpanId, name: 'POST /v1/chat/completions', kind: 2 }); // 2: SERVER
    expect(attr(handshake!.attributes, 'http.request.method')).toBe('POST');
    expect(attr(handshake!.attributes, 'http.route')).toBe('/v1/chat/completions');
    expect(attr(handshake!.attributes, 'user_agent.original')).toBe('tracing-test/1.0');
    expect(attr(handshake!.attributes, 'error.type')).toBe('client_aborted');
    // A request without traceparent starts its own trace.
    const models = otlp.spans.find((s) => s.name === 'GET /v1/models');
    expect(models).toBeDefined();
    expect(models!.traceId).not.toBe(traceId);
    expect(models!.parentSpanId ?? '').toBe('');
    expect(Number(attr(models!.attributes, 'http.response.status_code'))).toBe(200);
  }, 30_000);

  it('refuses an OTLP protocol it does not know, at start, with a usage error', async () => {
    const proc = spawn(process.execPath, [cli, '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/xml', JOURNAL_PATH: 'memory', LOG_LEVEL: 'warn' },
    });
    let stderr = '';
    proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const [code] = (await once(proc, 'exit')) as [number];
    expect(code).toBe(2);
    expect(stderr).toContain('OTEL_EXPORTER_OTLP_PROTOCOL must be one of http/protobuf, http/json, grpc (got "http/xml")');
  }, 30_000);
});
