/**
 * A small seeded generator (mulberry32), so that a chaos run's schedule can be replayed with
 * CHAOS_SEED. Each actor of a run (every side of every session, and the service's saboteur)
 * draws from its own stream, derived from the seed and its name: one actor's draws do not
 * shift another's when the processes interleave differently.
 */

/** FNV-1a over the parts, to derive one stream per actor from the run's seed. */
function hash(...parts: readonly (string | number)[]): number {
  let h = 2166136261;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

export class Random {
  private state: number;

  constructor(seed: number, ...names: readonly (string | number)[]) {
    this.state = hash(seed, ...names);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}
