/** A small seeded random generator (mulberry32), so a run can be repeated with --seed. */

export type Rng = () => number;

/** A 32-bit hash of strings, to derive one generator per session and side from the run's seed. */
export function hash(...parts: readonly (string | number)[]): number {
  let h = 2166136261;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

export function rng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const pick = <T>(random: Rng, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
