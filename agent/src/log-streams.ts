import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { ContainerInfo, LogChunkSchema, LogRequest } from "@berth/proto/berth/v1/agent_pb.js";
import { RuntimeError, type ContainerRuntime } from "./runtime/container-runtime.js";
import { messageOf } from "./runtime/docker-runtime.js";
import { splitFrame } from "./runtime/log-demux.js";

export type LogChunkInit = MessageInitShape<typeof LogChunkSchema>;

/** Data per LogChunk message: keeps messages on the link small. */
const MAX_CHUNK_BYTES = 64 * 1024;
/** Open log streams per agent: each holds a Docker connection. */
const MAX_STREAMS = 64;

/**
 * Serves the manager's log requests: streams a server's container output as
 * LogChunks — first an empty one (the stream is open), then the output, then
 * one with `end` (and `error` if it failed). A followed stream ends when the
 * container stops, on LogCancel, or when the link to the manager drops.
 */
export class LogStreams {
  private readonly open = new Map<string, AbortController>();

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
    this.open.set(req.requestId, ac);
    void this.stream(req, ac.signal).finally(() => this.open.delete(req.requestId));
  }

  cancel(requestId: string): void {
    this.open.get(requestId)?.abort();
  }

  /** The link dropped: nobody is listening any more. */
  closeAll(): void {
    for (const ac of this.open.values()) ac.abort();
  }

  private async stream(req: LogRequest, signal: AbortSignal): Promise<void> {
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
          if (signal.aborted) break;
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
