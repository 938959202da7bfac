/**
 * The WebSocket side's frames: one JSON object per text frame, for a participant that is not
 * an LLM client at all (a bot, a bridge, a custom UI). docs/adapters.md documents them.
 *
 * Client → proxy:
 *   {"type":"message","content":"…","id"?:"…"}   a new turn (appended to any typed draft)
 *   {"type":"typing","delta":"…"}                 more of the next message, shown live
 *   {"type":"ping","id"?:"…"}                     answered with pong
 * Proxy → client:
 *   {"type":"ready","session","side","state","deliveries","draft"?}  (then, with ?since=N, the
 *                                                  deliveries after the first N again; `draft`:
 *                                                  what this side typed live on an earlier
 *                                                  connection, which its next message continues)
 *   {"type":"accepted","id","content","turn"}     the message was taken (echoes the client id)
 *   {"type":"delivery","content","index"}          what the other side said, the moment it does
 *   {"type":"typing","delta"}                      the other side (also on WebSocket) is typing
 *   {"type":"error","code","message","id"?,"retry_after_seconds"?}  the frame was refused; the connection stays
 *   {"type":"closed","reason","message"}           the session ended; the socket closes next
 */
import { z } from 'zod';
import type { Side } from '../../machines/session.logic.js';
import type { ErrorCode } from './errors.js';

const clientFrame = z.discriminatedUnion(
  'type',
  [
    z.looseObject({ type: z.literal('message'), content: z.string().optional(), id: z.string().max(256).optional() }),
    z.looseObject({ type: z.literal('typing'), delta: z.string({ error: 'typing needs a string delta' }) }),
    z.looseObject({ type: z.literal('ping'), id: z.string().max(256).optional() }),
  ],
  { error: 'type must be one of "message", "typing", "ping"' },
);

export type ClientFrame = z.infer<typeof clientFrame>;

export type ServerFrame =
  | { type: 'ready'; session: string; side: Side; state: string; deliveries: number; draft?: string }
  | { type: 'accepted'; id: string | null; content: string; turn: 'connect' | 'message' }
  | { type: 'delivery'; content: string; index: number }
  | { type: 'typing'; delta: string }
  | { type: 'pong'; id: string | null }
  | { type: 'error'; code: ErrorCode; message: string; id?: string | null; retry_after_seconds?: number }
  | { type: 'closed'; reason: 'session_closed' | 'shutting_down'; message: string };

export class FrameError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Parses one text frame; throws FrameError with a message that names what was wrong. */
export function parseFrame(data: string): ClientFrame {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    throw new FrameError('invalid_json', 'The frame is not valid JSON; send one JSON object per text frame.');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new FrameError('invalid_request', 'A frame must be a JSON object with a "type".');
  }
  const parsed = clientFrame.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw new FrameError('invalid_request', `${where}${issue.message}`);
  }
  return parsed.data;
}

export const frame = (f: ServerFrame): string => JSON.stringify(f);

/** Query of the upgrade request: which session, and which side (optional: the free one). */
export const connectQuery = z.looseObject({
  session: z.string().min(1, 'session must not be empty').max(256, 'session is longer than 256 characters').refine((s) => !s.includes('\u001f'), 'session may not contain the control character U+001F').optional(),
  model: z.string().min(1).max(256).refine((s) => !s.includes('\u001f'), 'model may not contain the control character U+001F').optional(),
  side: z
    .string()
    .transform((s) => s.toUpperCase())
    .pipe(z.enum(['A', 'B'], { error: 'side must be A or B' }))
    .optional(),
  /** Deliveries the client already has: later ones are sent again at once (a reconnect). */
  since: z.coerce.number({ error: 'since must be a number' }).int('since must be a whole number').min(0, 'since must not be negative').optional(),
});
