/**
 * The admin API described in OpenAPI 3.1 (@fastify/swagger), served at GET /admin/openapi.json
 * and rendered by the console. Routes describe themselves with `adminDoc(...)`: the schemas are
 * documentation only (bodies are checked by zod in the handlers, in the contract's error shape,
 * and answers are sent as they are), and are written from the same zod schemas the handlers use.
 */
import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { z } from 'zod';

/** JSON Schema of a zod schema, as a request would send it. */
export const jsonSchemaOf = (schema: z.ZodType): Record<string, unknown> => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

const errorBody = {
  type: 'object',
  description: "The contract's error shape (OpenAI's): a message that says what was wrong, and a code.",
  properties: {
    error: {
      type: 'object',
      properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: 'string' } },
      required: ['message', 'type', 'code'],
    },
  },
};

export interface AdminDoc {
  readonly tag: 'sessions' | 'keys' | 'tenants' | 'audit' | 'webhooks' | 'bridges' | 'service';
  readonly summary: string;
  readonly description?: string;
  readonly body?: z.ZodType;
  readonly querystring?: z.ZodType;
  readonly params?: Record<string, string>;
  /** Status → description (and a JSON schema of the answer, where it helps). */
  readonly responses: Record<number, string | { description: string; schema: Record<string, unknown> }>;
}

/**
 * Route options that document a route without changing it: Fastify neither validates its input
 * nor serializes its output by these schemas.
 */
export function adminDoc(doc: AdminDoc): { schema: FastifySchema; validatorCompiler: () => () => true; serializerCompiler: () => (data: unknown) => string } {
  const response: Record<string, unknown> = {};
  for (const [status, answer] of Object.entries(doc.responses)) {
    response[status] =
      typeof answer === 'string'
        ? Number(status) >= 400
          ? { ...errorBody, description: answer }
          : { description: answer, type: 'object', additionalProperties: true }
        : { description: answer.description, ...answer.schema };
  }
  const schema: Record<string, unknown> = {
    tags: [doc.tag],
    summary: doc.summary,
    ...(doc.description ? { description: doc.description } : {}),
    security: [{ bearer: [] }],
    ...(doc.body ? { body: jsonSchemaOf(doc.body) } : {}),
    ...(doc.querystring ? { querystring: jsonSchemaOf(doc.querystring) } : {}),
    ...(doc.params
      ? {
          params: {
            type: 'object',
            properties: Object.fromEntries(Object.entries(doc.params).map(([name, description]) => [name, { type: 'string', description }])),
            required: Object.keys(doc.params),
          },
        }
      : {}),
    response,
  };
  return { schema: schema as FastifySchema, validatorCompiler: () => () => true, serializerCompiler: () => (data: unknown) => JSON.stringify(data) };
}

/** Registers the describer; call before the routes are added (it collects them as they are). */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'MotiveProxy admin API',
        version,
        description:
          'Sessions, managed API keys, tenants and the audit trail. Every route takes the admin key (ADMIN_API_KEY), or a managed key or JWT whose roles reach it, as `Authorization: Bearer`; without an admin key set, callers on the same machine are admitted. See docs/security.md.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'The admin key, a managed key (mp_…) or a JWT with an admin role' } } },
      tags: [
        { name: 'sessions', description: 'Live sessions and their transcripts' },
        { name: 'keys', description: 'Managed API keys' },
        { name: 'tenants', description: "Tenants' limits" },
        { name: 'audit', description: 'The audit trail' },
        { name: 'webhooks', description: 'Webhook endpoints, their deliveries, and the event catalogue (docs/events.md)' },
        { name: 'bridges', description: 'Bridges to email, SMS and Discord: health and conversations (docs/bridges.md)' },
        { name: 'service', description: 'The service itself' },
      ],
    },
    hideUntagged: true,
  });
}

/** The service's version, from its package.json. */
export function packageVersion(): string {
  // Built, this file is dist/src/http/openapi.js; run from source, src/http/openapi.ts.
  for (const path of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'motive-proxy' && pkg.version) return pkg.version;
    } catch {
      // not there
    }
  }
  return '0.0.0';
}
