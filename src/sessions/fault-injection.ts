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
 *
 * It is installed on the registry at start only when asked for, so no request path knows of it.
 */
import type { Logger } from '../telemetry/logger.js';
import type { SessionRegistry } from './registry.js';
import type { Outcome } from './session.js';

export const FAULT_KINDS = ['off', 'duplicate-delivery', 'drop-delivery'] as const;
export type FaultInjection = (typeof FAULT_KINDS)[number];

let injected = false;

/** Makes `registry` corrupt one delivery (per process) the way `kind` says. */
export function installFaultInjection(registry: SessionRegistry, kind: Exclude<FaultInjection, 'off'>, logger: Logger): void {
  const submit = registry.submit.bind(registry);
  registry.submit = (sessionId, request, requestId, options) => {
    const result = submit(sessionId, request, requestId, options);
    if ('error' in result) return result;
    const warn = (message: string) => logger.warn({ request_id: requestId, session_id: sessionId, side: result.side }, message);
    return { ...result, outcome: result.outcome.then(injectFault(kind, warn)) };
  };
}

/** A step for a reply's outcome promise: returns the outcome, corrupted once per process. */
function injectFault(kind: FaultInjection, warn: (message: string) => void): (outcome: Outcome) => Outcome {
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
