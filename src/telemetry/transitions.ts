/**
 * The transition log: one line per session step, from the fact stream, with the facts it made,
 * the side and request they concern, and the state the session reached.
 */
import type { SessionStep, StepListener } from '../sessions/fact-stream.js';
import type { Logger } from './logger.js';

export function logSteps(logger: Logger): StepListener {
  return (step: SessionStep) => {
    if (!logger.isLevelEnabled('info')) return;
    const [first] = step.facts;
    const side = first && 'side' in first ? first.side : null;
    const request = first && 'request' in first ? first.request : null;
    logger.info(
      { session_id: step.session, fact: step.facts.map((f) => f.type).join(','), side, request_id: request, from: step.previous, state: step.state },
      'session transition',
    );
  };
}
