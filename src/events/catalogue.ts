/**
 * The event catalogue: the public events the service sends out (webhooks, brokers), made from
 * the journal's records of session facts and from the audit trail's admin actions. An event's
 * type is past tense and stable; its body's shape is versioned by `dataschema` (a new shape gets
 * a new version, never a changed meaning). Every event's id is derived from the record it comes
 * from, so whichever instance sends it, and however often, it is the same event: receivers
 * deduplicate on it. docs/events.md lists every type with an example.
 *
 * Pure: no I/O, no clocks.
 */
import { createHash } from 'node:crypto';
import type { AuditEntry } from '../audit/audit.js';
import { splitScoped } from '../auth/tenants.js';
import { factTypeOf, factsOf, type JournalRecord } from '../journal/records.js';

export const SESSION_EVENT_TYPES = [
  'session.created',
  'session.paired',
  'message.sent',
  'message.delivered',
  'request.timed_out',
  'session.expired',
  'session.closed',
] as const;

export const ADMIN_EVENT_TYPES = ['key.created', 'key.rotated', 'key.revoked', 'tenant.limits_set', 'tenant.limits_removed', 'webhook.disabled'] as const;

export const EVENT_TYPES = [...SESSION_EVENT_TYPES, ...ADMIN_EVENT_TYPES, 'webhook.test'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Version of every data shape in this build; a change of shape gets a new one. */
export const DATA_VERSION = 1;

export const dataschemaOf = (type: string): string => `urn:motiveproxy:events:${type}:v${DATA_VERSION}`;

/** The stream of admin events: U+001F cannot be in a session's name, so no session has this id. */
export const ADMIN_STREAM = '\u001fadmin';

/** Where an event comes from, and where it is in that source's order. */
export interface EventPlace {
  /** The ordered stream it belongs to: a session's id (tenant-scoped), or ADMIN_STREAM. */
  readonly stream: string;
  /** When the session's incarnation began (its seq 1 record's time), where known: an id used again is another stream. */
  readonly start?: number;
  /** Its record's seq in the session (admin events: 0). */
  readonly seq: number;
  /** Its index among the events made from that one record, from 0. */
  readonly part: number;
  /** Cluster mode: its record's entry in the outbox stream (trimmed once nothing before it is owed). */
  readonly position?: number;
}

export interface ProxyEvent extends EventPlace {
  readonly id: string;
  readonly type: EventType;
  /** When it happened, ms since the epoch. */
  readonly at: number;
  /** The session's name as clients send it (without its tenant); null for admin events. */
  readonly session: string | null;
  readonly tenant: string | null;
  /** The trace of the request it concerns, when tracing is on. */
  readonly trace: string | null;
  /** The event's data, content included; `publicData` leaves the content out for those who did not ask for it. */
  readonly data: Readonly<Record<string, unknown>>;
  /** Whether `data` holds message content (which only subscribers who asked for it receive). */
  readonly hasContent: boolean;
  /** About an endpoint of every tenant: for endpoints of every tenant only. */
  readonly allTenants?: boolean;
}

/** A stable id: the same record and part give the same id on every instance, every time. */
export function eventId(...parts: ReadonlyArray<string | number>): string {
  return `evt_${createHash('sha256').update(parts.join('\u0000')).digest('base64url').slice(0, 26)}`;
}

/** Does `type` match one of `patterns` (`*` for all, `session.*` for a family, or the type itself)? */
export function matchesType(patterns: readonly string[], type: string): boolean {
  for (const pattern of patterns) {
    if (pattern === '*' || pattern === type) return true;
    if (pattern.endsWith('.*') && type.startsWith(pattern.slice(0, -1))) return true;
  }
  return false;
}

/** A pattern names at least one event type (so a typo is refused rather than never matching). */
export const isKnownPattern = (pattern: string): boolean => EVENT_TYPES.some((type) => matchesType([pattern], type));

/**
 * The public events of one journal record (none for internal facts: retries, listens,
 * disconnects, shutdown closes and resumes). Side B's first turn both pairs the session and
 * sends its first message: two events, parts 0 and 1.
 */
export function eventsOfRecord(record: JournalRecord, start?: number): ProxyEvent[] {
  try {
    return makeEvents(record, start);
  } catch {
    return []; // a record of a shape this build does not know (the journal keeps it as it is)
  }
}

function makeEvents(record: JournalRecord, start: number | undefined): ProxyEvent[] {
  const type = factTypeOf(record);
  if (type === null) return [];
  const [fact] = factsOf([record]);
  if (!fact) return [];
  const { tenant, name } = splitScoped(record.session);
  const base = { stream: record.session, ...(start === undefined ? {} : { start }), seq: record.seq, at: fact.at, session: name, tenant, trace: record.trace ?? null };
  const make = (part: number, eventType: EventType, data: Record<string, unknown>, hasContent = false): ProxyEvent => ({
    ...base,
    part,
    id: eventId(record.session, record.seq, fact.at, fact.type, part),
    type: eventType,
    data: { session: name, ...(tenant === null ? {} : { tenant }), ...data },
    hasContent,
  });
  switch (fact.type) {
    case 'SideConnected': {
      const turn = { side: fact.side, protocol: fact.turn.protocol ?? null, stream: fact.turn.stream === true };
      if (fact.side === 'A') return [make(0, 'session.created', { ...turn, handshake: fact.turn.content }, true)];
      return [make(0, 'session.paired', turn), make(1, 'message.sent', { ...turn, content: fact.turn.content, chars: fact.turn.content.length }, true)];
    }
    case 'MessageSent':
      return [make(0, 'message.sent', { side: fact.side, protocol: fact.turn.protocol ?? null, stream: fact.turn.stream === true, content: fact.turn.content, chars: fact.turn.content.length }, true)];
    case 'MessageDelivered':
      return [make(0, 'message.delivered', { side: fact.side, delivery: fact.delivery, waited_ms: fact.waitedMs, content: fact.content, chars: fact.content.length }, true)];
    case 'TimedOut':
      return [make(0, 'request.timed_out', { side: fact.side, timer: fact.timer })];
    case 'SessionExpired':
      return [make(0, 'session.expired', {})];
    case 'SessionClosed':
      return fact.reason === 'shutdown' ? [] : [make(0, 'session.closed', { reason: fact.reason })];
    default:
      return [];
  }
}

const ADMIN_ACTIONS: ReadonlySet<string> = new Set(ADMIN_EVENT_TYPES);

/** The public event of an audit entry, for the admin actions the catalogue names (refusals are not events). */
export function eventOfAudit(entry: AuditEntry): ProxyEvent | null {
  if (!ADMIN_ACTIONS.has(entry.action) || entry.outcome !== 'ok') return null;
  const at = Date.parse(entry.at);
  if (!Number.isFinite(at)) return null;
  return {
    stream: ADMIN_STREAM,
    seq: 0,
    part: 0,
    id: eventId('audit', entry.id),
    type: entry.action as EventType,
    at,
    session: null,
    tenant: entry.tenant,
    trace: null,
    data: { [entry.target.type]: entry.target.id, ...(entry.tenant === null ? {} : { tenant: entry.tenant }), actor: entry.actor.subject, ...withoutFlags(entry.details ?? {}) },
    hasContent: false,
    ...(entry.details?.['all_tenants'] === true ? { allTenants: true } : {}),
  };
}

function withoutFlags(details: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const { all_tenants: _all, ...rest } = details;
  return rest;
}

const CONTENT_FIELDS = ['content', 'handshake'] as const;

/** The event's data for a subscriber: without message content unless it asked for it. */
export function publicData(event: ProxyEvent, withContent: boolean): Record<string, unknown> {
  if (withContent || !event.hasContent) return { ...event.data };
  const data: Record<string, unknown> = { ...event.data };
  for (const field of CONTENT_FIELDS) delete data[field];
  return data;
}

/** A CloudEvents 1.0 event in structured JSON mode. */
export interface CloudEvent {
  readonly specversion: '1.0';
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly time: string;
  readonly subject?: string;
  readonly datacontenttype: 'application/json';
  readonly dataschema: string;
  /** Extensions: the tenant, the W3C trace id, and the event's place in its session. */
  readonly tenant?: string;
  readonly traceid?: string;
  readonly sequence?: string;
  readonly data: Record<string, unknown>;
}

/** The event as a CloudEvent, as webhooks and brokers carry it. `source` names this service's events. */
export function toCloudEvent(event: ProxyEvent, withContent: boolean, source = '/motiveproxy'): CloudEvent {
  return {
    specversion: '1.0',
    id: event.id,
    source: event.session === null ? `${source}/admin` : `${source}/sessions`,
    type: event.type,
    time: new Date(event.at).toISOString(),
    ...(event.session === null ? {} : { subject: event.session }),
    datacontenttype: 'application/json',
    dataschema: dataschemaOf(event.type),
    ...(event.tenant === null ? {} : { tenant: event.tenant }),
    ...(event.trace ? { traceid: event.trace } : {}),
    ...(event.session === null ? {} : { sequence: `${String(event.seq).padStart(10, '0')}.${event.part}` }),
    data: publicData(event, withContent),
  };
}
