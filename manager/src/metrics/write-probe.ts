/**
 * Is the database writable? A real write answers best: every few seconds a
 * tiny transaction of its own (`Store.probeWrite`: one row of `meta`). It
 * fails when another process holds the write lock past the probe's short
 * wait, when the file or its file system became read-only, when the disk is
 * full, or on an I/O error — each a reason the manager cannot keep its
 * promises, so health reports NOT_SERVING until a probe succeeds again.
 *
 * The store waits at most `lockWaitMs` for a held lock, so a probe blocks
 * the event loop (SQLite is synchronous here) for no longer than that.
 */
import { performance } from "node:perf_hooks";
import type { Store } from "../store/store.js";

/** What the probe needs of the store. */
export type ProbeTarget = Pick<Store, "probeWrite">;

export interface ProbeResult {
  ok: boolean;
  seconds: number;
  /** What failed ("SQLITE_BUSY: database is locked"); empty when ok. */
  error: string;
}

export class WriteProbe {
  #timer: NodeJS.Timeout | undefined;
  #last: ProbeResult | undefined;

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
    this.check();
    this.#timer = setInterval(() => this.check(), this.opts.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One probe; reports it through `onResult` and returns it. */
  check(): ProbeResult {
    const t0 = performance.now();
    let result: ProbeResult;
    try {
      const written = this.target.probeWrite(String((this.opts.now ?? Date.now)()), this.opts.lockWaitMs ?? 250);
      // Never inside someone else's transaction (none spans a tick today): keep the last answer.
      if (!written) return this.#last ?? { ok: false, seconds: 0, error: "database busy in a transaction" };
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
