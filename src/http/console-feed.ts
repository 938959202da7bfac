/**
 * The web console's live feed: what every session looks like right now, pushed to the open
 * console pages when it changes (GET /console/live, a WebSocket), plus the transcript of the
 * session a page is looking at, sent as it grows.
 *
 * It hangs off the service's one inspection tap (a TransitionListener) and never polls. Pushes
 * are debounced: however busy the service, a page gets at most one list every PUSH_INTERVAL_MS.
 *
 * Which protocol each side speaks is not part of the chart (it is protocol-neutral): the session
 * wrapper records the protocol of each side's latest request, and a side held by an open
 * WebSocket shows as `websocket`. When a wait began is part of the chart's context.
 *
 * What was said is the admin's to read, as on the admin routes: with ADMIN_API_KEY set, only a
 * page that connected with it gets transcripts. The session list (ids, states, counts, waits,
 * no text) goes to every page the console's guard lets in.
 */
import { splitScoped } from '../auth/tenants.js';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { timerMs, type SessionTiming, type Side, type TranscriptEntry } from '../../machines/session.logic.js';
import { timingOf } from '../config.js';
import type { Session } from '../sessions/session.js';
import type { SessionStep } from '../sessions/fact-stream.js';
import type { AppContext } from './context.js';
import type { SideHolders } from './side-holders.js';
import type { ConsoleRelay } from '../cluster/console-relay.js';

export const PUSH_INTERVAL_MS = 150;
/** A page that starts watching a long session gets its latest entries, not all of them. */
export const TRANSCRIPT_WINDOW = 500;
/** A page whose socket has this much unsent data is skipped until it catches up. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export interface HeldSummary {
  /** ms since the epoch when this wait began */
  readonly since: number;
  /** `none`: a WebSocket side's wait, which never times out */
  readonly timer: 'handshake' | 'turn' | 'stream' | 'none';
  /** when the wait times out (408), or null */
  readonly deadline: number | null;
}

export interface SideSummary {
  readonly joined: boolean;
  /** The protocol adapter's name (`openai`, `anthropic`, `websocket`, …) once the side has spoken. */
  readonly protocol: string | null;
  /** The side's turns so far (its handshake included). */
  readonly turns: number;
  readonly deliveries: number;
  /** Messages from the other side waiting for this side's next request. */
  readonly queued: number;
  /** A request of this side is held open, waiting for the other side. */
  readonly held: HeldSummary | null;
  /** An open WebSocket connection holds this side (only one may). */
  readonly socket: boolean;
}

export interface SessionSummary {
  /** The service's id (the handle pages use): the name, after its tenant's when it has one. */
  readonly id: string;
  /** The name clients use, and its tenant (null: the default tenant). */
  readonly name: string;
  readonly tenant: string | null;
  readonly state: string;
  readonly lastActivityAt: number | null;
  /** Transcript entries so far (system prompts, the handshake and messages). */
  readonly entries: number;
  readonly sides: Readonly<Record<Side, SideSummary>>;
}

export type FeedFrame =
  | {
      type: 'hello';
      now: number;
      /** May this page read transcripts and use the admin actions (end a session, download its transcript)? */
      admin: boolean;
      /** Client API keys are required: playing a side or ending a session needs one. */
      keys: boolean;
      /** An admin key guards the admin actions: the page may ask for it (then reconnect with ?key=). */
      adminKey: boolean;
      timing: SessionTiming;
    }
  | { type: 'sessions'; now: number; sessions: SessionSummary[] }
  | {
      type: 'transcript';
      session: string;
      /** true: replace what the page shows (first look, or the id started a new session) */
      reset: boolean;
      entries: TranscriptEntry[];
      /** Entries before these that were left out (TRANSCRIPT_WINDOW). */
      skipped: number;
      /** The session is not live (closed, or never existed): nothing more will come. */
      closed: boolean;
    }
  | { type: 'pong'; id: string | null }
  | { type: 'error'; code: 'invalid_json' | 'invalid_request' | 'invalid_api_key'; message: string };

const clientFrame = z.discriminatedUnion(
  'type',
  [
    z.looseObject({ type: z.literal('watch'), session: z.string().min(1).max(256).nullable() }),
    z.looseObject({ type: z.literal('ping'), id: z.string().max(256).optional() }),
  ],
  { error: 'type must be "watch" or "ping"' },
);

interface Viewer {
  readonly socket: WebSocket;
  /** Holds the admin key, or none is set: gets transcripts. */
  readonly admin: boolean;
  watching: string | null;
  /** The session object the page was last sent entries of (a reused id is a new object). */
  watched: Session | null;
  sent: number;
  closedSent: boolean;
  /** Cluster mode: the watched session runs on another instance; its transcript comes from the journal. */
  remote: boolean;
  /** A signed-in person: the sessions their roles let them see (listed) and read (transcripts). */
  readonly sees?: (sessionId: string) => boolean;
  readonly reads?: (sessionId: string) => boolean;
  /** A transcript is opened (the audit trail records it). */
  readonly onRead?: (sessionId: string) => void;
}

export interface ViewerOptions {
  readonly admin: boolean;
  readonly keys: boolean;
  readonly adminKey: boolean;
  readonly sees?: (sessionId: string) => boolean;
  readonly reads?: (sessionId: string) => boolean;
  readonly onRead?: (sessionId: string) => void;
}

const SIDES: readonly Side[] = ['A', 'B'];

export class ConsoleFeed {
  private readonly viewers = new Set<Viewer>();
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private listDirty = false;
  private stopped = false;
  private readonly unsubscribe: () => void;
  /** Every step of every session (the fact stream): only marks the session as changed (cheap, no I/O). */
  readonly onStep = (step: SessionStep): void => {
    this.changed(step.session);
  };

  /** Cluster mode: the other instances' sessions (src/cluster/console-relay.ts). */
  private relay: ConsoleRelay | null = null;
  private relayTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ctx: AppContext,
    private readonly holders: SideHolders,
    private readonly now: () => number = Date.now,
  ) {
    this.unsubscribe = holders.onChange((sessionId) => this.changed(sessionId));
  }

  /** Cluster mode: shows every instance's sessions, and publishes this one's. */
  useRelay(relay: ConsoleRelay): void {
    this.relay = relay;
  }

  /** Another instance's sessions changed: the pages get the new list (and a remote transcript). */
  readonly remoteChanged = (): void => {
    if (this.stopped || this.viewers.size === 0) return;
    this.listDirty = true;
    for (const viewer of this.viewers) if (viewer.remote && viewer.watching !== null) this.dirty.add(viewer.watching);
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), PUSH_INTERVAL_MS);
    this.timer.unref();
  };

  /** A console page connected; it gets the hello and the session list at once. */
  attach(socket: WebSocket, options: ViewerOptions): void {
    const viewer: Viewer = {
      socket,
      admin: options.admin,
      watching: null,
      watched: null,
      sent: 0,
      closedSent: false,
      remote: false,
      ...(options.sees ? { sees: options.sees } : {}),
      ...(options.reads ? { reads: options.reads } : {}),
      ...(options.onRead ? { onRead: options.onRead } : {}),
    };
    this.viewers.add(viewer);
    this.relay?.viewers(this.viewers.size);
    this.send(viewer, { type: 'hello', now: this.now(), admin: options.admin, keys: options.keys, adminKey: options.adminKey, timing: this.timing() });
    this.send(viewer, { type: 'sessions', now: this.now(), sessions: this.visibleTo(viewer, this.summaries()) });
    socket.on('message', (data, isBinary) => this.onFrame(viewer, isBinary ? null : data.toString('utf8')));
    const gone = () => {
      this.viewers.delete(viewer);
      this.relay?.viewers(this.viewers.size);
    };
    socket.on('close', gone);
    socket.on('error', gone);
  }

  get viewerCount(): number {
    return this.viewers.size;
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.relayTimer) clearTimeout(this.relayTimer);
    this.relayTimer = null;
    for (const viewer of this.viewers) viewer.socket.close(1001, 'service stopping');
    this.viewers.clear();
  }

  /** What every live session looks like now, by id (in cluster mode, every instance's). */
  summaries(): SessionSummary[] {
    const list = this.localSummaries();
    if (this.relay) {
      const here = new Set(list.map((s) => s.id));
      for (const remote of this.relay.others()) if (!here.has(remote.id)) list.push(remote);
    }
    return list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** This instance's own live sessions. */
  readonly localSummaries = (): SessionSummary[] => {
    const list: SessionSummary[] = [];
    for (const session of this.ctx.sessions.list()) {
      if (!session.closed) list.push(this.summary(session));
    }
    return list;
  };

  summary(session: Session): SessionSummary {
    const context = session.context;
    const sides = {} as Record<Side, SideSummary>;
    for (const side of SIDES) {
      const s = context.sides[side];
      let held: HeldSummary | null = null;
      if (s.held) {
        const { since, timer } = s.held;
        held = { since, timer, deadline: timer === 'none' ? null : since + timerMs(context.timing, timer) };
      }
      const socket = this.holders.has(session.id, side);
      sides[side] = {
        joined: s.joined,
        protocol: socket ? 'websocket' : s.protocol,
        turns: s.lastTurn?.seq ?? 0,
        deliveries: s.deliveries.length,
        queued: s.queue.length,
        held,
        socket,
      };
    }
    const { tenant, name } = splitScoped(session.id);
    return { id: session.id, name, tenant, state: session.state, lastActivityAt: context.lastActivityAt, entries: context.transcript.length, sides };
  }

  private timing(): SessionTiming {
    const { handshakeTimeoutMs, turnTimeoutMs, streamTurnTimeoutMs, sessionTtlMs } = timingOf(this.ctx.config);
    return { handshakeTimeoutMs, turnTimeoutMs, streamTurnTimeoutMs, sessionTtlMs };
  }

  private changed(sessionId: string): void {
    if (this.stopped) return;
    if (this.relay && !this.relayTimer) {
      // The other instances' pages hear of it too (debounced like the pages here).
      this.relayTimer = setTimeout(() => {
        this.relayTimer = null;
        this.relay?.changed();
      }, PUSH_INTERVAL_MS);
      this.relayTimer.unref();
    }
    this.listDirty = true;
    if (this.viewers.size === 0) return; // nobody to tell (a page that connects gets the whole list)
    this.dirty.add(sessionId);
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), PUSH_INTERVAL_MS);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = null;
    if (this.stopped) return;
    const dirty = new Set(this.dirty);
    this.dirty.clear();
    let list: FeedFrame | null = null;
    if (this.listDirty) {
      this.listDirty = false;
      list = { type: 'sessions', now: this.now(), sessions: this.summaries() };
    }
    const encoded = list ? JSON.stringify(list) : null;
    let behind = false;
    for (const viewer of this.viewers) {
      if (viewer.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        behind = true; // it gets the list (and its transcript) at a later push
        continue;
      }
      if (encoded && list?.type === 'sessions') {
        if (viewer.sees) this.send(viewer, { ...list, sessions: this.visibleTo(viewer, list.sessions) });
        else this.sendRaw(viewer, encoded);
      }
      if (viewer.watching !== null && dirty.has(viewer.watching)) this.sendTranscript(viewer);
    }
    if (behind) {
      // Whatever a slow page missed is sent once it has caught up.
      for (const viewer of this.viewers) if (viewer.watching !== null) this.dirty.add(viewer.watching);
      this.listDirty = true;
      this.timer = setTimeout(() => this.flush(), PUSH_INTERVAL_MS * 4);
      this.timer.unref();
    }
  }

  /** The sessions a signed-in person's roles let them see; everything for anyone else. */
  private visibleTo(viewer: Viewer, sessions: readonly SessionSummary[]): SessionSummary[] {
    return viewer.sees ? sessions.filter((s) => viewer.sees!(s.id)) : [...sessions];
  }

  private onFrame(viewer: Viewer, data: string | null): void {
    if (data === null) {
      this.send(viewer, { type: 'error', code: 'invalid_request', message: 'Send text frames holding JSON; binary frames are not understood.' });
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      this.send(viewer, { type: 'error', code: 'invalid_json', message: 'The frame is not valid JSON; send one JSON object per text frame.' });
      return;
    }
    const parsed = clientFrame.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
      this.send(viewer, { type: 'error', code: 'invalid_request', message: `${where}${issue.message}` });
      return;
    }
    const frame = parsed.data;
    if (frame.type === 'ping') {
      this.send(viewer, { type: 'pong', id: frame.id ?? null });
      return;
    }
    const refused = frame.session !== null && !(viewer.reads ? viewer.reads(frame.session) : viewer.admin);
    viewer.watching = refused ? null : frame.session;
    viewer.watched = null;
    viewer.sent = 0;
    viewer.closedSent = false;
    viewer.remote = false;
    if (refused) {
      this.send(viewer, {
        type: 'error',
        code: 'invalid_api_key',
        message: 'Transcripts need the admin key (ADMIN_API_KEY is set): enter it in the page (Admin key), or connect to /console/live with ?key=<admin key>.',
      });
    } else if (frame.session !== null) {
      viewer.onRead?.(frame.session);
      this.sendTranscript(viewer);
    }
  }

  /** The entries the page has not seen yet (all of them, within the window, after a reset). */
  private sendTranscript(viewer: Viewer): void {
    const id = viewer.watching;
    if (id === null) return;
    const session = this.ctx.sessions.get(id);
    if ((!session || session.closed) && this.relay?.runsElsewhere(id)) {
      void this.sendRemoteTranscript(viewer, id);
      return;
    }
    if (!session || session.closed) {
      if (viewer.closedSent) return;
      viewer.closedSent = true;
      const first = viewer.watched === null;
      viewer.watched = null;
      this.send(viewer, { type: 'transcript', session: id, reset: first, entries: [], skipped: 0, closed: true });
      return;
    }
    const entries = session.context.transcript;
    const reset = viewer.watched !== session || viewer.sent > entries.length;
    if (reset) {
      viewer.watched = session;
      viewer.closedSent = false;
    }
    this.sendEntries(viewer, id, entries, reset);
  }

  /** The entries the page has not had: the latest window of them after a reset, else the new ones. */
  private sendEntries(viewer: Viewer, id: string, entries: readonly TranscriptEntry[], reset: boolean): void {
    if (reset) {
      const from = Math.max(0, entries.length - TRANSCRIPT_WINDOW);
      viewer.sent = entries.length;
      this.send(viewer, { type: 'transcript', session: id, reset: true, entries: entries.slice(from), skipped: from, closed: false });
      return;
    }
    if (viewer.sent === entries.length) return;
    const fresh = entries.slice(viewer.sent);
    viewer.sent = entries.length;
    this.send(viewer, { type: 'transcript', session: id, reset: false, entries: [...fresh], skipped: 0, closed: false });
  }

  /** Cluster mode: the transcript of a session another instance runs, folded from the journal in Redis. */
  private async sendRemoteTranscript(viewer: Viewer, id: string): Promise<void> {
    const entries = await this.relay!.transcript(id).catch(() => null);
    if (viewer.watching !== id || !entries) return;
    const reset = !viewer.remote || viewer.watched !== null || viewer.sent > entries.length;
    viewer.watched = null;
    viewer.closedSent = false;
    viewer.remote = true;
    this.sendEntries(viewer, id, entries, reset);
  }

  private send(viewer: Viewer, frame: FeedFrame): void {
    this.sendRaw(viewer, JSON.stringify(frame));
  }

  private sendRaw(viewer: Viewer, data: string): void {
    if (viewer.socket.readyState === viewer.socket.OPEN) viewer.socket.send(data);
  }
}
