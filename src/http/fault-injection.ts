/**
 * FAULT_INJECTION — for testing the e2e harness only, off by default. It turns the service
 * into a deliberately faulty build, so that `motive-proxy e2e` can show that it catches and
 * names the failure:
 *
 *   duplicate-delivery  one delivery carries its message twice (as if it were queued twice)
 *   drop-delivery       one delivery arrives empty: its message is lost
 *
 * Exactly one delivery per service process is corrupted: the first reply that is a side's
 * second delivery or later (so a session is under way), and not a repeat for a retry.
 * The service logs a warning naming the session when it happens.
 */
import type { Outcome } from '../sessions/session.js';

export const FAULT_KINDS = ['off', 'duplicate-delivery', 'drop-delivery'] as const;
export type FaultInjection = (typeof FAULT_KINDS)[number];

let injected = false;

/** A step for a reply's outcome promise: returns the outcome, corrupted once per process. */
export function injectFault(kind: FaultInjection, warn: (message: string) => void): (outcome: Outcome) => Outcome {
  return (outcome) => {
    if (kind === 'off' || injected || outcome.type !== 'reply' || outcome.repeat || outcome.delivery < 1) return outcome;
    injected = true;
    if (kind === 'duplicate-delivery') {
      warn(`FAULT_INJECTION=duplicate-delivery: delivery ${outcome.delivery} is sent with its message twice`);
      return { ...outcome, content: `${outcome.content}\n\n${outcome.content}` };
    }
    warn(`FAULT_INJECTION=drop-delivery: delivery ${outcome.delivery} is sent empty; its message is lost`);
    return { ...outcome, content: '' };
  };
}
