/**
 * Tasks in line per key: those of one key run one at a time, in the order
 * they were queued; those of different keys run concurrently. A task that
 * fails rejects its own caller only: the next one of its key still runs.
 * A key is forgotten as soon as its last task has settled, so keys that come
 * and go (container ids, server ids) hold no memory.
 */
export class KeyedQueue {
  /** Per key, the last task queued, settled without an error (the next one waits for it). */
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Keys with a task running or queued. */
  get keys(): string[] {
    return [...this.tails.keys()];
  }

  /** Runs `fn` once every task queued before it for `key` has settled; settles as `fn` does. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }
}
