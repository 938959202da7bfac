/**
 * A clock for a session being rebuilt from its journal: while replaying, timers are noted
 * but not started (nothing may fire during replay); on resume, the ones still pending start
 * for real, so an idle session's TTL counts again from the restart.
 */
/** XState's clock contract (the option `clock` of createActor). */
export interface Clock {
  setTimeout(fn: (...args: unknown[]) => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export class ReplayClock implements Clock {
  private replaying = true;
  private next = 0;
  private readonly pending = new Map<number, { fn: () => void; ms: number }>();
  private readonly running = new Map<number, NodeJS.Timeout>();

  setTimeout(fn: (...args: unknown[]) => void, ms: number): number {
    const id = ++this.next;
    if (this.replaying) {
      this.pending.set(id, { fn, ms });
    } else {
      this.running.set(id, setTimeout(() => {
        this.running.delete(id);
        fn();
      }, ms));
    }
    return id;
  }

  clearTimeout(id: unknown): void {
    if (this.pending.delete(id as number)) return;
    const handle = this.running.get(id as number);
    if (handle) clearTimeout(handle);
    this.running.delete(id as number);
  }

  resume(): void {
    this.replaying = false;
    const pending = [...this.pending];
    this.pending.clear();
    for (const [id, { fn, ms }] of pending) {
      this.running.set(id, setTimeout(() => {
        this.running.delete(id);
        fn();
      }, ms));
    }
  }
}
