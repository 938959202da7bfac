/** Latency summaries and histogram buckets for the report. */
import type { LatencySummary } from './types.js';

const round = (ms: number): number => Math.round(ms * 10) / 10;

export function summarize(values: readonly number[]): LatencySummary {
  if (values.length === 0) return { count: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
  const mean = sorted.reduce((sum, v) => sum + v, 0) / sorted.length;
  return { count: sorted.length, p50: round(at(0.5)), p90: round(at(0.9)), p99: round(at(0.99)), max: round(sorted.at(-1)!), mean: round(mean) };
}

export interface Bucket {
  /** Upper bound in ms (Infinity for the last). */
  readonly le: number;
  readonly count: number;
}

/** Log-spaced buckets (1, 2, 5, 10, 20, 50 … ms) that cover the values. */
export function histogram(values: readonly number[]): Bucket[] {
  const bounds: number[] = [];
  const max = values.length ? Math.max(...values) : 1;
  for (let decade = 0.1; bounds.length === 0 || bounds.at(-1)! < max; decade *= 10) {
    for (const m of [1, 2, 5]) bounds.push(round(decade * m));
  }
  const counts = bounds.map(() => 0);
  for (const v of values) {
    const index = bounds.findIndex((b) => v <= b);
    counts[index === -1 ? counts.length - 1 : index]!++;
  }
  // Trim empty buckets at both ends, keeping one empty bucket before the first for context.
  const first = Math.max(0, counts.findIndex((c) => c > 0) - 1);
  const last = Math.max(first, counts.findLastIndex((c) => c > 0));
  return bounds.slice(first, last + 1).map((le, i) => ({ le, count: counts[first + i]! }));
}

export const formatMs = (ms: number): string => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)}s` : ms >= 100 ? `${Math.round(ms)}` : ms.toFixed(1));
