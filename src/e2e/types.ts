/**
 * Shapes shared by the e2e orchestrator and its client runner processes: the job a runner is
 * given, the events it records, and what the orchestrator reports.
 */

export type Side = 'A' | 'B';

/** How a side talks to the proxy. */
export type ClientProtocol = 'openai' | 'anthropic' | 'responses' | 'stateless' | 'websocket';

/** The --protocol choice: one SDK for every side, or a mix across sessions. */
export type ProtocolChoice = 'openai' | 'anthropic' | 'responses' | 'mixed';

/** Failures injected by a runner into its own HTTP traffic (retry-storm). */
export interface Injection {
  /** Chance that an attempt is cut off by a connection reset after the server got it. */
  readonly resetRate: number;
  /** Consecutive resets at most on one SDK call (below the SDK's retry count, so it recovers). */
  readonly maxResetsPerCall: number;
  /** Chance that a turn (with history) is sent again, identically, by a new SDK call. */
  readonly duplicateRate: number;
}

/**
 * What the harness knows of the timers of the proxy under test, for the checks that depend on
 * them (the streaming scenario's keep-alives). A value is null when it is not known.
 */
export interface ProxyTimers {
  readonly keepaliveIntervalSeconds: number | null;
  readonly handshakeTimeoutSeconds: number | null;
  readonly turnTimeoutSeconds: number | null;
  /** The wait of a streaming request, when the proxy has a timer of its own for it. */
  readonly streamTurnTimeoutSeconds: number | null;
  /**
   * Where the keep-alive interval came from: the environment of the service the harness
   * started itself, the proxy's GET /health, the --keepalive-interval flag, or nowhere.
   */
  readonly source: 'harness' | 'health' | 'flag' | 'unknown';
}

/** One side of one session, as a runner plays it. */
export interface SideJob {
  readonly session: string;
  readonly side: Side;
  readonly protocol: ClientProtocol;
  readonly stream: boolean;
  /** What this side says, in order (side A's first message is its handshake); null for an agent. */
  readonly script: readonly string[] | null;
  /** An agent program (line protocol, docs/e2e.md) that decides what this side says. */
  readonly agent: { readonly command: string; readonly label: string } | null;
  /** Agent mode: messages this side sends at most before it ends the session itself. */
  readonly maxTurns: number;
  /** Delay before each message of the script (by index; missing entries are 0). */
  readonly thinkMs: readonly number[];
  /** Side B waits until its session is listed as joinable (A's handshake is held), then speaks. */
  readonly waitForPeer: boolean;
  /** Extra delay before this side's first message. */
  readonly startDelayMs: number;
  readonly injection: Injection | null;
  /** How long the application keeps calling again after the SDK's own retries gave up (0: never). */
  readonly appRetryMs: number;
  readonly seed: number;
  /** Where this side's events go (JSON lines). */
  readonly recordPath: string;
}

/** What one runner process is given: one side of one or more sessions, never both sides. */
export interface RunnerJob {
  readonly url: string;
  readonly side: Side;
  readonly label: string;
  /** Sent as the clients' API key (any key works unless the service is configured with keys). */
  readonly apiKey: string;
  readonly sides: readonly SideJob[];
}

/** One HTTP attempt as the runner's fetch saw it (SDK retries included). */
export interface AttemptEvent {
  readonly ev: 'http';
  readonly t: number;
  /** Index of the message (call) this attempt belongs to. */
  readonly i: number;
  readonly method: string;
  readonly path: string;
  readonly retryCount: number;
  /** Response status, or null when the attempt failed without one. */
  readonly status: number | null;
  /** When the response headers arrived. */
  readonly headersAt: number | null;
  readonly error?: string;
  /** Set when the runner cut this attempt off on purpose. */
  readonly injected?: 'reset';
}

export type RecordEvent =
  | { readonly ev: 'start'; readonly t: number; readonly session: string; readonly side: Side; readonly protocol: ClientProtocol; readonly stream: boolean; readonly pid: number; readonly agent: string | null }
  | { readonly ev: 'send'; readonly t: number; readonly i: number; readonly content: string; readonly handshake: boolean }
  | { readonly ev: 'recv'; readonly t: number; readonly i: number; readonly content: string; readonly firstChunkAt: number | null }
  | AttemptEvent
  /**
   * A streamed (SSE) response body ended: how many keep-alives (comments, pings) it carried,
   * and when the first of them arrived (null: none; absent in records of older runners).
   */
  | { readonly ev: 'stream'; readonly t: number; readonly i: number; readonly keepAlives: number; readonly bytes: number; readonly firstKeepAliveAt?: number | null }
  | { readonly ev: 'duplicate'; readonly t: number; readonly i: number; readonly same: boolean; readonly content: string }
  | { readonly ev: 'app-retry'; readonly t: number; readonly i: number; readonly error: string }
  /**
   * The session ended while this side waited: `peer` (410 / a closed frame), or
   * `deleted-before-retry`: the peer closed the session after receiving this side's last
   * message, and the SDK's retry of that request (its first attempt cut off) then found the id
   * unknown and got 409 session_conflict, as the contract says a request of an ended
   * conversation does. The orchestrator checks that the peer's delete came first.
   */
  | { readonly ev: 'closed'; readonly t: number; readonly i: number; readonly by: 'peer' | 'deleted-before-retry' }
  | { readonly ev: 'deleted'; readonly t: number; readonly sentAt: number; readonly status: number }
  | { readonly ev: 'note'; readonly t: number; readonly data: unknown }
  | { readonly ev: 'error'; readonly t: number; readonly i: number; readonly message: string; readonly code?: string }
  | { readonly ev: 'end'; readonly t: number; readonly ok: boolean; readonly reason: string };

/** A progress line a runner prints on stdout for the orchestrator's live display. */
export type ProgressLine =
  | { readonly p: 'ready' }
  | { readonly p: 'recv'; readonly s: string }
  | { readonly p: 'error'; readonly s: string; readonly m: string }
  | { readonly p: 'done'; readonly s: string; readonly ok: boolean };

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** One relayed message: said by `from`, received by `to`. */
export interface TurnReport {
  readonly n: number;
  readonly from: Side;
  readonly to: Side;
  readonly content: string;
  readonly sentAt: number;
  readonly receivedAt: number | null;
  readonly latencyMs: number | null;
  /** HTTP statuses of the sender's attempts for this message (retries included; 0 = no response). */
  readonly attempts: readonly number[];
}

export type Verdict = 'pass' | 'fail';

export interface SessionReport {
  readonly id: string;
  readonly protocols: Readonly<Record<Side, string>>;
  readonly stream: boolean;
  readonly verdict: Verdict;
  readonly reasons: readonly string[];
  readonly startedAt: number;
  readonly endedAt: number;
  readonly turns: readonly TurnReport[];
  /** Side A's handshake: sent, and answered with B's first message (null: never answered). */
  readonly handshake: { readonly sentAt: number; readonly answeredAt: number | null } | null;
  readonly errors: readonly string[];
  readonly counts: {
    readonly attempts: number;
    readonly retries: number;
    readonly statuses: Readonly<Record<string, number>>;
    readonly injectedResets: number;
    readonly duplicates: number;
    readonly appRetries: number;
  };
  readonly notes: readonly unknown[];
  readonly files: Readonly<Record<string, string>>;
  /** The server's log lines for this session (only kept for failed sessions). */
  readonly serverLog: readonly string[];
}

export interface ScenarioReport {
  readonly name: string;
  readonly summary: string;
  readonly passCondition: string;
  readonly verdict: Verdict | 'not-run';
  readonly reasons: readonly string[];
  readonly startedAt: number;
  readonly durationMs: number;
  readonly settings: Readonly<Record<string, unknown>>;
  readonly stats: {
    readonly sessions: number;
    readonly sessionsPassed: number;
    readonly turns: number;
    readonly errors: number;
    readonly latency: LatencySummary;
  };
  readonly events: readonly { readonly t: number; readonly what: string }[];
  /** Checks of the pass condition that could not be made in this run, each with the reason. */
  readonly skippedChecks?: readonly string[];
  /** What was seen that the pass condition does not require (yet). */
  readonly observations?: readonly string[];
  readonly sessions: readonly SessionReport[];
}

export interface RunReport {
  readonly tool: string;
  readonly version: string;
  readonly ok: boolean;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly options: Readonly<Record<string, unknown>>;
  readonly scenarios: readonly ScenarioReport[];
}
