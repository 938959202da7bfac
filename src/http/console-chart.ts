/**
 * The session chart as plain JSON for the web console, read from the machine's own definition
 * (sessionMachine.config in machines/session.machine.ts), so the drawing can never drift from
 * the chart the sessions run. The console lays it out and highlights a session's state.
 */
import { sessionMachine } from '../../machines/session.machine.js';

export interface ChartTransition {
  /** The event name; `always` for an eventless transition, `after <delay>` for a timer. */
  readonly event: string;
  readonly kind: 'event' | 'always' | 'after';
  /** The state it leads to; the same state for a self-transition (re-entered or not). */
  readonly target: string;
  readonly guard: string | null;
  readonly actions: readonly string[];
}

export interface ChartState {
  readonly name: string;
  readonly final: boolean;
  readonly transitions: readonly ChartTransition[];
}

export interface ChartJson {
  readonly id: string;
  readonly initial: string;
  /** In the order the machine declares them. */
  readonly states: readonly ChartState[];
}

type Raw = Record<string, unknown>;

const isRecord = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

const names = (v: unknown): string[] => {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(names);
  if (isRecord(v) && typeof v['type'] === 'string') return [v['type']];
  return [];
};

/** `'X'`, `'#id.X'`, `'.X'` → `X`; no target → the state itself. */
const targetName = (target: unknown, self: string): string => {
  const first = Array.isArray(target) ? target[0] : target;
  if (typeof first !== 'string' || first === '') return self;
  return first.replace(/^#[^.]*\./, '').replace(/^\./, '');
};

/** One config entry (a target string, an object, or an array of guarded alternatives). */
function transitionsOf(value: unknown, event: string, kind: ChartTransition['kind'], self: string): ChartTransition[] {
  const alternatives = Array.isArray(value) ? value : [value];
  const out: ChartTransition[] = [];
  for (const alt of alternatives) {
    if (typeof alt === 'string') {
      out.push({ event, kind, target: targetName(alt, self), guard: null, actions: [] });
    } else if (isRecord(alt)) {
      const guard = names(alt['guard'])[0] ?? null;
      out.push({ event, kind, target: targetName(alt['target'], self), guard, actions: names(alt['actions']) });
    }
  }
  return out;
}

export function chartOf(config: unknown): ChartJson {
  const root = isRecord(config) ? config : {};
  const states = isRecord(root['states']) ? root['states'] : {};
  const list: ChartState[] = Object.entries(states).map(([name, raw]) => {
    const node = isRecord(raw) ? raw : {};
    const transitions: ChartTransition[] = [];
    if (node['always'] !== undefined) transitions.push(...transitionsOf(node['always'], 'always', 'always', name));
    if (isRecord(node['after'])) {
      for (const [delay, t] of Object.entries(node['after'])) transitions.push(...transitionsOf(t, `after ${delay}`, 'after', name));
    }
    if (isRecord(node['on'])) {
      for (const [event, t] of Object.entries(node['on'])) transitions.push(...transitionsOf(t, event, 'event', name));
    }
    return { name, final: node['type'] === 'final', transitions };
  });
  const initial = typeof root['initial'] === 'string' ? root['initial'] : (list[0]?.name ?? '');
  return { id: typeof root['id'] === 'string' ? root['id'] : 'session', initial, states: list };
}

let cached: ChartJson | null = null;

/** The running chart, computed once. */
export function sessionChart(): ChartJson {
  cached ??= chartOf(sessionMachine.config);
  return cached;
}
