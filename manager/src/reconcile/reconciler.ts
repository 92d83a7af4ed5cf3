import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, CommandSchema, ContainerSpecSchema, type Command } from "@berth/proto/berth/v1/agent_pb.js";
import { Phase, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { newId } from "../ids.js";
import type { Logger } from "../log.js";
import type { AgentHub } from "../link/agent-hub.js";
import {
  LABEL_GENERATION,
  LABEL_MANAGER,
  LABEL_SERVER,
  LABEL_SPEC_HASH,
  type ServerRecord,
  type Store,
} from "../store/store.js";
import { mergeConditions, sameConditions } from "./conditions.js";
import { COMMAND_DEADLINE_MS, commandName, plan, type Plan } from "./plan.js";
import { WorkQueue } from "./queue.js";
import { specHash } from "./spec-hash.js";

export interface ReconcilerDeps {
  store: Store;
  hub: AgentHub;
  log: Logger;
  managerId: string;
  now?: () => number;
  /** Called after a server's record changed (status or spec), for watchers. */
  onServerChanged?: (serverId: string) => void;
}

/** Default graceful stop timeout (seconds) before the agent kills the container. */
export const DEFAULT_STOP_TIMEOUT_S = 10;

/**
 * Level-based reconciler: each run re-reads spec and observation from the
 * store, asks plan() what to do, and records the outcome. Running it twice
 * with nothing new changes nothing the second time.
 */
export class Reconciler {
  readonly queue: WorkQueue;
  private readonly now: () => number;

  constructor(private readonly deps: ReconcilerDeps) {
    this.now = deps.now ?? Date.now;
    this.queue = new WorkQueue({
      process: (key, cause) => this.reconcile(key, cause),
      onError: (key, err, retryInMs) => deps.log.error({ server: key, err, retryInMs }, "reconcile failed; retrying"),
    });
  }

  enqueue(serverId: string, cause: string): void {
    this.queue.add(serverId, cause);
  }

  enqueueHost(hostId: string, cause: string): void {
    for (const id of this.deps.store.serverIdsOnHost(hostId)) this.queue.add(id, cause);
  }

  stop(): void {
    this.queue.stop();
  }

  /** One reconcile of one server. Synchronous: SQLite calls are, and sending only queues bytes. */
  reconcile(serverId: string, cause = "resync"): { requeueAfterMs?: number } {
    const { store, hub, managerId } = this.deps;
    const now = this.now();
    const server = store.getServer(serverId);
    if (!server) return {};
    const hash = specHash(server.spec);
    const containers = store
      .containersForServer(server.hostId, server.id)
      .filter((c) => c.managerId === managerId)
      .map((c) => c.info);
    const dataDir = store.getDataDir(server.hostId, server.id);
    const inflight = store.openCommandForServer(server.id);
    const last = store.lastFinishedCommand(server.id);
    const p = plan({
      now,
      spec: server.spec,
      generation: server.generation,
      specHash: hash,
      deleted: server.deletedAt !== null,
      dataInitialized: server.dataInitialized,
      lastActionAt: server.updatedAt,
      hostConnected: hub.isConnected(server.hostId),
      containers,
      data: dataDir && { present: dataDir.present },
      inflight: inflight && {
        id: inflight.id,
        kind: inflight.command.kind,
        createdAt: inflight.createdAt,
        deadlineAt: inflight.deadlineAt,
      },
      lastFinished: last && {
        kind: last.command.kind,
        state: last.state as "succeeded" | "failed" | "expired",
        reason: last.reason ?? "",
        message: last.message ?? "",
        createdAt: last.createdAt,
      },
    });

    let toSend: Command | undefined;
    const changed = store.transaction(() => {
      if (p.expireInflight && inflight) {
        store.finishCommand(inflight.id, "expired", now, "DeadlineExceeded", p.message);
        store.appendEvent(
          {
            type: "command.expired",
            project: server.project,
            serverId: server.id,
            hostId: server.hostId,
            reason: p.reason,
            message: p.message,
            actor: "reconciler",
            correlationId: inflight.id,
          },
          now,
        );
      }
      if (p.command) {
        toSend = this.buildCommand(server, hash, p.command.kind, p.command.dataPolicy, now);
        store.insertCommand({
          command: toSend,
          hostId: server.hostId,
          createdAt: now,
          deadlineAt: now + COMMAND_DEADLINE_MS[p.command.kind],
        });
        store.appendEvent(
          {
            type: "command.issued",
            project: server.project,
            serverId: server.id,
            hostId: server.hostId,
            reason: p.reason,
            message: commandName(p.command.kind),
            actor: "reconciler",
            correlationId: toSend.id,
          },
          now,
        );
      }
      return this.writeStatus(server, p, cause, now, dataDir?.present === true, dataDir?.sizeBytes ?? 0, containers[0]?.id ?? "", containers[0]?.state ?? "");
    });

    if (toSend) {
      if (hub.sendCommand(server.hostId, toSend)) store.markCommandSent(toSend.id, now);
      this.deps.log.info(
        { server: server.id, name: server.name, host: server.hostId, command: toSend.id, kind: commandName(toSend.kind), cause },
        "command issued",
      );
    }
    if (changed) this.deps.onServerChanged?.(server.id);
    if (p.expireInflight) return { requeueAfterMs: 0 };
    return p.requeueAfterMs !== undefined ? { requeueAfterMs: p.requeueAfterMs } : {};
  }

  /** Stores the new status if it differs; records phase changes with their cause. */
  private writeStatus(
    server: ServerRecord,
    p: Plan,
    cause: string,
    now: number,
    dataPresent: boolean,
    dataSize: number,
    containerId: string,
    containerState: string,
  ): boolean {
    const old = server.status;
    const conditions = mergeConditions(old.conditions, p.conditions, server.generation, now);
    const phaseChanged = old.phase !== p.phase || old.reason !== p.reason;
    const next = create(ServerStatusSchema, {
      phase: p.phase,
      reason: p.reason,
      message: p.message,
      conditions,
      observedGeneration: BigInt(p.observedGeneration),
      containerId,
      containerState,
      dataExists: dataPresent,
      dataSizeBytes: BigInt(dataSize),
      restartCount: old.restartCount,
      lastChangeTime: phaseChanged ? timestampFromMs(now) : old.lastChangeTime,
      lastChangeCause: phaseChanged ? cause : old.lastChangeCause,
    });
    const dataInitialized = server.dataInitialized || dataPresent;
    const same =
      !phaseChanged &&
      old.message === next.message &&
      sameConditions(old.conditions, conditions) &&
      old.observedGeneration === next.observedGeneration &&
      old.containerId === next.containerId &&
      old.containerState === next.containerState &&
      old.dataExists === next.dataExists &&
      old.dataSizeBytes === next.dataSizeBytes &&
      dataInitialized === server.dataInitialized;
    if (same) return false;
    this.deps.store.updateServerStatus(server.id, next, dataInitialized);
    if (phaseChanged) {
      this.deps.store.appendEvent(
        {
          type: "phase.changed",
          project: server.project,
          serverId: server.id,
          hostId: server.hostId,
          reason: p.reason,
          message: `${Phase[old.phase] ?? "UNSPECIFIED"} → ${Phase[p.phase]}: ${p.message}`,
          actor: "reconciler",
          payload: { from: Phase[old.phase], to: Phase[p.phase], cause },
        },
        now,
      );
      this.deps.log.info(
        { server: server.id, name: server.name, host: server.hostId, from: Phase[old.phase], to: Phase[p.phase], reason: p.reason, cause },
        "phase changed",
      );
    }
    return true;
  }

  private buildCommand(server: ServerRecord, hash: string, kind: CommandKind, dataPolicy: number, now: number): Command {
    const spec = server.spec;
    return create(CommandSchema, {
      id: newId("cmd"),
      serverId: server.id,
      kind,
      dataPolicy,
      stopTimeoutSeconds: DEFAULT_STOP_TIMEOUT_S,
      deadline: timestampFromMs(now + COMMAND_DEADLINE_MS[kind]),
      container: create(ContainerSpecSchema, {
        image: spec.image,
        command: spec.command,
        env: spec.env,
        ports: spec.ports,
        dataMountPath: spec.dataMountPath,
        name: containerName(server),
        specHash: hash,
        labels: {
          [LABEL_MANAGER]: this.deps.managerId,
          [LABEL_SERVER]: server.id,
          [LABEL_GENERATION]: String(server.generation),
          [LABEL_SPEC_HASH]: hash,
        },
      }),
    });
  }
}

/** Docker name of a server's container: readable in `docker ps`, unique per server. */
export function containerName(server: Pick<ServerRecord, "id" | "name">): string {
  return `berth-${server.name}-${server.id.replace(/^srv_/, "")}`;
}
