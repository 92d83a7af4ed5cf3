import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { ExecSpecSchema, LogChunk } from "@berth/proto/berth/v1/agent_pb.js";
import type { ReadFileRequestSchema } from "@berth/proto/berth/v1/file_pb.js";
import {
  TailLogsResponseSchema,
  WatchConsoleResponseSchema,
  type ServerService,
  type TailLogsRequest,
  type TailLogsResponse,
  type WatchConsoleRequest,
  type WatchConsoleResponse,
  ExecCommandRequestSchema,
  ExecCommandResponseSchema,
  WatchConsoleRequestSchema,
  type ExecCommandRequest,
  type ExecCommandResponse,
} from "@berth/proto/berth/v1/server_pb.js";
import { callerOf, requireRole, type Caller } from "../auth/caller.js";
import { PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import { invalidArgument, ruleProblems } from "./protovalidate.js";
import type { AgentHub } from "../link/agent-hub.js";
import { AsyncQueue, type QueueBound } from "../link/async-queue.js";
import type { Store } from "../store/store.js";
import { loadVisibleServer } from "./find-server.js";
import { fileOpError } from "./file-errors.js";

/**
 * Log bytes the agent may send ahead of what the caller consumed: it stops
 * reading Docker once they are out and until the manager grants more.
 */
export const LOG_WINDOW_BYTES = 256 * 1024;
/**
 * What each chunk counts against the window on top of its data: the cost of
 * the message itself, so that a stream of tiny lines is bounded by the
 * window too. The agent charges the same (agent/src/log-streams.ts).
 */
export const LOG_CHUNK_OVERHEAD_BYTES = 256;
/** Credit is granted back in steps of this much consumed output (fewer link messages). */
const CREDIT_STEP_BYTES = LOG_WINDOW_BYTES / 4;
/**
 * What one stream may hold in the manager: the window plus one chunk of
 * overshoot fits, so output from a conforming agent is never dropped; an
 * agent that ignores the window (one older than LogCredit) loses output
 * beyond it, counted and marked, instead of growing the manager.
 */
const LOG_BUFFER_BYTES = 2 * LOG_WINDOW_BYTES;
/** Chunks held per stream at most: never reached before the byte bound, each chunk counts its overhead. */
const LOG_BUFFER_CHUNKS = LOG_BUFFER_BYTES / LOG_CHUNK_OVERHEAD_BYTES;
/** A chunk's charge against the window and the buffer. */
const cost = (c: LogChunk) => c.data.length + LOG_CHUNK_OVERHEAD_BYTES;

/** What a TailLogs call's queue holds: the agent's chunks, or a marker of chunks dropped at that point. */
export type Entry = { chunk: LogChunk } | { dropped: { chunks: number; bytes: number } };

/** The bound of one TailLogs call's queue: log bytes, and never the end of the stream. */
const LOG_QUEUE_BOUND: QueueBound<Entry> = {
  maxSize: LOG_BUFFER_BYTES,
  maxItems: LOG_BUFFER_CHUNKS,
  sizeOf: (e) => ("chunk" in e ? cost(e.chunk) : 0),
  keep: (e) => "chunk" in e && e.chunk.end,
  gap: (chunks, size) => ({ dropped: { chunks, bytes: size - chunks * LOG_CHUNK_OVERHEAD_BYTES } }),
};

export interface TailLogsDeps {
  store: Pick<Store, "getServer" | "findServerByName" | "listServers">;
  hub: AgentHub;
  /** Which hosts are connected to any manager of this database (cluster/presence.ts): says why logs cannot be read here. */
  presence?: { isConnected(hostId: string): boolean };
  now?: () => number;
  /** The agent answers a log request with an empty chunk once Docker's stream is open. */
  openTimeoutMs?: number;
}

/**
 * `ServerService.TailLogs`: the server's container output, read by its
 * host's agent from Docker and relayed chunk by chunk. It ends when the log
 * does (with `follow`, when the container stops), when the caller cancels
 * (the agent is told to stop reading), or with Unavailable when the host's
 * agent disconnects.
 *
 * Flow control end to end: the agent sends at most LOG_WINDOW_BYTES ahead
 * of what this call's caller consumed (connect-node resumes this generator
 * only once a response is written out), so a caller that stops reading
 * stops the agent reading Docker, and costs the manager at most the
 * queue's bound. Output an agent sends beyond its window is dropped and
 * shown to the caller as a marker response with `dropped_bytes` and
 * `dropped_chunks`.
 */
export function createTailLogs(deps: TailLogsDeps): ServiceImpl<typeof ServerService>["tailLogs"] {
  return async function* tailLogs(req: TailLogsRequest, ctx: HandlerContext): AsyncIterable<TailLogsResponse> {
    const now = deps.now ?? Date.now;
    const s = await loadVisibleServer(deps.store, callerOf(ctx), req.id);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted and has no container; restore and start it to read its logs`);
    for await (const e of agentLogs(deps, s, { follow: req.follow, tailLines: req.tailLines, announceOpen: req.announceOpen }, ctx)) {
      if ("dropped" in e) {
        yield create(TailLogsResponseSchema, { droppedChunks: BigInt(e.dropped.chunks), droppedBytes: BigInt(e.dropped.bytes), time: timestampFromMs(now()) });
        continue;
      }
      // The open chunk (asked for with announce_open).
      if (e.chunk.data.length === 0) {
        yield create(TailLogsResponseSchema, { opened: true, time: timestampFromMs(now()) });
        continue;
      }
      yield create(TailLogsResponseSchema, { stream: e.chunk.stream, data: e.chunk.data, time: timestampFromMs(now()) });
    }
  };
}

/**
 * `ServerService.WatchConsole`: the server's console output, followed by its
 * host's agent across container restarts (docs/console-and-files.md). Like
 * TailLogs in flow control and bounds; the agent's markers (the container
 * stopped, started again, output left out by its rate limit) are passed on.
 * It ends only when the caller cancels, or with Unavailable when the host's
 * agent goes away (call again: the backlog brings back what was missed).
 */
export function createWatchConsole(deps: TailLogsDeps): ServiceImpl<typeof ServerService>["watchConsole"] {
  return async function* watchConsole(req: WatchConsoleRequest, ctx: HandlerContext): AsyncIterable<WatchConsoleResponse> {
    const now = deps.now ?? Date.now;
    const problems = ruleProblems(WatchConsoleRequestSchema, req);
    if (problems.length) throw invalidArgument(problems);
    const s = await loadVisibleServer(deps.store, callerOf(ctx), req.id);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it to watch its console`);
    for await (const e of agentLogs(deps, s, { follow: true, tailLines: req.backlogLines, console: true, announceOpen: true }, ctx)) {
      if ("dropped" in e) {
        yield create(WatchConsoleResponseSchema, { marker: "dropped", message: `${e.dropped.bytes} bytes of output left out here: they came faster than this caller read them`, droppedBytes: BigInt(e.dropped.bytes), time: timestampFromMs(now()) });
        continue;
      }
      const c = e.chunk;
      const time = c.time ?? timestampFromMs(now());
      if (c.marker) {
        yield create(WatchConsoleResponseSchema, { marker: c.marker, message: c.message, droppedBytes: c.droppedBytes, time });
        continue;
      }
      // The open chunk: said once, first, so a silent console reads "no output yet", not "connecting".
      if (c.data.length === 0) {
        yield create(WatchConsoleResponseSchema, { marker: "opened", message: "console open", time });
        continue;
      }
      yield create(WatchConsoleResponseSchema, { stream: c.stream, data: c.data, time });
    }
  };
}

/**
 * `ServerService.ExecCommand`: a one-off command in the server's running
 * container through its host's agent (docs/console-and-files.md): its
 * output with the flow control and bounds of TailLogs, then its exit code.
 * Recorded as `exec.run` (actor, argv) before it starts; the caller going
 * away kills it.
 */
export function createExecCommand(deps: TailLogsDeps & { commit: (s: ServerRecordLike, caller: Caller, argv: string[]) => Promise<void> }): ServiceImpl<typeof ServerService>["execCommand"] {
  return async function* execCommand(req: ExecCommandRequest, ctx: HandlerContext): AsyncIterable<ExecCommandResponse> {
    const caller = callerOf(ctx);
    requireRole(caller, "operator", "ExecCommand");
    // The interceptor checks unary requests only: a streaming call's rules are checked here.
    const problems = ruleProblems(ExecCommandRequestSchema, req);
    if (problems.length) throw invalidArgument(problems);
    const s = await loadVisibleServer(deps.store, caller, req.id);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore and start it to run commands in it`);
    await deps.commit(s, caller, req.argv);
    for await (const e of agentLogs(deps, s, { follow: false, tailLines: 0, exec: { argv: req.argv, timeoutSeconds: req.timeoutSeconds || 60, stdin: req.stdin } }, ctx)) {
      if ("dropped" in e) {
        yield create(ExecCommandResponseSchema, { droppedBytes: BigInt(e.dropped.bytes) });
        continue;
      }
      const c = e.chunk;
      if (c.exited) {
        yield create(ExecCommandResponseSchema, { exited: true, exitCode: c.exitCode, timedOut: c.timedOut });
        return;
      }
      yield create(ExecCommandResponseSchema, { stream: c.stream, data: c.data });
    }
  };
}

type ServerRecordLike = Awaited<ReturnType<typeof loadVisibleServer>>;

/**
 * One log stream from the agent of `s`'s host, chunk by chunk (or markers of
 * chunks dropped), until the agent ends it; its errors as gRPC errors. The
 * agent sends at most LOG_WINDOW_BYTES ahead of what the caller consumed:
 * credit is granted back once the caller resumes this generator (connect-node
 * resumes the handler only after it wrote the previous response out).
 */
export async function* agentLogs(
  deps: TailLogsDeps,
  s: { id: string; name: string; hostId: string },
  req: {
    follow: boolean;
    tailLines: number;
    console?: boolean;
    exec?: MessageInitShape<typeof ExecSpecSchema>;
    fileRead?: MessageInitShape<typeof ReadFileRequestSchema>;
    /** Yield the agent's open chunk (no data, no marker): the stream is open. */
    announceOpen?: boolean;
  },
  ctx: HandlerContext,
): AsyncIterable<Entry> {
  const { hub } = deps;
  const openTimeoutMs = deps.openTimeoutMs ?? 15_000;
  const what = req.console ? "console" : req.exec ? "command's output" : req.fileRead ? "download" : "log";
  const requestId = newId("log");
  const chunks = new AsyncQueue<Entry>(LOG_QUEUE_BOUND);
  // Consumed (or dropped) bytes not yet granted back to the agent.
  let owed = 0;
  const repay = (bytes: number, atLeast: number) => {
    owed += bytes;
    if (owed < atLeast) return;
    hub.grantLogCredit(requestId, owed);
    owed = 0;
  };
  const opened = hub.openLogs(
    s.hostId,
    {
      requestId,
      serverId: s.id,
      follow: req.follow,
      tailLines: req.tailLines,
      windowBytes: LOG_WINDOW_BYTES,
      console: req.console ?? false,
      ...(req.exec ? { exec: req.exec } : {}),
      ...(req.fileRead ? { fileRead: req.fileRead } : {}),
    },
    {
      // Dropped output is credited back at once: the window only paces what the caller reads.
      onChunk: (c) => void (chunks.push({ chunk: c }) || repay(cost(c), CREDIT_STEP_BYTES)),
      onGone: (reason) => chunks.close(new UnavailableError(`the agent of host ${s.hostId} disconnected (${reason}); the ${what} stream ended`)),
    },
  );
  if (!opened) {
    if (deps.presence?.isConnected(s.hostId)) {
      throw new UnavailableError(`host ${s.hostId} of server "${s.name}" is connected to another manager of this berth; the ${what} is read through the manager holding its agent's stream: call there (or retry: agents move between managers when one stops)`);
    }
    throw new UnavailableError(`host ${s.hostId} of server "${s.name}" is offline; the ${what} is read from the host's Docker engine, try again when it is back`);
  }
  // Cleanup happens here, not only in `finally`: when the caller goes away while
  // connect-node waits to write a response (its HTTP/2 window is shut), connect-node
  // never resumes or returns this generator, and the agent would go on serving it.
  const onAbort = () => {
    clearTimeout(openTimer);
    chunks.abandon();
    hub.cancelLogs(requestId);
  };
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const openTimer = setTimeout(
    () => chunks.close(new UnavailableError(`the agent of host ${s.hostId} did not open the ${what} stream within ${openTimeoutMs / 1000}s; is it older than this manager?`)),
    openTimeoutMs,
  );
  let ended = false;
  let announced = false;
  try {
    for await (const e of chunks) {
      clearTimeout(openTimer);
      if ("dropped" in e) {
        yield e;
        continue;
      }
      const c = e.chunk;
      if (c.end) {
        ended = true;
        if (c.error) throw agentError(s.name, c);
        // An exec's end says how the command ended.
        if (c.exited) yield e;
        return;
      }
      // The open chunk says nothing (a download's carries the file's entry); markers carry no output (the agent charges neither to the window).
      if (c.data.length === 0) {
        if (c.marker || c.fileEntry || (req.announceOpen && !announced)) yield e;
        announced = true;
        continue;
      }
      yield e;
      // Resumed: the caller took the previous response.
      repay(cost(c), CREDIT_STEP_BYTES);
    }
  } finally {
    clearTimeout(openTimer);
    ctx.signal.removeEventListener("abort", onAbort);
    // Cancelled, disconnected or failed: make sure the agent stops reading.
    if (!ended) hub.cancelLogs(requestId);
  }
}

function agentError(name: string, c: LogChunk): Error {
  if (c.fileErrorCode) return fileOpError({ code: c.fileErrorCode, message: c.error }, name);
  switch (c.reason) {
    case "ContainerMissing":
      return new PreconditionError(`server "${name}" has no container on its host (${c.error}); start it first`);
    case "ConsoleClosed":
    case "ContainerNotRunning":
      return new PreconditionError(`server "${name}": ${c.error}`);
    case "TooManyLogStreams":
      return new ConnectError(c.error, Code.ResourceExhausted);
    default:
      return new UnavailableError(`reading the logs of server "${name}" failed on its host: ${c.error}`);
  }
}
