/**
 * FAULT_INJECTION — for testing the e2e harness only, off by default. It turns the service
 * into a deliberately faulty build, so that `motive-proxy e2e` can show that it catches and
 * names the failure:
 *
 *   duplicate-delivery  one delivery carries its message twice (as if it were queued twice)
 *   drop-delivery       one delivery arrives empty: its message is lost
 *   crash-after-delivery-append
 *                       the process kills itself (SIGKILL) once that delivery is in the
 *                       journal and before its reply is written: the cluster tests' owner
 *                       that dies between the commit point and the answer
 *   crash-before-turn-append
 *                       the process kills itself (SIGKILL) when the second new turn it sees
 *                       is about to be journaled: an owner that dies before the commit point
 *   stall-before-turn-append
 *                       at the same point the process freezes for 3 s (a busy loop, as a long
 *                       GC pause would): an owner paused past its lease between its checks and
 *                       its append, which the fence inside Redis must refuse
 *
 * Exactly one delivery per service process is corrupted: the first reply that is a side's
 * second delivery or later (so a session is under way), and not a repeat for a retry.
 * The service logs a warning naming the session when it happens.
 *
 * It is installed on the registry at start only when asked for, so no request path knows of it.
 */
import type { Logger } from '../telemetry/logger.js';
import type { SessionRegistry } from './registry.js';
import type { StepListener } from './fact-stream.js';
import type { Outcome } from './session.js';

export const FAULT_KINDS = ['off', 'duplicate-delivery', 'drop-delivery', 'crash-after-delivery-append', 'crash-before-turn-append', 'stall-before-turn-append'] as const;
export type FaultInjection = (typeof FAULT_KINDS)[number];

let injected = false;

/** Makes `registry` corrupt one delivery (per process) the way `kind` says. */
export function installFaultInjection(registry: SessionRegistry, kind: 'duplicate-delivery' | 'drop-delivery' | 'crash-after-delivery-append', logger: Logger): void {
  const submit = registry.submit.bind(registry);
  registry.submit = (sessionId, request, requestId, options) => {
    const result = submit(sessionId, request, requestId, options);
    if ('error' in result) return result;
    const warn = (message: string) => logger.warn({ request_id: requestId, session_id: sessionId, side: result.side }, message);
    return { ...result, outcome: result.outcome.then(injectFault(kind, warn)) };
  };
}

/**
 * crash-before-turn-append and stall-before-turn-append: a fact-stream listener to subscribe
 * before the journal's, which acts when the second new turn (MessageSent) it sees is about to
 * be journaled: kills the process, or freezes it for 3 s.
 */
export function beforeTurnAppend(kind: 'crash-before-turn-append' | 'stall-before-turn-append', logger: Logger): StepListener {
  let turns = 0;
  return (step) => {
    for (const fact of step.facts) {
      if (fact.type !== 'MessageSent' || ++turns !== 2) continue;
      if (kind === 'crash-before-turn-append') {
        logger.warn({ session_id: fact.session, side: fact.side }, 'FAULT_INJECTION=crash-before-turn-append: killing this process before this turn is journaled');
        process.kill(process.pid, 'SIGKILL');
      }
      logger.warn({ session_id: fact.session, side: fact.side }, 'FAULT_INJECTION=stall-before-turn-append: freezing this process for 3 s before this turn is journaled');
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        // frozen, as in a long GC pause
      }
    }
  };
}

/** A step for a reply's outcome promise: returns the outcome, corrupted once per process. */
function injectFault(kind: FaultInjection, warn: (message: string) => void): (outcome: Outcome) => Outcome {
  return (outcome) => {
    if (kind === 'off' || injected || outcome.type !== 'reply' || outcome.repeat || outcome.delivery < 1) return outcome;
    injected = true;
    if (kind === 'crash-after-delivery-append') {
      warn(`FAULT_INJECTION=crash-after-delivery-append: delivery ${outcome.delivery} is in the journal; killing this process before it is written`);
      process.kill(process.pid, 'SIGKILL');
      return outcome;
    }
    if (kind === 'duplicate-delivery') {
      warn(`FAULT_INJECTION=duplicate-delivery: delivery ${outcome.delivery} is sent with its message twice`);
      return { ...outcome, content: `${outcome.content}\n\n${outcome.content}` };
    }
    warn(`FAULT_INJECTION=drop-delivery: delivery ${outcome.delivery} is sent empty; its message is lost`);
    return { ...outcome, content: '' };
  };
}
