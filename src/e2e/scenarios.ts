/**
 * The scenarios of `motive-proxy e2e`: what each one runs (the service's settings, the
 * sessions, what each side says and how it behaves) and its pass condition, checked from what
 * the clients recorded.
 */
import { GUESS_NUMBER_PATH } from './processes.js';
import { eventsOf, type DirectionCheck, type SideRecord } from './verify.js';
import { hash, pick, rng, type Rng } from './rng.js';
import type { ClientProtocol, Injection, ProtocolChoice, ProxyTimers, Side, SideJob } from './types.js';

/** What the user chose for a scenario (its defaults filled in). */
export interface ChosenOptions {
  /** Messages each side says (the agents scenario: at most, per side). */
  readonly turns: number;
  readonly concurrent: number;
  readonly protocol: ProtocolChoice;
  readonly stream: boolean;
  readonly seed: number;
  /** Prefix of every session id of this run, so runs against one server never collide. */
  readonly runId: string;
  readonly agentCommands: Partial<Record<Side, string>>;
}

/** What a scenario plans and checks with: the user's choices and the proxy's timers. */
export interface ScenarioOptions extends ChosenOptions {
  readonly proxy: ProxyTimers;
}

/** One side as planned: a SideJob without what the orchestrator fills in. */
export type SidePlan = Omit<SideJob, 'recordPath' | 'session' | 'side'>;

export interface SessionPlan {
  readonly id: string;
  readonly sides: Readonly<Record<Side, SidePlan>>;
}

/** What a check sees of one session. */
export interface SessionView {
  readonly plan: SessionPlan;
  readonly a: SideRecord;
  readonly b: SideRecord;
  readonly ab: DirectionCheck;
  readonly ba: DirectionCheck;
}

/** What the orchestrator observed of the run as a whole (for scenario-level checks). */
export interface RunFacts {
  readonly crash: { killedAt: number; restartedAt: number; recovered: number | null; relayedBeforeKill: number; expected: number } | null;
  /** Most sessions in flight at one moment, from the clients' own start and end times. */
  readonly peakConcurrent: number;
}

export interface Scenario {
  readonly name: string;
  /** One line for --help: what it proves. */
  readonly summary: string;
  /** The precise condition, as the report prints it. */
  readonly passCondition: string;
  readonly defaults: { readonly turns: number; readonly concurrent: number };
  /** Why it cannot run against an external server (--url), or null when it can. */
  readonly needsOwnServer: string | null;
  /** Turns are fixed for this scenario (--turns does not change them). */
  readonly fixedTurns?: number;
  serverEnv(options: ChosenOptions, dir: string): Record<string, string>;
  plan(options: ScenarioOptions): SessionPlan[];
  /** Problems of one session beyond the common checks. */
  check?(session: SessionView, options: ScenarioOptions): string[];
  /** Problems of the scenario as a whole. */
  checkAll?(sessions: readonly SessionView[], facts: RunFacts, options: ScenarioOptions): string[];
  /** Kill the service with SIGKILL once this fraction of the expected deliveries was received. */
  readonly crashAt?: number;
  /** How long the service stays down before it is started again. */
  readonly downtimeMs?: number;
  /** Notes about how options were applied (shown in the report). */
  notes?(options: ScenarioOptions): string[];
  /** Checks of the pass condition this run cannot make, each with the reason (shown in the report and the summary). */
  skippedChecks?(options: ScenarioOptions): string[];
  /** What was seen beyond the pass condition: never a failure. */
  observe?(sessions: readonly SessionView[], options: ScenarioOptions): string[];
}

// ---- messages -------------------------------------------------------------------------------

const WORDS = ['amber', 'lantern', 'harbour', 'quiet', 'copper', 'meadow', 'signal', 'velvet', 'granite', 'orbit', 'willow', 'ember', 'tide', 'falcon', 'cipher', 'maple'];
const FLOURISH = ['naïve café ☕', 'Grüße aus Köln', '日本語のテキスト', 'emoji 🙂🚀', 'line one\nline two', 'quotes "double" and \'single\''];

/** A unique, recognisable message: the session, the side and its number, then some text. */
function message(random: Rng, session: number, side: Side, n: number): string {
  const words = Array.from({ length: 3 + Math.floor(random() * 8) }, () => pick(random, WORDS)).join(' ');
  const extra = random() < 0.25 ? ` ${pick(random, FLOURISH)}` : '';
  return `[s${session} ${side}${n}] ${words}${extra}`;
}

/** A's handshake, then a1..aN; B says b1..bN. */
function scripts(options: ScenarioOptions, session: number, turns: number): Record<Side, string[]> {
  const random = rng(hash(options.seed, session, 'script'));
  const a = [`[s${session} A0] hello? (handshake, never forwarded)`];
  const b: string[] = [];
  for (let n = 1; n <= turns; n++) {
    b.push(message(random, session, 'B', n));
    a.push(message(random, session, 'A', n));
  }
  return { A: a, B: b };
}

const SDK_PAIRS: ReadonlyArray<readonly [ClientProtocol, ClientProtocol]> = [
  ['openai', 'anthropic'],
  ['anthropic', 'responses'],
  ['responses', 'openai'],
  ['anthropic', 'openai'],
  ['responses', 'anthropic'],
  ['openai', 'responses'],
];

/** The protocols of session k's sides under --protocol. */
function protocolsFor(choice: ProtocolChoice, k: number): [ClientProtocol, ClientProtocol] {
  if (choice === 'mixed') {
    const [a, b] = SDK_PAIRS[k % SDK_PAIRS.length]!;
    return [a, b];
  }
  return [choice, choice];
}

const sessionId = (options: ScenarioOptions, name: string, k: number): string => `e2e-${options.runId}-${name}-${k}`;

interface PlanShape {
  readonly turns: number;
  readonly stream?: boolean;
  readonly protocols?: (k: number) => [ClientProtocol, ClientProtocol];
  readonly think?: (side: Side, index: number) => number;
  readonly startDelayMs?: Partial<Record<Side, number>>;
  readonly injection?: Injection | null;
  readonly appRetryMs?: number;
}

/** Scripted sessions: k = 0..concurrent-1, each with its own messages. */
function scripted(name: string, options: ScenarioOptions, shape: PlanShape): SessionPlan[] {
  return Array.from({ length: options.concurrent }, (_, k) => {
    const script = scripts(options, k, shape.turns);
    const [pa, pb] = shape.protocols ? shape.protocols(k) : protocolsFor(options.protocol, k);
    const side = (s: Side, protocol: ClientProtocol): SidePlan => ({
      protocol,
      stream: protocol === 'stateless' || protocol === 'websocket' ? false : (shape.stream ?? options.stream),
      script: script[s],
      agent: null,
      maxTurns: script[s].length,
      thinkMs: script[s].map((_, i) => shape.think?.(s, i) ?? 0),
      waitForPeer: s === 'B',
      startDelayMs: shape.startDelayMs?.[s] ?? 0,
      injection: shape.injection ?? null,
      appRetryMs: shape.appRetryMs ?? 0,
      seed: hash(options.seed, k, s, 'side'),
    });
    return { id: sessionId(options, name, k), sides: { A: side('A', pa), B: side('B', pb) } };
  });
}

// ---- helpers for checks ---------------------------------------------------------------------

const attempts = (record: SideRecord) => eventsOf(record, 'http').filter((h) => h.method === 'POST');

// ---- the scenarios --------------------------------------------------------------------------

const basicHandshake: Scenario = {
  name: 'basic-handshake',
  summary: "A's first request is held until B speaks; B's prompt is A's reply, A's answer is B's; the handshake is never forwarded",
  passCondition:
    "In every session: A's handshake was sent before B's first message and answered only after it; A received exactly [b1] and B exactly [a1]; the handshake text never reached B; no error reached either application.",
  defaults: { turns: 1, concurrent: 2 },
  fixedTurns: 1,
  needsOwnServer: null,
  serverEnv: () => ({}),
  plan: (options) => scripted('basic-handshake', options, { turns: 1 }),
  check({ a, b }) {
    const handshake = eventsOf(a, 'send')[0];
    const firstB = eventsOf(b, 'send')[0];
    const answered = eventsOf(a, 'recv')[0];
    if (!handshake || !firstB || !answered) return [];
    const problems: string[] = [];
    if (!(handshake.t < firstB.t)) problems.push("A's handshake was not sent before B's first message");
    if (!(answered.t >= firstB.t)) problems.push("A's handshake was answered before B said anything");
    return problems;
  },
};

const multiTurn: Scenario = {
  name: 'multi-turn',
  summary: 'long conversations with full histories re-sent each turn: each side gets exactly the other\'s messages, in order, once',
  passCondition: 'In every session both sides said all N messages; each side received exactly the other side\'s messages, in order, each once; no error reached either application.',
  defaults: { turns: 6, concurrent: 4 },
  needsOwnServer: null,
  serverEnv: () => ({}),
  plan: (options) => scripted('multi-turn', options, { turns: options.turns }),
};

const STREAM_THINK_MS = 300;
/** The longest a sender thinks so that the stream it answers shows a keep-alive: this scenario's budget for them. */
const KEEPALIVE_HOLD_LIMIT_MS = 8000;
/** A keep-alive this soon after a stream's headers counts as sent with them. */
const AT_ONCE_MS = 250;

const SOURCES: Record<ProxyTimers['source'], string> = {
  harness: 'set by the harness',
  health: "reported by the proxy's GET /health",
  flag: 'given with --keepalive-interval',
  unknown: 'unknown',
};

export type KeepAliveCheck = { readonly intervalMs: number; readonly holdMs: number } | { readonly skipped: string };

/**
 * Whether this run can judge keep-alives, and if so how long the first stream of each side is
 * held: two of the proxy's intervals and some slack, so that one is due whatever the phase of
 * its timer. A proxy whose interval is long (the default is 15 s) or unknown is not held
 * that long; its headers are still checked.
 */
export function keepAliveCheck(proxy: ProxyTimers): KeepAliveCheck {
  const k = proxy.keepaliveIntervalSeconds;
  if (k === null) {
    return { skipped: 'keep-alives while held: the proxy does not report its KEEPALIVE_INTERVAL_SECONDS (no settings in GET /health); give it with --keepalive-interval SECONDS' };
  }
  const intervalMs = k * 1000;
  const holdMs = Math.max(STREAM_THINK_MS, Math.ceil(2 * intervalMs + 200));
  const what = `KEEPALIVE_INTERVAL_SECONDS is ${k} (${SOURCES[proxy.source]})`;
  if (holdMs > KEEPALIVE_HOLD_LIMIT_MS) {
    return { skipped: `keep-alives while held: ${what}; seeing one would hold a stream ${holdMs / 1000} s, longer than this scenario waits (${KEEPALIVE_HOLD_LIMIT_MS / 1000} s), so only the headers were checked` };
  }
  const waits = [proxy.handshakeTimeoutSeconds, proxy.streamTurnTimeoutSeconds ?? proxy.turnTimeoutSeconds].filter((n): n is number => n !== null);
  const shortestMs = waits.length > 0 ? Math.min(...waits) * 1000 : Infinity;
  if (holdMs > shortestMs / 2) {
    return { skipped: `keep-alives while held: ${what}; holding a stream ${holdMs / 1000} s would come close to the proxy's ${shortestMs / 1000} s timeout, so only the headers were checked` };
  }
  return { intervalMs, holdMs };
}

/** One reply a side received on a stream, with what its client saw of that stream. */
interface HeldStream {
  readonly side: Side;
  /** The receiver's message whose request carried the reply. */
  readonly i: number;
  readonly streamed: boolean;
  readonly headersAt: number | null;
  /** When the other side sent the message the stream carried. */
  readonly sentAt: number | null;
  /** From the headers to that send: how long the stream was certainly held. */
  readonly heldMs: number;
  readonly keepAlives: number;
  readonly firstKeepAliveAt: number | null;
}

function heldStreams({ a, b }: Pick<SessionView, 'a' | 'b'>): HeldStream[] {
  const streams: HeldStream[] = [];
  for (const [receiver, sender] of [
    [a, b],
    [b, a],
  ] as const) {
    const sends = eventsOf(sender, 'send').filter((s) => !s.handshake);
    for (const recv of eventsOf(receiver, 'recv')) {
      const answered = attempts(receiver).filter((h) => h.i === recv.i && h.status === 200).at(-1);
      const carried = sends.find((s) => recv.content.startsWith(s.content));
      const stream = eventsOf(receiver, 'stream').filter((e) => e.i === recv.i).at(-1);
      const headersAt = answered?.headersAt ?? null;
      streams.push({
        side: receiver.side,
        i: recv.i,
        streamed: recv.firstChunkAt !== null || recv.content === '',
        headersAt,
        sentAt: carried?.t ?? null,
        heldMs: headersAt !== null && carried ? carried.t - headersAt : 0,
        keepAlives: stream?.keepAlives ?? 0,
        firstKeepAliveAt: stream?.firstKeepAliveAt ?? null,
      });
    }
  }
  return streams;
}

const streaming: Scenario = {
  name: 'streaming',
  summary: "stream: true on both sides: held streams get their headers at once, keep-alives at the proxy's interval while held, then the reply as deltas",
  passCondition: `Every message arrived as streamed deltas, in order, exactly once; every held stream's response headers arrived before the other side had even sent the message it then carried (the sender thinks ${STREAM_THINK_MS} ms or more first); when the proxy's KEEPALIVE_INTERVAL_SECONDS is known (the harness's own service: 0.1 s; a proxy at --url: its GET /health or --keepalive-interval) and a stream can be held two intervals within ${KEEPALIVE_HOLD_LIMIT_MS / 1000} s, the first stream of each side is held that long and every stream held two intervals or more carried at least one keep-alive per two intervals held; no error reached either application.`,
  defaults: { turns: 4, concurrent: 4 },
  needsOwnServer: null,
  serverEnv: () => ({ KEEPALIVE_INTERVAL_SECONDS: '0.1' }),
  plan(options) {
    const check = keepAliveCheck(options.proxy);
    const holdMs = 'holdMs' in check ? check.holdMs : STREAM_THINK_MS;
    // B's first message answers A's handshake stream, A's first answers B's first stream.
    const think = (side: Side, i: number): number => (side === 'A' && i === 0 ? 0 : (side === 'B' && i === 0) || (side === 'A' && i === 1) ? holdMs : STREAM_THINK_MS);
    return scripted('streaming', options, { turns: options.turns, stream: true, think });
  },
  check(view, options) {
    const check = keepAliveCheck(options.proxy);
    const problems: string[] = [];
    for (const s of heldStreams(view)) {
      const which = `side ${s.side}: the stream for its message ${s.i + 1}`;
      if (!s.streamed) problems.push(`side ${s.side}: the reply to its message ${s.i + 1} was not streamed`);
      if (s.headersAt !== null && s.sentAt !== null && !(s.headersAt < s.sentAt)) {
        problems.push(`${which} got its headers only ${Math.round(s.headersAt - s.sentAt)} ms after the other side sent the reply`);
      }
      if ('intervalMs' in check) {
        const due = Math.floor(s.heldMs / (2 * check.intervalMs));
        if (due >= 1 && s.keepAlives < due) {
          problems.push(
            `${which} was held ${Math.round(s.heldMs)} ms with ${s.keepAlives === 0 ? 'no keep-alive' : `${s.keepAlives} keep-alive${s.keepAlives === 1 ? '' : 's'}`}; at KEEPALIVE_INTERVAL_SECONDS=${check.intervalMs / 1000} at least ${due === 1 ? 'one was' : `${due} were`} due (one per two intervals)`,
          );
        }
      }
    }
    return problems;
  },
  skippedChecks(options) {
    const check = keepAliveCheck(options.proxy);
    return 'skipped' in check ? [check.skipped] : [];
  },
  observe(sessions, options) {
    // Sooner than the proxy's timer would send its first one.
    const k = options.proxy.keepaliveIntervalSeconds;
    const atOnceMs = k === null ? AT_ONCE_MS : Math.min(AT_ONCE_MS, (k * 1000) / 2);
    const held = sessions.flatMap((s) => heldStreams(s)).filter((s) => s.headersAt !== null && s.heldMs >= atOnceMs);
    if (held.length === 0) return [];
    const atOnce = held.filter((s) => s.firstKeepAliveAt !== null && s.firstKeepAliveAt - s.headersAt! <= atOnceMs).length;
    const seen = [`a keep-alive with the headers (within ${atOnceMs} ms): ${atOnce} of ${held.length} held streams (optional: not required yet)`];
    if ('skipped' in keepAliveCheck(options.proxy)) seen.push(`a keep-alive while held: ${held.filter((s) => s.keepAlives > 0).length} of ${held.length} held streams`);
    return seen;
  },
  notes: (options) => [
    'streaming is on for this scenario whatever --stream says',
    `keep-alive interval: ${options.proxy.keepaliveIntervalSeconds === null ? 'unknown' : `${options.proxy.keepaliveIntervalSeconds} s`} (${SOURCES[options.proxy.source]})`,
  ],
};

const CROSS_PAIRS: ReadonlyArray<readonly [ClientProtocol, ClientProtocol]> = [
  ['openai', 'anthropic'],
  ['anthropic', 'responses'],
  ['responses', 'openai'],
  ['openai', 'websocket'],
  ['websocket', 'anthropic'],
  ['responses', 'websocket'],
];
const crossProtocol: Scenario = {
  name: 'cross-protocol',
  summary: 'the two sides of a session speak different protocols (OpenAI Chat, Anthropic Messages, OpenAI Responses, WebSocket)',
  passCondition: `Sessions cycle through the pairs ${CROSS_PAIRS.map(([x, y]) => `${x}↔${y}`).join(', ')}; in every session the sides used different protocols and each received exactly the other's messages, in order, once; no error reached either application.`,
  defaults: { turns: 4, concurrent: 6 },
  needsOwnServer: null,
  serverEnv: () => ({}),
  plan: (options) =>
    scripted('cross-protocol', options, {
      turns: options.turns,
      protocols: (k) => {
        const [a, b] = CROSS_PAIRS[k % CROSS_PAIRS.length]!;
        return [a, b];
      },
    }),
  check({ a, b }) {
    const pa = eventsOf(a, 'start')[0]?.protocol;
    const pb = eventsOf(b, 'start')[0]?.protocol;
    return pa && pb && pa === pb ? [`both sides used ${pa}`] : [];
  },
  notes: () => ['the protocols are fixed per session by this scenario; --protocol does not apply'],
};

const stateless: Scenario = {
  name: 'stateless',
  summary: 'curl-style clients: raw HTTP, only the new message each time, no history, no SDK, no side suffix',
  passCondition: "Both sides send only their new message (no history, no retries); in every session each side received exactly the other's messages, in order, once; no request failed.",
  defaults: { turns: 4, concurrent: 2 },
  needsOwnServer: null,
  serverEnv: () => ({}),
  plan: (options) => scripted('stateless', options, { turns: options.turns, protocols: () => ['stateless', 'stateless'], stream: false }),
  notes: () => ['both sides are stateless HTTP clients; --protocol and --stream do not apply'],
};

const TIMEOUT_S = 1;
const THINK_LONGER_MS = 1600;
const timeoutRecovery: Scenario = {
  name: 'timeout-recovery',
  summary: `a side thinks longer (${THINK_LONGER_MS} ms) than the turn timeout (${TIMEOUT_S} s): the other's SDK gets 408, retries and re-attaches`,
  passCondition: `With HANDSHAKE_TIMEOUT_SECONDS and TURN_TIMEOUT_SECONDS at ${TIMEOUT_S}: in every session each side got at least one 408 from the proxy and the SDK's own retry (X-Stainless-Retry-Count ≥ 1) then got the reply; each side received exactly the other's messages, in order, once; no error reached either application.`,
  defaults: { turns: 3, concurrent: 2 },
  needsOwnServer: 'it sets the turn and handshake timeouts of the service',
  serverEnv: () => ({ TURN_TIMEOUT_SECONDS: String(TIMEOUT_S), HANDSHAKE_TIMEOUT_SECONDS: String(TIMEOUT_S) }),
  plan: (options) =>
    scripted('timeout-recovery', options, {
      turns: Math.max(2, options.turns),
      stream: false,
      protocols: (k) => {
        const [a, b] = protocolsFor(options.protocol, k);
        return [a, b];
      },
      // B joins late (A's handshake times out); then each side thinks long before its 2nd message.
      startDelayMs: { B: THINK_LONGER_MS },
      think: (side, i) => ((side === 'B' && i === 1) || (side === 'A' && i === 2) ? THINK_LONGER_MS : 0),
    }),
  check({ a, b }) {
    const problems: string[] = [];
    for (const record of [a, b]) {
      const http = attempts(record);
      const timeouts = http.filter((h) => h.status === 408);
      if (timeouts.length === 0) problems.push(`side ${record.side} never got a 408: the timeout path was not exercised`);
      for (const t of timeouts) {
        const retried = http.some((h) => h.i === t.i && h.t > t.t && h.retryCount > 0 && h.status === 200);
        if (!retried) problems.push(`side ${record.side}: the 408 for its message ${t.i + 1} was not followed by a successful SDK retry`);
      }
    }
    return problems;
  },
  notes: () => ['non-streaming requests only: an SDK retries a 408 only before a stream has started'],
};

const STORM: Injection = { resetRate: 0.3, maxResetsPerCall: 2, duplicateRate: 0.3 };
const retryStorm: Scenario = {
  name: 'retry-storm',
  summary: 'clients cut connections mid-request (their SDKs retry) and send turns twice: nothing lost, nothing doubled',
  passCondition: `Each runner cuts ${STORM.resetRate * 100}% of its attempts off after sending (at most ${STORM.maxResetsPerCall} per call, so the SDK's default 2 retries suffice), sometimes after the reply was already written, and re-sends ${STORM.duplicateRate * 100}% of its turns with a new SDK call: across the scenario at least one reset and one duplicate happened; every duplicate got the same answer again; each side received exactly the other's messages, in order, once; no error reached either application.`,
  defaults: { turns: 8, concurrent: 4 },
  needsOwnServer: null,
  serverEnv: () => ({}),
  plan: (options) => scripted('retry-storm', options, { turns: options.turns, injection: STORM }),
  checkAll(sessions) {
    let resets = 0;
    let duplicates = 0;
    for (const s of sessions) {
      for (const r of [s.a, s.b]) {
        resets += eventsOf(r, 'http').filter((h) => h.injected === 'reset').length;
        duplicates += eventsOf(r, 'duplicate').length;
      }
    }
    const problems: string[] = [];
    if (resets === 0) problems.push('no connection reset was injected (more turns or sessions are needed)');
    if (duplicates === 0) problems.push('no duplicate send happened (more turns or sessions are needed)');
    return problems;
  },
};

const crashRecovery: Scenario = {
  name: 'crash-recovery',
  summary: 'the service is killed with SIGKILL mid-run and restarted on the same journal: clients re-attach, nothing lost or doubled',
  passCondition:
    "With a journal on disk (JOURNAL_PATH), the service was killed with SIGKILL once 40% of the deliveries were received (and before all were), stayed down for 2 s (longer than the SDK's two retries wait, so applications had to call again with the same messages, as the docs tell them to, and at least one did), then started again on the same port and journal; its /health reported sessions restored from the journal; every session then finished: each side received exactly the other's messages, in order, once; no other error reached an application.",
  defaults: { turns: 12, concurrent: 4 },
  needsOwnServer: 'it kills and restarts the service',
  serverEnv: (_options, dir) => ({ JOURNAL_PATH: `${dir}/journal`, JOURNAL_FSYNC: 'batch' }),
  plan: (options) => scripted('crash-recovery', options, { turns: Math.max(4, options.turns), think: () => 60, appRetryMs: 60_000 }),
  crashAt: 0.4,
  downtimeMs: 2000,
  checkAll(sessions, facts) {
    const crash = facts.crash;
    if (!crash) return ['the service was never killed (the run ended before 40% of its deliveries)'];
    const problems: string[] = [];
    const recalls = sessions.reduce((n, s) => n + eventsOf(s.a, 'app-retry').length + eventsOf(s.b, 'app-retry').length, 0);
    if (recalls === 0) problems.push('no application had to call again: the outage was shorter than the SDK retries');
    if (crash.relayedBeforeKill >= crash.expected) problems.push('the service was killed only after every delivery was made');
    if (crash.recovered === null) problems.push('the restarted service did not report its journal recovery on /health');
    else if (crash.recovered < 1) problems.push('the restarted service restored no session from its journal');
    return problems;
  },
};

const LOAD_SESSIONS = 200;
const load: Scenario = {
  name: 'load',
  summary: `many sessions at once (${LOAD_SESSIONS} unless --concurrent says otherwise): every one relays exactly, all in flight together`,
  passCondition:
    "All C sessions were in flight at the same moment (from the clients' own start and end times); in every session each side received exactly the other's messages, in order, once. The clients share the machine's cores with the service, which may shed load with 503 + Retry-After (MAX_EVENT_LOOP_DELAY_MS): the SDKs retry, and an application calls again when their retries run out, as the docs tell it to; no other error reached an application.",
  defaults: { turns: 4, concurrent: LOAD_SESSIONS },
  needsOwnServer: null,
  serverEnv: (options) => ({ MAX_SESSIONS: String(options.concurrent + 100) }),
  plan: (options) => scripted('load', options, { turns: options.turns, appRetryMs: 60_000 }),
  checkAll(sessions, facts) {
    return facts.peakConcurrent < sessions.length ? [`only ${facts.peakConcurrent} of ${sessions.length} sessions were in flight at once`] : [];
  },
};

const AGENT_CAP = 20;

const shellQuote = (arg: string): string => `'${arg.replaceAll("'", `'\\''`)}'`;

/** The built-in guess-the-number agents: A guesses, B picks. */
function builtInAgent(side: Side, seed: number): { command: string; label: string } {
  const role = side === 'A' ? 'guesser' : 'picker';
  return { command: [process.execPath, GUESS_NUMBER_PATH, role, '--seed', String(seed)].map(shellQuote).join(' '), label: `guess-number ${role} (built in)` };
}
const agents: Scenario = {
  name: 'agents',
  summary: 'two agent programs (built in: a guess-the-number picker and guesser) play a whole game through the proxy; --agent-cmd plugs in your own',
  passCondition: `An agent ended the game before the cap of ${AGENT_CAP} messages a side (--turns); each side received exactly the other's messages, in order, once; no error reached either side. With the built-in agents: both report the game won, the guess equals the secret, in at most 7 guesses.`,
  defaults: { turns: AGENT_CAP, concurrent: 1 },
  needsOwnServer: null,
  serverEnv: () => ({ TURN_TIMEOUT_SECONDS: '60', HANDSHAKE_TIMEOUT_SECONDS: '120' }),
  plan(options) {
    return Array.from({ length: options.concurrent }, (_, k) => {
      const [pa, pb] = protocolsFor(options.protocol, k);
      const side = (s: Side, protocol: ClientProtocol): SidePlan => {
        const command = options.agentCommands[s];
        return {
          protocol,
          stream: options.stream,
          script: null,
          agent: command ? { command, label: command } : builtInAgent(s, options.seed),
          maxTurns: options.turns,
          thinkMs: [],
          waitForPeer: s === 'B',
          startDelayMs: 0,
          injection: null,
          // A person or an LLM may take longer than the SDK's retries cover.
          appRetryMs: command ? 30 * 60_000 : 0,
          seed: hash(options.seed, k, s, 'agent'),
        };
      };
      return { id: sessionId(options, 'agents', k), sides: { A: side('A', pa), B: side('B', pb) } };
    });
  },
  check({ a, b }, options) {
    const problems: string[] = [];
    const capped = [...eventsOf(a, 'note'), ...eventsOf(b, 'note')].some((n) => (n.data as { turn_cap?: number }).turn_cap !== undefined);
    if (capped) problems.push(`no agent ended the game within ${options.turns} messages a side`);
    if (options.agentCommands.A || options.agentCommands.B) return problems;
    const note = (r: SideRecord, key: string) =>
      eventsOf(r, 'note')
        .map((n) => n.data as Record<string, unknown>)
        .filter((d) => key in d)
        .at(-1);
    const guesser = note(a, 'guesses');
    const picker = note(b, 'guesses');
    if (!guesser?.['won']) problems.push('the guesser did not report a win');
    if (!picker?.['won']) problems.push('the picker did not report a win');
    if (guesser && picker && guesser['guess'] !== picker['secret']) problems.push(`the guesser's last guess ${String(guesser['guess'])} is not the secret ${String(picker['secret'])}`);
    if (picker && Number(picker['guesses']) > 7) problems.push(`the guesser needed ${String(picker['guesses'])} guesses (halving 1..100 needs at most 7)`);
    return problems;
  },
};

export const SCENARIOS: readonly Scenario[] = [basicHandshake, multiTurn, streaming, crossProtocol, stateless, timeoutRecovery, retryStorm, crashRecovery, load, agents];

export const scenarioByName = (name: string): Scenario | undefined => SCENARIOS.find((s) => s.name === name);

/** The options a scenario runs with: its defaults unless the user gave a value. */
export function effectiveOptions(scenario: Scenario, given: Omit<ChosenOptions, 'turns' | 'concurrent'> & { turns?: number; concurrent?: number }): ChosenOptions {
  return {
    ...given,
    turns: scenario.fixedTurns ?? given.turns ?? scenario.defaults.turns,
    concurrent: given.concurrent ?? scenario.defaults.concurrent,
  };
}
