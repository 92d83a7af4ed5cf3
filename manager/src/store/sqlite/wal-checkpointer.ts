import { Worker } from "node:worker_threads";
import type { Db } from "./database.js";
import type { WalCheckpointWorkerData, WalCheckpointWorkerMessage } from "./wal-checkpoint-worker.js";

/** SQLite's default: checkpoint in the COMMIT that takes the WAL past this many pages. */
export const AUTOCHECKPOINT_PAGES = 1000;

export interface WalCheckpointerOptions {
  /** A checkpoint failed, or the worker died (then the main connection checkpoints again). */
  onWarning?: (message: string) => void;
  /** How often the worker looks at the -wal file (default 1 s). */
  intervalMs?: number;
  /** A -wal file larger than this is truncated after its checkpoint (default 64 MiB). */
  truncateBytes?: number;
}

/** The running worker; `stop()` joins it (before the main connection closes). */
export interface WalCheckpointer {
  stop(): Promise<void>;
  /** The worker's thread, for tests that make it die. */
  readonly worker: Worker;
}

/** How long stop() waits for the worker's checkpoint in progress before terminating it. */
const STOP_WAIT_MS = 10_000;

/**
 * Moves WAL checkpoints off the event loop: turns off SQLite's automatic
 * checkpoint on `db` (which ran inside whichever COMMIT took the WAL past
 * 1000 pages, copying it into the database and fsyncing on the main thread)
 * and starts a worker thread with its own connection to `path` that
 * checkpoints instead (wal-checkpoint-worker.ts says when and how). The
 * worker does not keep the process alive. Should it die, `db` checkpoints
 * automatically again (wal_autocheckpoint = 1000) so the WAL never grows
 * without bound, and `onWarning` says so.
 */
export function startWalCheckpointer(db: Db, path: string, opts: WalCheckpointerOptions = {}): WalCheckpointer {
  const warn = opts.onWarning ?? (() => {});
  const data: WalCheckpointWorkerData = {
    path,
    intervalMs: opts.intervalMs ?? 1000,
    truncateBytes: opts.truncateBytes ?? 64 * 1024 * 1024,
    busyMs: 5000,
    truncateBusyMs: 100,
  };
  db.pragma("wal_autocheckpoint = 0");
  const worker = spawnWorker(data);
  worker.unref();
  let stopping = false;
  let exited = false;
  let fellBack = false;
  const exit = new Promise<void>((resolve) => worker.once("exit", () => resolve()));

  const fallBack = (why: string) => {
    if (fellBack || stopping) return;
    fellBack = true;
    if (db.open) db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    warn(`the WAL checkpoint worker stopped (${why}); SQLite checkpoints in the manager's commits again (wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}), which can stall the event loop while it copies the WAL`);
  };
  worker.on("message", (m: WalCheckpointWorkerMessage) => warn(m.warning));
  worker.on("error", (err) => fallBack(err.message));
  worker.on("exit", (code) => {
    exited = true;
    fallBack(`exit code ${code}`);
  });

  return {
    worker,
    async stop() {
      if (stopping) return exit;
      stopping = true;
      if (exited) return;
      worker.postMessage("stop");
      const deadline = setTimeout(() => void worker.terminate(), STOP_WAIT_MS);
      await exit;
      clearTimeout(deadline);
    },
  };
}

/**
 * The worker runs the TypeScript source when this module does (tsx in a
 * checkout, vitest), registering tsx in its own thread: a worker does not
 * inherit the loader that bin/berth-manager.mjs registers with tsx's
 * register(). The bundle (scripts/build.mjs) runs wal-checkpoint-worker.mjs
 * built beside it.
 */
function spawnWorker(workerData: WalCheckpointWorkerData): Worker {
  if (!import.meta.url.endsWith(".ts")) return new Worker(new URL("./wal-checkpoint-worker.mjs", import.meta.url), { workerData });
  const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
  const source = JSON.stringify(new URL("./wal-checkpoint-worker.ts", import.meta.url).href);
  return new Worker(`import(${tsx}).then((tsx) => { tsx.register(); return import(${source}); });`, { eval: true, workerData });
}
