/**
 * The WAL checkpoint worker's thread (wal-checkpointer.ts starts and stops
 * it): its own connection to the store's database file, copying the WAL
 * into the database so no COMMIT on the manager's event loop has to.
 *
 * Every `intervalMs` it stats the -wal file, and checkpoints when the file's
 * size or modification time changed since the last checkpoint, or the last
 * one left frames behind (a reader still needed them):
 *
 * - PASSIVE, which never waits for the manager's connection: it copies what
 *   no reader needs, and SQLite starts the WAL over at the next write once
 *   all of it is copied. The file keeps its size.
 * - then, when the file is larger than `truncateBytes`, TRUNCATE, which waits
 *   (at most `truncateBusyMs`, the busy timeout it runs under) for the
 *   manager's transaction of the moment to end and shrinks the file to zero.
 *   Run after the PASSIVE pass, it has little left to copy, so the write
 *   lock it holds meanwhile is short. When it cannot get the locks in time,
 *   the PASSIVE pass stands and the next checkpoint (after the next write)
 *   tries again.
 *
 * Messages: the worker posts `{ warning }` (a checkpoint failed, once per
 * distinct message until one succeeds); the parent posts `"stop"`, upon
 * which the worker closes its connection and its thread ends.
 */
import { statSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** What the parent passes as `workerData`. */
export interface WalCheckpointWorkerData {
  path: string;
  intervalMs: number;
  truncateBytes: number;
  /** The busy timeout of PASSIVE checkpoints (which do not wait on it) and of opening. */
  busyMs: number;
  /** How long TRUNCATE may wait for the manager's transaction and readers. */
  truncateBusyMs: number;
}

/** What the worker posts to its parent. */
export interface WalCheckpointWorkerMessage {
  warning: string;
}

/** One row of `PRAGMA wal_checkpoint`: busy is 1 when the checkpoint could not finish (SQLITE_BUSY). */
interface CheckpointRow {
  busy: number;
  log: number;
  checkpointed: number;
}

const data = workerData as WalCheckpointWorkerData;
const port = parentPort!;
const db = new Database(data.path, { fileMustExist: true });
db.pragma(`busy_timeout = ${data.busyMs}`);

const walPath = `${data.path}-wal`;
/** The -wal file as stat saw it before the last checkpoint: `size:mtime`. */
let seen = "";
/** The last checkpoint left frames in the WAL that a reader still needed. */
let behind = false;
let lastWarning: string | undefined;

function checkpoint(mode: "PASSIVE" | "TRUNCATE"): CheckpointRow {
  return (db.pragma(`wal_checkpoint(${mode})`) as CheckpointRow[])[0]!;
}

function tick(): void {
  let size: number;
  let stamp: string;
  try {
    const st = statSync(walPath);
    size = st.size;
    stamp = `${st.size}:${st.mtimeMs}`;
  } catch {
    return; // no WAL (yet): nothing to checkpoint
  }
  if (stamp === seen && !behind) return;
  try {
    let row = checkpoint("PASSIVE");
    if (size > data.truncateBytes) {
      db.pragma(`busy_timeout = ${data.truncateBusyMs}`);
      try {
        const truncated = checkpoint("TRUNCATE");
        if (truncated.busy === 0) row = truncated;
      } finally {
        db.pragma(`busy_timeout = ${data.busyMs}`);
      }
    }
    behind = row.busy !== 0 || row.checkpointed < row.log;
    // The stamp from before: a write that came in meanwhile makes the next tick look again.
    seen = stamp;
    lastWarning = undefined;
  } catch (err) {
    const warning = `WAL checkpoint of ${data.path} failed: ${err instanceof Error ? err.message : String(err)}; the next one is tried in ${data.intervalMs} ms`;
    if (warning !== lastWarning) port.postMessage({ warning } satisfies WalCheckpointWorkerMessage);
    lastWarning = warning;
  }
}

const timer = setInterval(tick, data.intervalMs);
port.on("message", (m: unknown) => {
  if (m !== "stop") return;
  clearInterval(timer);
  db.close();
  port.close();
});
