/**
 * A de-duplicating work queue keyed by server id, in the style of
 * controller-runtime's workqueue. Processing is asynchronous (a reconcile
 * awaits the store), and the queue keeps the guarantees the reconciler
 * relies on:
 *
 * - a key added many times before it runs is processed once, with the latest cause;
 * - a key is never processed twice at the same time; a key added while it is
 *   being processed runs again after that run (the run may have read the
 *   state before the change that added it);
 * - failures back off per key (exponential, capped); a success resets it;
 * - `addAndWait` resolves after a run that started after the call;
 * - at most `concurrency` keys run at once (MaxConcurrentReconciles), and
 *   each run waits for its slot of the event-loop turn (turns.ts, shared with
 *   the agents' messages), so a store whose reads resolve at once (SQLite)
 *   still yields to I/O: 200 reconciles in one turn held the loop for 0.9 s
 *   in a connect storm (docs/benchmarks.md).
 */
import { turns, type TurnBudget } from "../turns.js";

export interface QueueOptions {
  /** Processes one key; throws (or rejects) to be retried with backoff. Returns a requeue delay, if any. */
  process: (key: string, cause: string) => Promise<{ requeueAfterMs?: number } | void> | { requeueAfterMs?: number } | void;
  onError: (key: string, err: unknown, retryInMs: number) => void;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** The event-loop time this queue shares (default: the process's `turns`). */
  budget?: TurnBudget;
  /** Keys processed at the same time (default DEFAULT_CONCURRENCY). */
  concurrency?: number;
}

/**
 * Default number of keys processed at once. On SQLite every read resolves at
 * once, so this only bounds interleaving; on PostgreSQL a reconcile is a few
 * round trips (reads, then one commit), and running one at a time would cap
 * throughput at 1/latency. Eight overlap those round trips while leaving most
 * of a typical connection pool (node-postgres defaults to 10) to API calls.
 * Keys are independent servers; what must not overlap (one open command per
 * server) is the database's invariant, and one key never runs twice at once.
 */
export const DEFAULT_CONCURRENCY = 8;

/**
 * On SQLite: a reconcile's commit waits for the end of the event-loop turn
 * (group commit, store/sqlite/sqlite-store.ts), so its reads and decision
 * take microseconds but its run lasts a turn or two. Eight at once capped a
 * mass stop at about 350 reconciles per second with the manager partly idle
 * (docs/benchmarks.md); 64 let a turn's group hold many reconciles.
 */
export const SQLITE_CONCURRENCY = 64;

export class WorkQueue {
  /** Keys waiting to run, with the cause of their latest add (insertion order: oldest first). */
  private readonly pending = new Map<string, string>();
  /** Keys running now. */
  private readonly processing = new Set<string>();
  /** Slots of the turn asked for and not granted yet (each starts one run). */
  private slotsAsked = 0;
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  /** Callers awaiting the next run of a key (addAndWait), handed to that run when it starts. */
  private readonly waiters = new Map<string, (() => void)[]>();
  /** Callers of idle() and stop(), woken when nothing is pending or running. */
  private idleWaiters: (() => void)[] = [];
  private scheduled = false;
  private stopped = false;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly concurrency: number;
  private readonly budget: TurnBudget;

  constructor(private readonly opts: QueueOptions) {
    this.baseBackoffMs = opts.baseBackoffMs ?? 200;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
    this.budget = opts.budget ?? turns;
    this.concurrency = Math.max(1, opts.concurrency ?? DEFAULT_CONCURRENCY);
  }

  /** Queues `key` now; `cause` (the latest wins) explains the run in the ledger. */
  add(key: string, cause: string): void {
    if (this.stopped) return;
    this.pending.set(key, cause);
    this.schedule();
  }

  /**
   * Queues `key` now and resolves once a run that started after this call has
   * finished, whether it succeeded or failed (a failure is retried with backoff
   * like any other): for callers that answer with the state after the run.
   * Resolves at once when the queue is stopped.
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

  /** Keys waiting to run (not counting those running now). */
  get length(): number {
    return this.pending.size;
  }

  /** Keys running now. */
  get active(): number {
    return this.processing.size;
  }

  /** Resolves once no key is pending or running (scheduled retries and deadlines do not count). */
  idle(): Promise<void> {
    if (this.pending.size === 0 && this.processing.size === 0 && this.slotsAsked === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Drops pending and scheduled work and ignores later adds; resolves once the
   * runs in progress have finished (so the store can be closed after it).
   */
  stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    this.pending.clear();
    for (const list of this.waiters.values()) for (const w of list) w();
    this.waiters.clear();
    return this.idle();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  /**
   * Asks for a slot of the turn for each run that could start (up to the
   * concurrency, at most one per pending key); a granted slot starts the
   * oldest pending key that is not running. The key stays pending while the
   * slot is awaited: a change meanwhile merges into that run instead of
   * making another one after it.
   */
  private pump(): void {
    if (this.stopped) return;
    while (this.processing.size + this.slotsAsked < this.concurrency && this.slotsAsked < this.pending.size) {
      this.slotsAsked++;
      void this.budget.slot().then(() => {
        this.slotsAsked--;
        const next = this.stopped ? undefined : this.nextRunnable();
        if (next) void this.run(next[0], next[1]);
        // Nothing to start: what is pending is running, and its run's end pumps again.
        else this.wakeIdle();
      });
    }
  }

  /** The oldest pending key that is not running now (one running stays pending and runs again after). */
  private nextRunnable(): [string, string] | undefined {
    for (const entry of this.pending) if (!this.processing.has(entry[0])) return entry;
    return undefined;
  }

  /** After a run or a slot: more runs if keys are pending, else wake idle() callers once nothing runs. */
  private settle(): void {
    if (this.pending.size > 0 && !this.stopped) this.pump();
    else this.wakeIdle();
  }

  private wakeIdle(): void {
    if (this.processing.size > 0 || this.slotsAsked > 0 || (this.pending.size > 0 && !this.stopped)) return;
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of idle) w();
  }

  private async run(key: string, cause: string): Promise<void> {
    this.pending.delete(key);
    this.processing.add(key);
    // Whoever waits for "the next run" now waits for this one; later callers wait for the one after.
    const waiting = this.waiters.get(key);
    this.waiters.delete(key);
    try {
      const r = await this.opts.process(key, cause);
      this.failures.delete(key);
      if (r?.requeueAfterMs !== undefined) this.addAfter(key, r.requeueAfterMs, "deadline");
    } catch (err) {
      const count = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, count);
      const delay = Math.min(this.maxBackoffMs, this.baseBackoffMs * 2 ** (count - 1));
      try {
        this.opts.onError(key, err, delay);
      } catch {
        // A failing error reporter must not wedge the key.
      }
      this.addAfter(key, delay, `retry after error (${count})`);
    } finally {
      this.processing.delete(key);
      if (waiting) for (const w of waiting) w();
      this.settle();
    }
  }
}
