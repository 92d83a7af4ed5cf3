/**
 * A de-duplicating work queue keyed by server id, in the style of
 * controller-runtime's workqueue: a key added many times before it is processed
 * runs once; a key is never processed twice at the same time (processing is
 * synchronous); failures back off per key; `addAfter` schedules deadlines.
 */
export interface QueueOptions {
  /** Processes one key; throws to be retried with backoff. Returns a requeue delay, if any. */
  process: (key: string, cause: string) => { requeueAfterMs?: number } | void;
  onError: (key: string, err: unknown, retryInMs: number) => void;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Keys processed per macrotask before yielding to I/O. */
  batchSize?: number;
}

export class WorkQueue {
  private readonly pending = new Map<string, string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  /** Callers awaiting the next run of a key (addAndWait). */
  private readonly waiters = new Map<string, (() => void)[]>();
  private scheduled = false;
  private stopped = false;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly batchSize: number;

  constructor(private readonly opts: QueueOptions) {
    this.baseBackoffMs = opts.baseBackoffMs ?? 200;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
    this.batchSize = opts.batchSize ?? 200;
  }

  /** Queues `key` now; `cause` (the latest wins) explains the run in the ledger. */
  add(key: string, cause: string): void {
    if (this.stopped) return;
    this.pending.set(key, cause);
    this.schedule();
  }

  /**
   * Queues `key` now and resolves once its next run has finished, whether it
   * succeeded or failed (a failure is retried with backoff like any other):
   * for callers that answer with the state after the run. Resolves at once
   * when the queue is stopped.
   */
  addAndWait(key: string, cause: string): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.waiters.get(key);
      if (list) list.push(resolve);
      else this.waiters.set(key, [resolve]);
      this.add(key, cause);
    });
  }

  /** Queues `key` after `ms`; an earlier scheduled run wins over a later one. */
  addAfter(key: string, ms: number, cause: string): void {
    if (this.stopped) return;
    const at = Date.now() + Math.max(0, ms);
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key, cause);
    }, Math.max(0, ms));
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  get length(): number {
    return this.pending.size;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    this.pending.clear();
    for (const list of this.waiters.values()) for (const w of list) w();
    this.waiters.clear();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.drain());
  }

  private drain(): void {
    this.scheduled = false;
    let n = 0;
    for (const [key, cause] of this.pending) {
      if (this.stopped || n++ >= this.batchSize) break;
      this.pending.delete(key);
      try {
        const r = this.opts.process(key, cause);
        this.failures.delete(key);
        if (r?.requeueAfterMs !== undefined) this.addAfter(key, r.requeueAfterMs, "deadline");
      } catch (err) {
        const count = (this.failures.get(key) ?? 0) + 1;
        this.failures.set(key, count);
        const delay = Math.min(this.maxBackoffMs, this.baseBackoffMs * 2 ** (count - 1));
        this.opts.onError(key, err, delay);
        this.addAfter(key, delay, `retry after error (${count})`);
      }
      const waiting = this.waiters.get(key);
      if (waiting) {
        this.waiters.delete(key);
        for (const w of waiting) w();
      }
    }
    if (this.pending.size > 0) this.schedule();
  }
}
