/**
 * Is the database writable? A real write answers best: every few seconds a
 * tiny transaction of its own (`Store.probeWrite`: one row of `meta`). It
 * fails when another process holds the write lock past the probe's short
 * wait, when the file or its file system became read-only, when the disk is
 * full, or on an I/O error — each a reason the manager cannot keep its
 * promises, so health reports NOT_SERVING until a probe succeeds again.
 *
 * The store waits at most `lockWaitMs` for a held lock, so a probe blocks
 * the event loop (SQLite is synchronous here) for no longer than that. One
 * probe at a time: a probe still waiting (a database that does not answer)
 * is not joined by another every interval.
 */
import { performance } from "node:perf_hooks";
import type { Store as StoreContract } from "../store/store.js";

/** What the probe needs of the store. */
export type ProbeTarget = Pick<StoreContract, "probeWrite">;

export interface ProbeResult {
  ok: boolean;
  seconds: number;
  /** What failed ("SQLITE_BUSY: database is locked"); empty when ok. */
  error: string;
}

export class WriteProbe {
  #timer: NodeJS.Timeout | undefined;
  #last: ProbeResult | undefined;
  #inflight: Promise<ProbeResult> | undefined;

  constructor(
    private readonly target: ProbeTarget,
    private readonly opts: {
      intervalMs: number;
      /** How long the probe waits for another writer's lock (default 250 ms). */
      lockWaitMs?: number;
      onResult: (r: ProbeResult, previous: ProbeResult | undefined) => void;
      now?: () => number;
    },
  ) {}

  /** The latest result; undefined before the first probe. */
  get last(): ProbeResult | undefined {
    return this.#last;
  }

  /** Probes now, then every interval. */
  start(): void {
    void this.check();
    this.#timer = setInterval(() => void this.check(), this.opts.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One probe (or the one still running); reports it through `onResult` and
   * resolves with it. Never rejects: a failed write is a result.
   */
  check(): Promise<ProbeResult> {
    this.#inflight ??= this.#probe().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #probe(): Promise<ProbeResult> {
    const t0 = performance.now();
    let result: ProbeResult;
    try {
      await this.target.probeWrite(String((this.opts.now ?? Date.now)()), this.opts.lockWaitMs ?? 250);
      result = { ok: true, seconds: (performance.now() - t0) / 1000, error: "" };
    } catch (err) {
      const e = err as Error & { code?: string };
      result = { ok: false, seconds: (performance.now() - t0) / 1000, error: `${e.code ? `${e.code}: ` : ""}${e.message}` };
    }
    const previous = this.#last;
    this.#last = result;
    this.opts.onResult(result, previous);
    return result;
  }
}
