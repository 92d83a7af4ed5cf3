/**
 * zstd compression off the main thread: a small pool of worker threads, each
 * with its own instance of @bokuweb/zstd-wasm, compressing one whole frame
 * per task (zstd-stream.ts cuts the frames).
 *
 * Why: the WebAssembly codec is synchronous. On the main thread it ran in
 * turn with everything else a backup does there (walking the tree, reading
 * files, building tar headers, sha256, writing), so a backup packed at about
 * half the speed of `tar | zstd -1`, where tar and zstd are two processes
 * that overlap. With the codec in workers the main thread keeps reading and
 * writing while frames are compressed, and frames, being independent, are
 * compressed by several workers at once (docs/benchmarks.md, "zstd in worker
 * threads"). Decompression stays on the caller's thread, where extraction
 * measured faster (archive.ts).
 *
 * The worker's code is a string evaluated by `new Worker(..., { eval: true })`
 * and loads the codec by the path this module resolves: nothing extra to
 * ship beside the agent's bundle (scripts/build.mjs keeps the codec an
 * external package, like every dependency).
 *
 * Bounded: the callers keep at most a few frames in flight (zstd-stream.ts).
 * An input that owns its whole buffer is handed over (transferred: no copy);
 * any other (a slice of a larger buffer) is copied into its own first, so a
 * buffer is never shared with a worker. Workers start on
 * first use, hold the event loop only while they have work, and stop after
 * IDLE_MS without any. A worker that dies fails its tasks with the reason;
 * the next task starts a new one.
 */
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

/** Worker threads at most: one per core, 2 at most (a backup must leave the host's other work some room), at least 1. */
export const ZSTD_WORKERS = Math.max(1, Math.min(2, availableParallelism()));
/** Workers with nothing to do for this long are stopped (each holds its own codec and heap). */
const IDLE_MS = 10_000;

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const zstd = require(workerData.codec);
const ready = zstd.init();
parentPort.on("message", (task) => {
  ready.then(() => {
    const input = new Uint8Array(task.input);
    const out = zstd.compress(input, task.level);
    // A copy (slice) of the codec's heap: its own buffer, handed over whole.
    const buffer = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.slice().buffer;
    parentPort.postMessage({ id: task.id, output: buffer }, [buffer]);
  }).catch((err) => parentPort.postMessage({ id: task.id, error: String((err && err.message) || err) }));
});
`;

export type ZstdOp = { op: "compress"; level: number };

interface Task {
  resolve(out: Buffer): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  tasks: Map<number, Task>;
}

/** The codec failed on its input (the message is the codec's). A worker that dies fails its tasks with a plain Error instead. */
export class ZstdWorkerError extends Error {
  override readonly name = "ZstdWorkerError";
}

class ZstdPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private idle: NodeJS.Timeout | undefined;
  private codec: string | undefined;

  constructor(private readonly size: number) {}

  /**
   * Runs `op` on `input` in a worker. An input that owns its whole
   * ArrayBuffer is handed over (detached here); any other is copied first.
   */
  run(input: Uint8Array, op: ZstdOp): Promise<Buffer> {
    if (this.idle) {
      clearTimeout(this.idle);
      this.idle = undefined;
    }
    const slot = this.pick();
    const id = this.nextId++;
    let whole: ArrayBuffer;
    if (input.byteOffset === 0 && input.byteLength === input.buffer.byteLength && input.buffer instanceof ArrayBuffer) whole = input.buffer;
    else {
      whole = new ArrayBuffer(input.byteLength);
      new Uint8Array(whole).set(input);
    }
    return new Promise<Buffer>((resolve, reject) => {
      slot.tasks.set(id, { resolve, reject });
      if (slot.tasks.size === 1) slot.worker.ref();
      slot.worker.postMessage({ id, input: whole, ...op }, [whole]);
    });
  }

  /** The least busy worker, or a new one while fewer than `size` run and every one is busy. */
  private pick(): Slot {
    let best: Slot | undefined;
    for (const s of this.slots) if (!best || s.tasks.size < best.tasks.size) best = s;
    if (best && (best.tasks.size === 0 || this.slots.length >= this.size)) return best;
    return this.spawn();
  }

  private spawn(): Slot {
    this.codec ??= createRequire(import.meta.url).resolve("@bokuweb/zstd-wasm");
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { codec: this.codec } });
    worker.unref();
    const slot: Slot = { worker, tasks: new Map() };
    this.slots.push(slot);
    worker.on("message", (m: { id: number; output?: ArrayBuffer; error?: string }) => {
      const task = slot.tasks.get(m.id);
      if (!task) return;
      slot.tasks.delete(m.id);
      if (slot.tasks.size === 0) {
        worker.unref();
        this.scheduleIdle();
      }
      if (m.error !== undefined) task.reject(new ZstdWorkerError(m.error));
      else task.resolve(Buffer.from(m.output!));
    });
    const fail = (err: Error) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      for (const t of slot.tasks.values()) t.reject(new Error(`the zstd worker thread stopped: ${err.message}`));
      slot.tasks.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`exit code ${code}`)));
    return slot;
  }

  private scheduleIdle(): void {
    if (this.idle || this.slots.some((s) => s.tasks.size > 0)) return;
    this.idle = setTimeout(() => {
      this.idle = undefined;
      if (this.slots.some((s) => s.tasks.size > 0)) return;
      for (const s of this.slots.splice(0)) void s.worker.terminate();
    }, IDLE_MS);
    this.idle.unref();
  }
}

let pool: ZstdPool | undefined;

/** Compresses one whole frame in the process's pool of ZSTD_WORKERS workers. */
export function zstdInWorker(input: Uint8Array, op: ZstdOp): Promise<Buffer> {
  pool ??= new ZstdPool(ZSTD_WORKERS);
  return pool.run(input, op);
}
