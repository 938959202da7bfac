/**
 * The chart file the Stately visualizer loads is generated from the real machine and is
 * current: same states, same events, same targets.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sessionMachine } from '../machines/session.machine.js';
import { chartSource } from '../src/chart.js';

const chartPath = new URL('../docs/session-chart.js', import.meta.url);

function transitions(machine: { states: Record<string, { on: Record<string, unknown[]>; always?: unknown[] }> }) {
  const out: string[] = [];
  for (const [name, node] of Object.entries(machine.states)) {
    for (const [event, list] of Object.entries(node.on)) {
      for (const t of list as Array<{ target?: Array<{ key: string }> }>) out.push(`${name} --${event}--> ${t.target?.map((n) => n.key).join(',') ?? '(self)'}`);
    }
    for (const t of (node.always ?? []) as Array<{ target?: Array<{ key: string }> }>) out.push(`${name} --always--> ${t.target?.map((n) => n.key).join(',')}`);
  }
  return out.sort();
}

describe('session chart export', () => {
  it('docs/session-chart.js is what `npm run chart` generates today', () => {
    expect(readFileSync(chartPath, 'utf8')).toBe(chartSource());
  });

  it('loads as a machine with the same states and transitions as machines/session.machine.ts', async () => {
    const { sessionMachine: exported } = (await import(chartPath.href)) as { sessionMachine: typeof sessionMachine };
    expect(Object.keys(exported.states)).toEqual(['EMPTY', 'AWAITING_PEER', 'ACTIVE', 'DORMANT', 'CLOSING', 'CLOSED']);
    expect(transitions(exported as never)).toEqual(transitions(sessionMachine as never));
    expect(transitions(sessionMachine as never)).toContain('DORMANT --xstate.after.sessionTtl.session.DORMANT--> CLOSING');
  });
});
