import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { ContainerInfo, LogChunkSchema, LogRequest } from "@berth/proto/berth/v1/agent_pb.js";
import { RuntimeError, type ContainerRuntime } from "./runtime/container-runtime.js";
import { messageOf } from "./runtime/docker-runtime.js";
import { splitFrame } from "./runtime/log-demux.js";

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
    const signal = st.ac.signal;
    const rlog = this.log.child({ server: req.serverId, request: req.requestId });
    const id = req.requestId;
    try {
      const container = await this.containerOf(req.serverId);
      if (!container) throw new RuntimeError("ContainerMissing", `server ${req.serverId} has no container on this host`);
      const frames = await this.runtime.logs(container.id, { follow: req.follow, tailLines: req.tailLines }, signal);
      if (!(await this.send({ requestId: id }))) return;
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

  /** The server's running container, else its most recently created one. */
  private async containerOf(serverId: string): Promise<ContainerInfo | undefined> {
    const all = (await this.runtime.list(serverId)).filter((c) => c.labels["berth.server"] === serverId);
    const created = (c: ContainerInfo) => Number(c.createdTime?.seconds ?? 0n);
    return all.find((c) => c.state === "running") ?? all.sort((a, b) => created(b) - created(a))[0];
  }
}
