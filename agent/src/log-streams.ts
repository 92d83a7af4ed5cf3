import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import type { ContainerInfo, ExecSpec, LogChunkSchema, LogRequest } from "@berth/proto/berth/v1/agent_pb.js";
import { RuntimeError, type ContainerRuntime, type ExecRun } from "./runtime/container-runtime.js";
import { messageOf } from "./runtime/docker-runtime.js";
import { splitFrame } from "./runtime/log-demux.js";
import { fileErrorOf, fileInfoOf } from "./files/file-requests.js";
import type { ServerFiles } from "./files/server-files.js";

export type LogChunkInit = MessageInitShape<typeof LogChunkSchema>;

/** Data per LogChunk message: keeps messages on the link small. */
const MAX_CHUNK_BYTES = 64 * 1024;
/**
 * What a chunk counts against the manager's window on top of its data (the
 * manager charges the same: LOG_CHUNK_OVERHEAD_BYTES in manager/src/api/logs.ts).
 */
const CHUNK_OVERHEAD_BYTES = 256;
/** Open log streams per agent: each holds a Docker connection. */
const MAX_STREAMS = 64;
/** A console stream's output rate limit: bytes a second, and at once (a chatty server cannot flood the manager). */
const CONSOLE_RATE = 64 * 1024;
const CONSOLE_BURST = 256 * 1024;
/** How often a console stream with no running container looks for the next run (and a followed log for its container). */
const CONSOLE_POLL_MS = 500;

/** Bytes per second with a burst allowance: take() answers whether `n` bytes fit now. */
export class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.at = now();
  }
  take(n: number): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.rate);
    this.at = t;
    if (n > this.tokens) return false;
    this.tokens -= n;
    return true;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** One stream being served: how to stop it, and its flow-control credit. */
interface OpenStream {
  readonly ac: AbortController;
  /** Log bytes it may still send; Infinity when the manager asked for no flow control. */
  credit: number;
  /** Wakes the stream waiting for credit. */
  wake: (() => void) | undefined;
}

/**
 * Serves the manager's log requests: streams a server's container output as
 * LogChunks — first an empty one (the stream is open), then the output, then
 * one with `end` (and `error` if it failed). A followed stream ends when the
 * container stops, on LogCancel, or when the link to the manager drops.
 *
 * Memory per stream is bounded whatever the container writes: each chunk
 * waits for the link (sendPaced) and, when the request has a window, for
 * credit from the manager (its caller consumed what was sent). Meanwhile
 * nothing reads Docker's response, so Docker holds the output (it is in the
 * container's log file), not the agent.
 */
export class LogStreams {
  private readonly open = new Map<string, OpenStream>();

  constructor(
    private readonly runtime: ContainerRuntime,
    /** Sends one chunk at the link's pace; false when the link is gone. */
    private readonly send: (chunk: LogChunkInit) => Promise<boolean>,
    private readonly log: Logger,
    /** Opens a server's data directory for downloads (LogRequest.file_read); without it they fail. */
    private readonly files?: { filesFor(serverId: string): Promise<ServerFiles> },
  ) {}

  get active(): number {
    return this.open.size;
  }

  start(req: LogRequest): void {
    if (this.open.has(req.requestId)) return;
    if (this.open.size >= MAX_STREAMS) {
      void this.send({ requestId: req.requestId, end: true, reason: "TooManyLogStreams", error: `this agent already serves ${MAX_STREAMS} log streams; try again later` });
      return;
    }
    const ac = new AbortController();
    const st: OpenStream = { ac, credit: req.windowBytes > 0 ? req.windowBytes : Infinity, wake: undefined };
    this.open.set(req.requestId, st);
    ac.signal.addEventListener("abort", () => st.wake?.(), { once: true });
    void this.stream(req, st).finally(() => this.open.delete(req.requestId));
  }

  cancel(requestId: string): void {
    this.open.get(requestId)?.ac.abort();
  }

  /** The manager's caller consumed `bytes` of the stream: it may send that much more. */
  credit(requestId: string, bytes: number): void {
    const st = this.open.get(requestId);
    if (!st) return;
    st.credit += bytes;
    st.wake?.();
  }

  /** The link dropped: nobody is listening any more. */
  closeAll(): void {
    for (const st of this.open.values()) st.ac.abort();
  }

  /** Resolves once `st` may send (credit left) or is aborted. */
  private async creditFor(st: OpenStream): Promise<void> {
    while (st.credit <= 0 && !st.ac.signal.aborted) {
      await new Promise<void>((resolve) => (st.wake = resolve));
      st.wake = undefined;
    }
  }

  private async stream(req: LogRequest, st: OpenStream): Promise<void> {
    if (req.console) return this.console(req, st);
    if (req.exec) return this.exec(req, req.exec, st);
    if (req.fileRead) return this.fileRead(req, st);
    const signal = st.ac.signal;
    const rlog = this.log.child({ server: req.serverId, request: req.requestId });
    const id = req.requestId;
    try {
      let container = await this.containerOf(req.serverId);
      let announced = false;
      if (!container && req.follow) {
        // Not made yet (being created, or a rebuild between containers): the stream is open, and
        // follows the container once it exists, instead of answering "no container".
        if (!(await this.send({ requestId: id }))) return;
        announced = true;
        rlog.debug("log stream waits for the server's container");
        while (!container && !signal.aborted) {
          await sleep(CONSOLE_POLL_MS, signal);
          container = await this.containerOf(req.serverId);
        }
        if (signal.aborted) return;
      }
      if (!container) throw new RuntimeError("ContainerMissing", `server ${req.serverId} has no container on this host`);
      const frames = await this.runtime.logs(container.id, { follow: req.follow, tailLines: req.tailLines }, signal);
      if (!announced && !(await this.send({ requestId: id }))) return;
      rlog.debug({ container: container.id, follow: req.follow, tail: req.tailLines }, "log stream open");
      for await (const frame of frames) {
        for (const piece of splitFrame(frame, MAX_CHUNK_BYTES)) {
          // May overshoot by one chunk: the manager's buffer has room for that.
          await this.creditFor(st);
          if (signal.aborted) break;
          st.credit -= piece.data.length + CHUNK_OVERHEAD_BYTES;
          if (!(await this.send({ requestId: id, stream: piece.stream, data: piece.data }))) return;
        }
        if (signal.aborted) break;
      }
      if (!signal.aborted) await this.send({ requestId: id, end: true });
      rlog.debug({ cancelled: signal.aborted }, "log stream ended");
    } catch (err) {
      if (signal.aborted) return;
      const reason = err instanceof RuntimeError ? err.reason : "LogsFailed";
      rlog.warn({ reason, err: messageOf(err) }, "log stream failed");
      await this.send({ requestId: id, end: true, reason, error: messageOf(err) });
    }
  }

  /**
   * A console stream: the output of the server's container run after run.
   * First up to `tail_lines` recent lines (of the running container, or of
   * the last one when none runs), then, while a container runs, its new
   * output; when it stops a "container_stopped" marker, and when one runs
   * again (restarted or recreated) a "container_started" marker and its
   * output since it started. Only LogCancel or the link ends it. Output
   * beyond the rate limit (CONSOLE_RATE bytes a second, CONSOLE_BURST at
   * once) is left out and counted in a "dropped" marker.
   */
  private async console(req: LogRequest, st: OpenStream): Promise<void> {
    const signal = st.ac.signal;
    const id = req.requestId;
    const rlog = this.log.child({ server: req.serverId, request: id, console: true });
    const bucket = new TokenBucket(CONSOLE_RATE, CONSOLE_BURST);
    const stamp = () => timestampFromMs(Date.now());
    let dropped = 0;
    const sendData = async (stream: string, data: Uint8Array): Promise<boolean> => {
      if (!bucket.take(data.length)) {
        dropped += data.length;
        return true;
      }
      if (dropped > 0) {
        if (!(await this.send({ requestId: id, marker: "dropped", message: `${dropped} bytes of output left out: more than ${CONSOLE_RATE} bytes a second`, droppedBytes: BigInt(dropped), time: stamp() }))) return false;
        dropped = 0;
      }
      await this.creditFor(st);
      if (signal.aborted) return false;
      st.credit -= data.length + CHUNK_OVERHEAD_BYTES;
      return this.send({ requestId: id, stream, data, time: stamp() });
    };
    try {
      if (!(await this.send({ requestId: id }))) return;
      /** The run streamed last (container id and start time), "" before any. */
      let last = "";
      /** The container streamed last. */
      let lastId = "";
      for (let round = 0; !signal.aborted; round++) {
        const c = await this.containerOf(req.serverId).catch(() => undefined);
        const startedMs = c?.startedTime ? timestampMs(c.startedTime) : 0;
        const key = c ? `${c.id}@${startedMs}` : "";
        const running = c?.state === "running";
        if (round === 0 && c && !running && req.tailLines > 0) {
          // Nothing runs now: the last run's final lines first, then wait for the next run.
          for await (const frame of await this.runtime.logs(c.id, { follow: false, tailLines: req.tailLines }, signal)) {
            for (const piece of splitFrame(frame, MAX_CHUNK_BYTES)) if (!(await sendData(piece.stream, piece.data))) return;
          }
          last = key;
          lastId = c.id;
        }
        if (!c || !running || key === last) {
          await sleep(CONSOLE_POLL_MS, signal);
          continue;
        }
        // Running when the stream opened: the backlog, then what comes. A run that began later:
        // a marker, then all it said since it started.
        const atOpen = round === 0;
        if (!atOpen && !(await this.send({ requestId: id, marker: "container_started", message: `container ${c.id.slice(0, 12)} started`, time: c.startedTime ?? stamp() }))) return;
        const since = atOpen ? (req.tailLines === 0 ? Date.now() : undefined) : runStartMs(c, startedMs, lastId);
        const opts = { follow: true, tailLines: atOpen ? req.tailLines : 0, ...(since !== undefined ? { sinceSeconds: since / 1000 } : {}) };
        last = key;
        lastId = c.id;
        rlog.debug({ container: c.id }, "console stream follows a run");
        try {
          for await (const frame of await this.runtime.logs(c.id, opts, signal)) {
            for (const piece of splitFrame(frame, MAX_CHUNK_BYTES)) if (!(await sendData(piece.stream, piece.data))) return;
          }
        } catch (err) {
          if (signal.aborted) return;
          // The container went away while its log was read: the next round says what runs now.
          if (!(err instanceof RuntimeError && err.reason === "ContainerMissing")) throw err;
        }
        if (signal.aborted) return;
        const after = await this.runtime.inspect(c.id).catch(() => undefined);
        const how = !after ? "was removed" : after.state === "running" ? "stopped sending output" : `exited with code ${after.exitCode}`;
        if (!(await this.send({ requestId: id, marker: "container_stopped", message: `container ${c.id.slice(0, 12)} ${how}`, time: after?.finishedTime && timestampMs(after.finishedTime) > 0 ? after.finishedTime : stamp() }))) return;
      }
    } catch (err) {
      if (signal.aborted) return;
      const reason = err instanceof RuntimeError ? err.reason : "ConsoleFailed";
      rlog.warn({ reason, err: messageOf(err) }, "console stream failed");
      await this.send({ requestId: id, end: true, reason, error: messageOf(err) });
    }
  }

  /**
   * An exec stream: `spec.argv` run in the server's running container, its
   * output paced like a log's, then an end chunk with the exit code. Past
   * the timeout, or when cancelled, the command is killed.
   */
  private async exec(req: LogRequest, spec: ExecSpec, st: OpenStream): Promise<void> {
    const signal = st.ac.signal;
    const id = req.requestId;
    const rlog = this.log.child({ server: req.serverId, request: id, exec: spec.argv[0] });
    let run: ExecRun | undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void run?.kill();
    }, (spec.timeoutSeconds || 60) * 1000);
    const onAbort = () => void run?.kill();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      if (!this.runtime.exec) throw new RuntimeError("Unsupported", "this agent's runtime cannot run commands in containers");
      const c = await this.containerOf(req.serverId);
      if (!c || c.state !== "running") throw new RuntimeError("ContainerNotRunning", `the server's container is ${c ? c.state : "missing"}; start it to run commands in it`);
      // The command's own signal: cancelling the stream kills the command but still reads its end.
      run = await this.runtime.exec(c.id, spec.argv, spec.stdin.length > 0 ? spec.stdin : undefined, new AbortController().signal);
      if (signal.aborted) await run.kill();
      if (!(await this.send({ requestId: id }))) return;
      rlog.debug({ container: c.id }, "exec started");
      for await (const frame of run.output) {
        for (const piece of splitFrame(frame, MAX_CHUNK_BYTES)) {
          await this.creditFor(st);
          if (signal.aborted) break;
          st.credit -= piece.data.length + CHUNK_OVERHEAD_BYTES;
          if (!(await this.send({ requestId: id, stream: piece.stream, data: piece.data }))) return;
        }
      }
      const exitCode = await run.exitCode();
      rlog.debug({ exitCode, timedOut }, "exec ended");
      if (!signal.aborted) await this.send({ requestId: id, end: true, exited: true, exitCode, timedOut });
    } catch (err) {
      if (signal.aborted) return;
      const reason = err instanceof RuntimeError ? err.reason : "ExecFailed";
      rlog.warn({ reason, err: messageOf(err) }, "exec failed");
      await this.send({ requestId: id, end: true, reason, error: messageOf(err) });
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * A download: the file's bytes from the server's data directory, paced by
   * the window like a log. The open chunk carries the file's entry; a
   * failure's end chunk carries its FileOpError code in file_error_code.
   */
  private async fileRead(req: LogRequest, st: OpenStream): Promise<void> {
    const signal = st.ac.signal;
    const id = req.requestId;
    const spec = req.fileRead!;
    let close: (() => Promise<void>) | undefined;
    try {
      if (!this.files) throw new RuntimeError("Unsupported", "this agent serves no file downloads");
      const files = await this.files.filesFor(req.serverId);
      const r = await files.read(spec.path, { offset: Number(spec.offset), ...(spec.length > 0n ? { length: Number(spec.length) } : {}) });
      close = r.close;
      if (!(await this.send({ requestId: id, fileEntry: fileInfoOf(r.entry) }))) return;
      for await (const chunk of r.chunks) {
        // READ_CHUNK (256 KiB) is cut to the link's chunk size.
        for (let at = 0; at < chunk.length; at += MAX_CHUNK_BYTES) {
          await this.creditFor(st);
          if (signal.aborted) return;
          const data = chunk.subarray(at, at + MAX_CHUNK_BYTES);
          st.credit -= data.length + CHUNK_OVERHEAD_BYTES;
          if (!(await this.send({ requestId: id, data }))) return;
        }
      }
      await this.send({ requestId: id, end: true });
    } catch (err) {
      if (signal.aborted) return;
      const e = err instanceof RuntimeError ? { code: "internal", message: err.message } : fileErrorOf(err);
      await this.send({ requestId: id, end: true, reason: "FileReadFailed", error: e.message, fileErrorCode: e.code });
    } finally {
      // Returning from the loop early closes the file through the generator; this covers an unread one.
      await close?.();
    }
  }

  /** The server's running container, else its most recently created one. */
  private async containerOf(serverId: string): Promise<ContainerInfo | undefined> {
    // Not its install container (RUN_INSTALL), which is labelled with the server too.
    const all = (await this.runtime.list(serverId)).filter((c) => c.labels["berth.server"] === serverId && c.labels["berth.role"] !== "install");
    const created = (c: ContainerInfo) => Number(c.createdTime?.seconds ?? 0n);
    return all.find((c) => c.state === "running") ?? all.sort((a, b) => created(b) - created(a))[0];
  }
}

/**
 * Where a later run's output begins in its container's log (epoch ms), or
 * undefined for the whole log (a container not streamed before). Not the
 * run's StartedAt: Docker stamps it after the process started, and the log
 * lines the process writes at once can carry earlier times. The previous
 * run's FinishedAt is safe: Docker records it once that run's output was
 * copied. A same-container run with no finish on record starts a second early.
 */
export function runStartMs(c: Pick<ContainerInfo, "id" | "finishedTime">, startedMs: number, lastId: string): number | undefined {
  if (c.id !== lastId) return undefined;
  const finishedMs = c.finishedTime ? timestampMs(c.finishedTime) : 0;
  return finishedMs > 0 && finishedMs < startedMs ? finishedMs + 1 : startedMs - 1000;
}
