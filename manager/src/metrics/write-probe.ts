/**
 * Is the database writable? A real write answers best: every few seconds a
 * tiny transaction (BEGIN IMMEDIATE, upsert one row of `meta`, COMMIT). It
 * fails when another process holds the write lock past the probe's short busy
 * timeout, when the file or its file system became read-only, when the disk
 * is full, or on an I/O error — each a reason the manager cannot keep its
 * promises, so health reports NOT_SERVING until a probe succeeds again.
 *
 * The probe runs on the manager's own connection (better-sqlite3 is
 * synchronous, so it never interleaves with another transaction) and lowers
 * the busy timeout for its own statements only, so a held lock blocks the
 * event loop for at most `lockWaitMs`.
 */
import { performance } from "node:perf_hooks";
import type { Db } from "../store/database.js";

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
    private readonly db: Db,
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
    const db = this.db;
    // Never inside someone else's transaction (none spans a tick today; be sure).
    if (!db.open || db.inTransaction) return this.#last ?? { ok: false, seconds: 0, error: "database closed" };
    const busy = db.pragma("busy_timeout", { simple: true }) as number;
    const t0 = performance.now();
    let result: ProbeResult;
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(this.opts.lockWaitMs ?? 250))}`);
      db.exec("BEGIN IMMEDIATE");
      try {
        db.prepare("INSERT INTO meta (key, value) VALUES ('write_probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(
          String((this.opts.now ?? Date.now)()),
        );
        db.exec("COMMIT");
      } catch (err) {
        if (db.inTransaction) db.exec("ROLLBACK");
        throw err;
      }
      result = { ok: true, seconds: (performance.now() - t0) / 1000, error: "" };
    } catch (err) {
      const e = err as Error & { code?: string };
      result = { ok: false, seconds: (performance.now() - t0) / 1000, error: `${e.code ? `${e.code}: ` : ""}${e.message}` };
    } finally {
      try {
        db.pragma(`busy_timeout = ${busy}`);
      } catch {
        // closed meanwhile
      }
    }
    const previous = this.#last;
    this.#last = result;
    this.opts.onResult(result, previous);
    return result;
  }
}
