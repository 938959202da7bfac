/**
 * Exports the session chart as standalone code for the Stately visualizer: the machine's own
 * configuration (states, events, targets, named guards/actions/delays), with stub
 * implementations, since the visualizer cannot import the project's modules.
 */
import { sessionMachine } from '../machines/session.machine.js';

export function chartSource(): string {
  const { context: _context, ...config } = sessionMachine.config;
  const impl = sessionMachine.implementations;
  const stubs = (names: string[], body: string) => names.map((n) => `    ${n}: ${body},`).join('\n');
  return `// The MotiveProxy session chart, generated from machines/session.machine.ts by \`npm run chart\`.
// Paste this file into the Stately visualizer (stately.ai/viz) or import it into Stately Studio.
// Guards, actions and delays are stubs here; their implementations live in machines/.
import { setup } from 'xstate';

export const sessionMachine = setup({
  guards: {
${stubs(Object.keys(impl.guards), '() => false')}
  },
  actions: {
${stubs(Object.keys(impl.actions), '() => {}')}
  },
  delays: {
${stubs(Object.keys(impl.delays), '30000')}
  },
}).createMachine(${JSON.stringify(config, null, 2)});
`;
}
