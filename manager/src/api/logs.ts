import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { LogChunk } from "@berth/proto/berth/v1/agent_pb.js";
import { TailLogsResponseSchema, type ServerService, type TailLogsRequest, type TailLogsResponse } from "@berth/proto/berth/v1/server_pb.js";
import { callerOf } from "../auth/caller.js";
import { PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import type { AgentHub } from "../link/agent-hub.js";
import { AsyncQueue } from "../link/async-queue.js";
import type { Store } from "../store/store.js";
import { findVisibleServer } from "./find-server.js";

export interface TailLogsDeps {
  store: Store;
  hub: AgentHub;
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
 */
export function createTailLogs(deps: TailLogsDeps): ServiceImpl<typeof ServerService>["tailLogs"] {
  const { store, hub } = deps;
  const now = deps.now ?? Date.now;
  const openTimeoutMs = deps.openTimeoutMs ?? 15_000;

  return async function* tailLogs(req: TailLogsRequest, ctx: HandlerContext): AsyncIterable<TailLogsResponse> {
    const s = findVisibleServer(store, callerOf(ctx), req.id);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted and has no container; restore and start it to read its logs`);
    const requestId = newId("log");
    const chunks = new AsyncQueue<LogChunk>();
    const opened = hub.openLogs(
      s.hostId,
      { requestId, serverId: s.id, follow: req.follow, tailLines: req.tailLines },
      {
        onChunk: (c) => chunks.push(c),
        onGone: (reason) => chunks.close(new UnavailableError(`the agent of host ${s.hostId} disconnected (${reason}); the log stream ended`)),
      },
    );
    if (!opened) {
      throw new UnavailableError(`host ${s.hostId} of server "${s.name}" is offline; logs are read from the host's Docker engine, try again when it is back`);
    }
    const onAbort = () => chunks.close();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    const openTimer = setTimeout(
      () => chunks.close(new UnavailableError(`the agent of host ${s.hostId} did not open the log stream within ${openTimeoutMs / 1000}s; is it older than this manager?`)),
      openTimeoutMs,
    );
    let ended = false;
    try {
      for await (const c of chunks) {
        clearTimeout(openTimer);
        if (c.end) {
          ended = true;
          if (c.error) throw agentError(s.name, c);
          return;
        }
        if (c.data.length === 0) continue;
        yield create(TailLogsResponseSchema, { stream: c.stream, data: c.data, time: timestampFromMs(now()) });
      }
    } finally {
      clearTimeout(openTimer);
      ctx.signal.removeEventListener("abort", onAbort);
      // Cancelled, disconnected or failed: make sure the agent stops reading.
      if (!ended) hub.cancelLogs(requestId);
    }
  };
}

function agentError(name: string, c: LogChunk): Error {
  switch (c.reason) {
    case "ContainerMissing":
      return new PreconditionError(`server "${name}" has no container on its host (${c.error}); start it first`);
    case "TooManyLogStreams":
      return new ConnectError(c.error, Code.ResourceExhausted);
    default:
      return new UnavailableError(`reading the logs of server "${name}" failed on its host: ${c.error}`);
  }
}
