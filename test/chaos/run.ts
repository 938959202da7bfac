/**
 * One chaos run: a service process on a journal, several sessions of two chaotic clients
 * each, and a saboteur that kills the process group (SIGKILL) or restarts it gracefully
 * (SIGTERM) at random points of the conversations; then the invariants (see chaos.test.ts).
 */
import { ChatApp } from './chat-app.js';
import { Conversation, Counters, Trace } from './conversation.js';
import { Random } from './random.js';
import { Service, type JournalLine } from './service.js';

export interface RunOptions {
  readonly seed: number;
  readonly sessions: number;
  /** Messages each side says at least (A's handshake aside). */
  readonly messages: number;
  readonly kills: number;
  readonly restarts: number;
  /** The run gives up (and fails) after this long. */
  readonly deadlineMs: number;
}

export interface RunResult {
  readonly summary: string;
  /** Broken invariants, each with what led to it; empty when the run passed. */
  readonly failures: readonly string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(10);
  }
  return check();
}

export async function chaosRun(options: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const { seed } = options;
  const random = new Random(seed, 'service');
  const fsync = random.pick(['always', 'batch']);
  const service = await Service.start({
    JOURNAL_FSYNC: fsync,
    TURN_TIMEOUT_SECONDS: '2',
    STREAM_TURN_TIMEOUT_SECONDS: '3',
    HANDSHAKE_TIMEOUT_SECONDS: '3',
    KEEPALIVE_INTERVAL_SECONDS: '0.2',
  });
  const trace = new Trace();
  const counters = new Counters();
  const failures: string[] = [];
  const conversations: Conversation[] = [];
  const explicit = new Set<string>();
  for (let i = 0; i < options.sessions; i++) {
    const conversation = new Conversation(`chaos-${seed}-${i}`, options.messages, trace);
    // Sessions alternate: with explicit |A / |B sides, and without (A is whoever came first).
    if ((i + seed) % 2 === 0) explicit.add(conversation.session);
    const make = (side: 'A' | 'B') =>
      new ChatApp(side, conversation, {
        url: service.url,
        explicit: explicit.has(conversation.session),
        random: new Random(seed, conversation.session, side),
        counters,
      });
    const [a, b] = [make('A'), make('B')];
    a.peer = b;
    b.peer = a;
    conversations.push(conversation);
  }
  const clients = conversations.map(async (conversation) => {
    const { A, B } = conversation.sides;
    const order = new Random(seed, conversation.session, 'order');
    if (explicit.has(conversation.session)) {
      // Either side may come first.
      const [first, second] = order.chance(0.5) ? [A, B] : [B, A];
      const one = first.run();
      await sleep(order.int(0, 200));
      await Promise.all([one, second.run()]);
      return;
    }
    // Without explicit sides the first to appear is A: B starts once A's handshake is journaled.
    const one = A.run();
    const joined = () => service.journal().some((r) => r.session === conversation.session && r.type === 'SideConnected' && r.side === 'A');
    await until(() => conversation.over || joined(), options.deadlineMs);
    await Promise.all([one, B.run()]);
  });

  const deadline = setTimeout(() => {
    for (const c of conversations) c.stop();
  }, options.deadlineMs);
  try {
    await sabotage(service, conversations, options, random, trace, counters, failures);
    await Promise.all(clients);
  } finally {
    clearTimeout(deadline);
    // Whatever ended the run (an error included), no client goes on calling.
    for (const c of conversations) c.stop();
  }
  await service.stop(); // graceful: the journal is whole and flushed

  const journal = checkJournalLines(service, failures);
  for (const c of conversations) {
    const { A, B } = c.sides;
    const state = (x: ChatApp) => `${x.side} sent ${x.sent.length}, received ${x.parts.length} messages`;
    const found: string[] = [];
    if (c.failure) found.push(c.failure);
    else if (!c.finished) found.push(`${c.session}: not finished within ${options.deadlineMs / 1000} s (${state(A)}; ${state(B)})`);
    else checkExactlyOnce(c, found);
    checkJournal(c, journal, found);
    if (found.length > 0) failures.push(`${found.join('\n')}\n\ntrace of ${c.session}:\n${trace.tail(c.session)}`);
  }

  const tally = tallyAll(conversations);
  const statuses = [...counters.statuses].filter(([code]) => code !== 200).sort(([a], [b]) => a - b).map(([code, n]) => `${code}×${n}`).join(' ');
  const summary =
    `chaos seed ${seed} (JOURNAL_FSYNC=${fsync}, ${options.sessions} sessions, ${explicit.size} with |A/|B): ` +
    `messages sent ${tally.sent}, delivered ${tally.delivered}, duplicated ${tally.duplicated}, lost ${tally.lost}, reordered ${tally.reordered}, forged ${tally.forged}; ` +
    `kills ${counters.kills}, graceful restarts ${counters.restarts}; aborts ${counters.aborts}, re-sends ${counters.resends}, ` +
    `double sends ${counters.doubleSends}, application retries ${counters.appRetries}, superseded ${counters.superseded}; ` +
    `calls ${counters.calls} (${counters.streams} streamed), HTTP ${statuses || 'all 200'}; ${((Date.now() - started) / 1000).toFixed(1)} s`;
  return { summary, failures };
}

/** Kills and graceful restarts at random points of the conversations (by messages typed). */
async function sabotage(
  service: Service,
  conversations: readonly Conversation[],
  options: RunOptions,
  random: Random,
  trace: Trace,
  counters: Counters,
  failures: string[],
): Promise<void> {
  const events: ('kill' | 'graceful')[] = [...Array<'kill'>(options.kills).fill('kill'), ...Array<'graceful'>(options.restarts).fill('graceful')];
  for (let i = events.length - 1; i > 0; i--) {
    const j = random.int(0, i);
    [events[i], events[j]] = [events[j]!, events[i]!];
  }
  const total = conversations.length * 2 * options.messages;
  const points = events.map(() => 0.1 + 0.75 * random.next()).sort((a, b) => a - b);
  const typed = () => conversations.reduce((sum, c) => sum + c.typed, 0);
  const allOver = () => conversations.every((c) => c.over);
  for (const [i, event] of events.entries()) {
    await until(() => allOver() || typed() >= points[i]! * total, options.deadlineMs);
    if (allOver()) {
      if (conversations.every((c) => c.finished)) failures.push(`the conversations finished before the saboteur's ${event} at ${Math.round(points[i]! * 100)}%`);
      return;
    }
    await sleep(random.int(0, 30));
    if (event === 'kill') {
      trace.note(null, 'kill -9 of the process group');
      await service.kill();
      counters.kills++;
    } else {
      trace.note(null, 'SIGTERM to the process group (graceful restart)');
      const stopped = await Promise.race([service.stop().then(() => true), sleep(10_000).then(() => false)]);
      if (!stopped) {
        failures.push('a graceful stop took longer than 10 s');
        await service.kill();
      }
      counters.restarts++;
    }
    const journaled = new Set(service.journal().map((r) => r.session));
    const recovery = await service.restart();
    trace.note(null, `restarted: ${JSON.stringify(recovery)}`);
    if (recovery.restored !== journaled.size || recovery.dropped !== 0) {
      failures.push(`restart ${i + 1} (after a ${event}) restored ${recovery.restored} of the journal's ${journaled.size} sessions, dropped ${recovery.dropped}`);
    }
  }
}

/** Every line of the journal is a whole record; returns them. */
function checkJournalLines(service: Service, failures: string[]): JournalLine[] {
  const records = service.journal();
  const text = service.journalText();
  const lines = text.split('\n').filter((line) => line !== '');
  if (text !== '' && !text.endsWith('\n')) failures.push('the journal does not end with a whole line');
  if (lines.length !== records.length) failures.push(`${lines.length - records.length} journal line(s) are not JSON`);
  return records;
}

/** Each side received exactly what the other said, in order (checked as it went; once more, whole). */
function checkExactlyOnce(c: Conversation, found: string[]): void {
  for (const app of [c.sides.A, c.sides.B]) {
    if (JSON.stringify(app.parts) !== JSON.stringify(app.peer.sent)) {
      found.push(`${c.session}: side ${app.side} received ${JSON.stringify(app.parts)}, the other side said ${JSON.stringify(app.peer.sent)}`);
    }
  }
}

/**
 * The journal's deliveries to each side (in the session's latest incarnation) are exactly the
 * answers that side's client read; the session did not end. For a conversation that failed
 * otherwise, this says what the proxy believes it gave.
 */
function checkJournal(c: Conversation, journal: readonly JournalLine[], found: string[]): void {
  const mine = journal.filter((r) => r.session === c.session);
  const start = mine.map((r) => r.seq).lastIndexOf(1);
  const records = mine.slice(Math.max(0, start));
  for (const app of [c.sides.A, c.sides.B]) {
    const delivered = records.filter((r) => r.type === 'MessageDelivered' && r.side === app.side).map((r) => r.content);
    if (JSON.stringify(delivered) === JSON.stringify(app.received)) continue;
    let at = 0;
    while (at < delivered.length && delivered[at] === app.received[at]) at++;
    found.push(
      `${c.session}: the journal's MessageDelivered records for side ${app.side} (${delivered.length}) are not the answers its client read (${app.received.length}); ` +
        `from #${at + 1}: journal ${JSON.stringify(delivered.slice(at, at + 3))}, client ${JSON.stringify(app.received.slice(at, at + 3))}`,
    );
  }
  const ended = records.filter((r) => r.type === 'SessionExpired' || (r.type === 'SessionClosed' && (r.reason ?? r.event?.reason) !== 'shutdown'));
  if (ended.length > 0) found.push(`${c.session}: the session ended during the run (${ended.map((r) => r.type).join(', ')})`);
}

/** Messages sent, delivered, duplicated, lost, reordered and forged, over both directions of every conversation. */
function tallyAll(conversations: readonly Conversation[]) {
  const tally = { sent: 0, delivered: 0, duplicated: 0, lost: 0, reordered: 0, forged: 0 };
  for (const c of conversations) {
    for (const receiver of [c.sides.A, c.sides.B]) {
      const said = receiver.peer.sent;
      const got = receiver.parts;
      tally.sent += said.length;
      const distinct = [...new Set(got.filter((part) => said.includes(part)))];
      tally.delivered += distinct.length;
      tally.duplicated += got.filter((part) => said.includes(part)).length - distinct.length;
      tally.forged += got.filter((part) => !said.includes(part)).length;
      tally.lost += said.length - distinct.length;
      for (let i = 1; i < distinct.length; i++) if (said.indexOf(distinct[i]!) < said.indexOf(distinct[i - 1]!)) tally.reordered++;
    }
  }
  return tally;
}
