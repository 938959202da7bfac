/**
 * The JSON body parser: JSON.parse, then an iterative depth check so that hostile nesting
 * gets a 422 instead of a stack overflow further down.
 */
import type { FastifyInstance } from 'fastify';
import { ProxyError } from '../protocols/errors.js';

export const MAX_JSON_DEPTH = 64;

/** Opening brackets in the text: a body with no more than `limit` cannot nest deeper. */
function openingsAtMost(text: string, limit: number): boolean {
  let count = 0;
  for (const bracket of ['{', '[']) {
    for (let i = text.indexOf(bracket); i !== -1; i = text.indexOf(bracket, i + 1)) {
      if (++count > limit) return false;
    }
  }
  return true;
}

/** Depth of a parsed JSON value, walked without recursion; stops early past `limit`. */
export function jsonDepthExceeds(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth > limit) return true;
    const children = Array.isArray(node) ? node : Object.values(node);
    for (const child of children) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}

export function registerJsonBody(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string;
    if (text.trim() === '') {
      // Only POST routes take a body. Clients label body-less requests JSON too (openai-python
      // sends Content-Type: application/json on its DELETE), which must not make them fail.
      if (request.method !== 'POST') {
        done(null, undefined);
        return;
      }
      done(new ProxyError('invalid_json', 'The request body is empty; send a JSON object.'), undefined);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      done(new ProxyError('invalid_json', `The request body is not valid JSON: ${(err as Error).message}`), undefined);
      return;
    }
    // The walk is only needed when the text has enough brackets to nest that deep.
    if (!openingsAtMost(text, MAX_JSON_DEPTH) && jsonDepthExceeds(value, MAX_JSON_DEPTH)) {
      done(new ProxyError('invalid_request', `The request body is nested deeper than ${MAX_JSON_DEPTH} levels.`), undefined);
      return;
    }
    done(null, value);
  });
}
