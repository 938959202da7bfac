/**
 * docs/events.md stays true: a real service makes every event of the catalogue happen (a
 * conversation with the official OpenAI SDK, a request that times out, a session that expires,
 * keys and tenants' limits managed through the admin API, an endpoint that answers 410, a test
 * event), real receivers take them, and each body received must have exactly the fields (the
 * same keys, with values of the same JSON types) as the example the document gives for its type.
 * An endpoint without `include_content` must get the same body less `content` and `handshake`.
 *
 * DUMP_EVENT_EXAMPLES=1 prints one body of each type, to write the document's examples from.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../../src/events/catalogue.js';
import type { Service } from '../../src/server.js';
import { useReceivers, verify, type Received } from '../helpers/webhook-receiver.js';
import { call, useServices } from '../security/support.js';
import { converse, until } from './support.js';

const ADMIN = 'admin-key-for-the-event-docs';
const services = useServices(ADMIN);
const receiver = useReceivers();

async function admin(service: Service, method: string, path: string, body?: unknown, expected = 200) {
  const answer = await call(service.url, method, path, ADMIN, body);
  expect(answer.status, `${method} ${path}: ${answer.text}`).toBe(expected);
  return answer.body;
}

const held = (service: Service, model: string, side: 'A' | 'B') => service.ctx.sessions.get(model)?.context.sides[side].held != null;
const user = (content: string) => ({ role: 'user' as const, content });

/** B speaks first and A never answers: B's request times out (408), then the idle session expires. */
async function leaveIdle(service: Service, model: string): Promise<void> {
  const sdk = (key: string) => new OpenAI({ baseURL: `${service.url}/v1`, apiKey: key, maxRetries: 0 });
  const handshake = sdk('key-a').chat.completions.create({ model, messages: [user('ping')] });
  await until(() => held(service, model, 'A'), 'A is held');
  const bFirst = sdk('key-b').chat.completions.create({ model, messages: [user('Anyone there?')] });
  await handshake;
  await expect(bFirst).rejects.toMatchObject({ status: 408 });
}

/** JSON type of a value, as the comparison sees it. */
const kind = (value: unknown): string => (value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value);

/** `path: type` for every field, nested objects' fields included. */
function shape(value: unknown, path = ''): string[] {
  if (kind(value) !== 'object') return [`${path || '.'}: ${kind(value)}`];
  const entries = Object.entries(value as Record<string, unknown>);
  return entries.flatMap(([key, inner]) => (kind(inner) === 'object' ? [`${path}${key}: object`, ...shape(inner, `${path}${key}.`)] : [`${path}${key}: ${kind(inner)}`])).sort();
}

const CONTENT_FIELDS = ['content', 'handshake'];

/** The example body under each event type's heading (`### \`type\``) in docs/events.md. */
function documentedExamples(): Map<string, any> {
  const text = readFileSync(fileURLToPath(new URL('../../docs/events.md', import.meta.url)), 'utf8');
  const examples = new Map<string, any>();
  for (const heading of text.matchAll(/^### `([a-z_.]+)`\s*$/gm)) {
    // The type's section runs to the next heading of its level or above.
    const rest = text.slice(heading.index! + heading[0].length);
    const end = rest.search(/^#{1,3} /m);
    const section = end === -1 ? rest : rest.slice(0, end);
    const block = /^```json\n([\s\S]*?)^```/m.exec(section);
    expect(block, `docs/events.md: no JSON example under ${heading[1]}`).not.toBeNull();
    expect(examples.has(heading[1]!), `docs/events.md: ${heading[1]} twice`).toBe(false);
    examples.set(heading[1]!, JSON.parse(block![1]!));
  }
  return examples;
}

describe('docs/events.md', () => {
  it('gives, for every event type, an example with exactly the fields the service sends', async () => {
    const examples = documentedExamples();
    expect([...examples.keys()].sort()).toEqual([...EVENT_TYPES].sort());

    // A turn times out after 1 s and an idle session expires after 2 s; a busy machine's event
    // loop must not make the service answer 503 to the test's own requests.
    const service = await services.start({
      requireApiKey: 'false',
      webhookAllowNetworks: '127.0.0.1/32',
      turnTimeoutSeconds: '1',
      sessionTtlSeconds: '2',
      maxEventLoopDelayMs: '0',
    });
    const full = await receiver();
    const plain = await receiver();
    const gone = await receiver();
    gone.answer = () => ({ status: 410 });
    const fullEp = await admin(service, 'POST', '/admin/webhooks', { url: full.url, include_content: true, description: 'everything, with content' }, 201);
    const plainEp = await admin(service, 'POST', '/admin/webhooks', { url: plain.url, types: ['*'] }, 201);
    const goneEp = await admin(service, 'POST', '/admin/webhooks', { url: gone.url, types: ['key.created'] }, 201);

    await converse([service.url], ADMIN, 'npc-guard');
    await leaveIdle(service, 'npc-idle');

    const key = await admin(service, 'POST', '/admin/keys', { name: 'tavern-bot', tenant: 'studio-a', scopes: ['client'] }, 201);
    await admin(service, 'POST', `/admin/keys/${key.id}/rotate`, { overlap_seconds: 600 });
    await admin(service, 'DELETE', `/admin/keys/${key.id}`);
    await admin(service, 'PUT', '/admin/tenants/studio-a', { limits: { requests_per_minute: 120, max_live_sessions: 20 } });
    await admin(service, 'DELETE', '/admin/tenants/studio-a');
    await until(() => service.ctx.events.endpoints.get(goneEp.id)?.disabled != null, 'the endpoint answering 410 is disabled');
    for (const ep of [fullEp, plainEp]) await admin(service, 'POST', `/admin/webhooks/${ep.id}/test`);

    const everyType = (r: Received[]) => EVENT_TYPES.every((type) => r.some((x) => x.event?.type === type));
    for (const r of [full, plain]) await until(() => everyType(r.received), `every type reached ${r.url}: ${r.received.map((x) => x.event?.type).join(', ')}`, 15_000);

    if (process.env.DUMP_EVENT_EXAMPLES) {
      for (const type of EVENT_TYPES) console.log(`### ${type}\n${JSON.stringify(full.received.find((x) => x.event.type === type)!.event, null, 2)}`);
    }

    for (const [r, ep, withContent] of [[full, fullEp, true], [plain, plainEp, false]] as const) {
      for (const request of r.received) {
        verify(ep.secret, request);
        expect(request.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
        expect(request.headers['webhook-id']).toBe(request.event.id);
        const example = structuredClone(examples.get(request.event.type));
        expect(example, `docs/events.md has no example of ${request.event.type}`).toBeDefined();
        if (!withContent) for (const field of CONTENT_FIELDS) delete example.data[field];
        expect(shape(request.event), `${request.event.type} ${withContent ? 'with' : 'without'} content, as docs/events.md shows it`).toEqual(shape(example));
      }
    }
    // The types the examples show are the types, and their sources and schemas are the service's.
    for (const [type, example] of examples) {
      const sent = full.received.find((x) => x.event.type === type)!.event;
      expect(example.type).toBe(type);
      expect([example.source, example.dataschema, example.specversion], type).toEqual([sent.source, sent.dataschema, sent.specversion]);
    }
  });
});
