import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { CommandKind, CommandSchema, type Command, type CommandResult } from "@berth/proto/berth/v1/agent_pb.js";
import {
  AdoptOrphanResponseSchema,
  DestroyOrphanResponseSchema,
  ListOrphansResponseSchema,
  OrphanKind,
  OrphanSchema,
  OrphanService,
  ReassignServerResponseSchema,
  type Orphan,
} from "@berth/proto/berth/v1/orphan_pb.js";
import { Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { actorOf, callerOf, projectFor, type Caller } from "../auth/caller.js";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Logger } from "../log.js";
import { commandName, COMMAND_DEADLINE_MS } from "../reconcile/plan.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import { type Store } from "../store/store.js";
import { initialStatus, type ServerRecord } from "../domain/records.js";
import { planAdoption, planDestroy, refuseAdoption, type DestroyAction } from "../orphans/actions.js";
import type { OrphanFinding } from "../orphans/classify.js";
import type { OrphanDetector } from "../orphans/detector.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import { serverToProto } from "./convert.js";
import { findVisibleServer } from "./find-server.js";
import { checkPortsFree } from "./port-check.js";
import { validateSpec } from "./validate.js";

export interface OrphanServiceDeps {
  store: Store;
  hub: AgentHub;
  ledger: Ledger;
  reconciler: Pick<Reconciler, "reconcileNow" | "enqueue">;
  detector: OrphanDetector;
  /** Project networks as reported; a destroyed one is dropped from it at once. */
  networks?: NetworkInventory;
  /** Host directories outside the data root AdoptOrphan's move_data may copy (--adoptable-path). */
  adoptablePaths?: readonly string[];
  log: Logger;
  now?: () => number;
}

/** A one-off command to an orphan's host (not stored: nothing resends it). */
type OneOffCommand = { kind: CommandKind; containerId?: string; dataDir?: string; network?: string };

const ORPHAN_ID_RE = /^orp_[a-z2-7]{20}$/;
/** How long the agent may take to answer one orphan command (inspect, remove, remove data). */
const ANSWER_TIMEOUT_MS: Partial<Record<CommandKind, number>> = {
  [CommandKind.INSPECT_CONTAINER]: 15_000,
  [CommandKind.REMOVE_CONTAINER]: 60_000,
  [CommandKind.REMOVE_STRAY_DATA]: 120_000,
  [CommandKind.REMOVE_NETWORK]: 30_000,
};

/**
 * OrphanService: lists what the hosts and the database disagree on
 * (orphans/classify.ts), adopts orphan containers as servers, destroys
 * orphans, and moves stranded servers to another host. Every adoption,
 * destruction and move is a ledger event with the caller as actor.
 */
export function createOrphanService(deps: OrphanServiceDeps): ServiceImpl<typeof OrphanService> {
  const { store, hub, ledger, reconciler, detector, log } = deps;
  const now = deps.now ?? Date.now;
  /** Orphans an adoption or destruction is working on: one operation per orphan at a time. */
  const busy = new Set<string>();

  /** The orphan `id` names, as it is now (it may have stopped being one since it was listed). */
  function resolve(id: string): OrphanFinding {
    const key = id.trim();
    if (!ORPHAN_ID_RE.test(key)) throw new InvalidArgumentError("id", `"${key.slice(0, 64)}" is not an orphan id (orp_ followed by 20 characters, from OrphanService.ListOrphans)`);
    const f = detector.find({ includeUnmanaged: true }).find((o) => o.id === key);
    if (!f) throw new NotFoundError("orphan", key, "it was adopted, destroyed or removed, or its host is offline; list orphans again with OrphanService.ListOrphans");
    return f;
  }

  async function exclusive<T>(f: OrphanFinding, fn: () => Promise<T>): Promise<T> {
    if (busy.has(f.id)) throw new PreconditionError(`orphan ${f.id} is being adopted or destroyed right now; list orphans again in a moment`);
    busy.add(f.id);
    try {
      return await fn();
    } finally {
      busy.delete(f.id);
    }
  }

  function hostName(hostId: string): string {
    return store.getHost(hostId)?.name || hostId;
  }

  /** Sends a one-off command to the orphan's host and waits for its result; failures become errors that say what happened. */
  async function ask(hostId: string, init: OneOffCommand, what: string): Promise<CommandResult> {
    if (!hub.isConnected(hostId)) throw new UnavailableError(`host ${hostName(hostId)} is offline; try again once its agent is connected`);
    const timeoutMs = ANSWER_TIMEOUT_MS[init.kind] ?? 30_000;
    // orphanAction: an explicit operator action on the container it names (the agent refuses others' containers without it).
    const cmd = create(CommandSchema, { ...init, id: newId("cmd"), deadline: timestampFromMs(now() + timeoutMs), orphanAction: true });
    let r: CommandResult;
    try {
      r = await hub.request(hostId, cmd, timeoutMs);
    } catch (err) {
      throw new UnavailableError(`${what}: ${(err as Error).message}; list orphans again to see whether it happened`);
    }
    if (!r.success) {
      if (r.reason === "ContainerMissing") throw new NotFoundError("container", init.containerId ?? "", `${r.message}; list orphans again`);
      throw new PreconditionError(`${what} failed on host ${hostName(hostId)}: ${r.reason}: ${r.message}`);
    }
    return r;
  }

  function toProto(f: OrphanFinding): Orphan {
    return create(OrphanSchema, {
      id: f.id,
      kind: f.kind,
      hostId: f.hostId,
      containerId: f.containerId,
      containerName: f.containerName,
      image: f.image,
      state: f.state,
      ...(f.createTimeMs > 0 ? { createTime: timestampFromMs(f.createTimeMs) } : {}),
      labels: f.labels,
      ports: f.ports,
      mounts: f.mounts,
      reason: f.reason,
      dataPath: f.dataPath,
      serverId: f.serverId,
      networkId: f.networkId ?? "",
      networkName: f.networkName ?? "",
      project: f.kind === OrphanKind.NETWORK ? f.project : "",
    });
  }

  function portConflicts(hostId: string, ports: ServerRecord["spec"]["ports"], exceptId: string, project: string): void {
    checkPortsFree(store, hostId, ports, { exceptId, project, hostLabel: hostName(hostId) });
  }

  /** A spec made from a container's config, validated like CreateServer's; only the name is the caller's. */
  function adoptedSpec(init: MessageInitShape<typeof ServerSpecSchema>) {
    try {
      return validateSpec(create(ServerSpecSchema, init), "adopted");
    } catch (err) {
      if (err instanceof InvalidArgumentError && err.field === "adopted.name") throw new InvalidArgumentError("name", err.message.replace(/^adopted\.name: /, ""));
      if (err instanceof InvalidArgumentError) throw new PreconditionError(`the container's configuration does not make a valid berth server: ${err.message}`);
      throw err;
    }
  }

  /** Drops the record a move_data adoption made when the agent did not copy the data. */
  function rollBackAdoption(id: string, f: OrphanFinding, why: string): void {
    const s = store.getServer(id);
    if (!s) return;
    store.transaction(() => {
      store.deleteServerRecord(id);
      ledger.append({
        type: "orphan.adopt_failed",
        project: s.project,
        serverId: id,
        hostId: f.hostId,
        actor: "manager",
        reason: "CopyFailed",
        correlationId: f.id,
        message: `copying the data of container ${f.containerName} failed (${why}); server ${s.name} was not adopted and its record is removed`,
      });
    });
    log.warn({ server: id, host: f.hostId, container: f.containerId, why }, "adoption copy failed; record removed");
  }

  async function adopt(caller: Caller, f: OrphanFinding, req: { project: string; name: string; moveData: boolean; dataMountPath: string; force: boolean }) {
    const project = projectFor(caller, req.project);
    const name = req.name.trim();
    if (!name) throw new InvalidArgumentError("name", "required: the adopted server's name (lowercase letters, digits and '-')");
    if (store.findServerByName(project, name)) throw new AlreadyExistsError(`a server named "${name}" already exists in project "${project}"; pick another name`);
    // Refuse what cannot be adopted before asking the host anything.
    refuseAdoption(f, req.force);
    const host = store.getHost(f.hostId);
    const inspected = await ask(f.hostId, { kind: CommandKind.INSPECT_CONTAINER, containerId: f.containerId }, `inspecting container ${f.containerName}`);
    if (!inspected.container) throw new PreconditionError(`host ${hostName(f.hostId)} did not describe container ${f.containerName}; is its agent up to date?`);
    const plan = planAdoption(f, inspected.container, host?.facts.dataRoot ?? "", {
      moveData: req.moveData,
      dataMountPath: req.dataMountPath.trim(),
      force: req.force,
      adoptablePaths: deps.adoptablePaths ?? [],
      dataDirOwner: (entry) => {
        const owner = store.getServer(entry);
        return owner ? `${owner.name} (${owner.id})` : undefined;
      },
    });
    const spec = adoptedSpec({ ...plan.spec, name, hostId: f.hostId });
    if (plan.serverId && store.getServer(plan.serverId)) {
      throw new AlreadyExistsError(`server ${plan.serverId} has a record already (on host ${store.getServer(plan.serverId)!.hostId}); this container is a stale copy: destroy it`);
    }
    portConflicts(f.hostId, spec.ports, "", project);
    const at = now();
    const id = plan.serverId || newId("srv");
    const rec: ServerRecord = {
      id,
      project,
      name,
      hostId: f.hostId,
      generation: plan.generation,
      spec,
      status: { ...initialStatus(), phase: Phase.PENDING, reason: "Adopted", message: "adopted; waiting for the reconciler" },
      dataInitialized: plan.dataPresent,
      lifecycle: plan.mode === "bind" ? { adoptedContainerId: f.containerId } : {},
      createdAt: at,
      updatedAt: at,
      deletedAt: null,
    };
    let copy: Command | undefined;
    if (plan.mode === "copy") {
      const deadlineMs = COMMAND_DEADLINE_MS[CommandKind.COPY_DATA];
      copy = create(CommandSchema, {
        id: newId("cmd"),
        serverId: id,
        kind: CommandKind.COPY_DATA,
        containerId: f.containerId,
        mountPath: plan.copyMountPath,
        stopTimeoutSeconds: 10,
        orphanAction: true,
        deadline: timestampFromMs(at + deadlineMs),
      });
    }
    const how = {
      "same-id": `with its own server id ${id}`,
      bind: "in place (bound by its container id until berth recreates it)",
      copy: `copying its data from ${plan.copyMountPath} into the data root; berth then recreates it`,
    }[plan.mode];
    store.transaction(() => {
      // The host was asked in between: check again what may have changed meanwhile.
      if (store.findServerByName(project, name)) throw new AlreadyExistsError(`a server named "${name}" already exists in project "${project}"; pick another name`);
      if (store.getServer(id)) throw new AlreadyExistsError(`server ${id} has a record already; list orphans again`);
      store.insertServer(rec);
      if (copy) {
        store.insertCommand({ command: copy, hostId: f.hostId, createdAt: at, deadlineAt: at + COMMAND_DEADLINE_MS[CommandKind.COPY_DATA] });
        ledger.append({ type: "command.issued", project, serverId: id, hostId: f.hostId, reason: "CopyingData", message: commandName(copy.kind), actor: "manager", correlationId: copy.id });
      }
      ledger.append({
        type: "orphan.adopted",
        project,
        serverId: id,
        hostId: f.hostId,
        actor: actorOf(caller),
        reason: OrphanKind[f.kind] ?? "",
        correlationId: f.id,
        message: `container ${f.containerName} (${f.containerId.slice(0, 12)}) adopted as server ${name} ${how}${plan.warnings.length ? `; ${plan.warnings.length} setting(s) berth cannot keep` : ""}`,
        payload: { orphanKind: OrphanKind[f.kind], containerId: f.containerId, mode: plan.mode, warnings: plan.warnings },
      });
    });
    if (copy) {
      // The agent removes the container after copying; it reports no event for an
      // unlabelled container, so forget it here instead of at the next inventory.
      // A refused or failed copy takes the record back out: nothing was adopted, so no server
      // may linger in DataLost (with its alert) for data that never arrived. The original
      // container and directory are as they were; the orphan is listed again.
      hub.awaitResult(f.hostId, copy.id, COMMAND_DEADLINE_MS[CommandKind.COPY_DATA]).then(
        (r) => {
          if (r.success) store.removeContainer(f.hostId, f.containerId);
          else rollBackAdoption(id, f, r.message || r.reason);
        },
        () => {},
      );
      if (hub.sendCommand(f.hostId, copy)) store.markCommandSent(copy.id, at);
    }
    log.info({ server: id, name, project, host: f.hostId, container: f.containerId, mode: plan.mode, warnings: plan.warnings.length }, "orphan adopted");
    await reconciler.reconcileNow(id, `adopted by ${caller.name}`);
    return create(AdoptOrphanResponseSchema, { server: serverToProto(store.getServer(id) ?? rec), warnings: plan.warnings });
  }

  async function destroy(caller: Caller, f: OrphanFinding, req: { removeData: boolean; dryRun: boolean; force: boolean }) {
    const plan = planDestroy(f, hostName(f.hostId), req);
    if (req.dryRun) return create(DestroyOrphanResponseSchema, { removed: plan.removed, kept: plan.kept });
    if (f.kind === OrphanKind.STRAY_DATA && !req.removeData) {
      throw new InvalidArgumentError("remove_data", `destroying a stray data directory deletes ${f.dataPath}; set remove_data=true to confirm (dry_run shows it first)`);
    }
    const done: string[] = [];
    const record = (failure?: string) =>
      ledger.append({
        type: "orphan.destroyed",
        hostId: f.hostId,
        ...(f.kind === OrphanKind.STRANDED ? { serverId: f.serverId, project: f.project } : {}),
        actor: actorOf(caller),
        reason: failure ? "PartlyDestroyed" : (OrphanKind[f.kind] ?? ""),
        correlationId: f.id,
        message: `${failure ? "partly destroyed" : "destroyed"}: ${done.join("; ") || "nothing"}${failure ? `; then failed: ${failure}` : ""}`,
        payload: { orphanKind: OrphanKind[f.kind], removed: done, kept: plan.kept, ...(failure ? { error: failure } : {}) },
      });
    for (const [i, a] of plan.actions.entries()) {
      try {
        await apply(caller, f, a);
      } catch (err) {
        if (done.length > 0) record(err instanceof Error ? err.message : String(err));
        throw err;
      }
      done.push(plan.removed[i]!);
    }
    record();
    log.info({ orphan: f.id, kind: OrphanKind[f.kind], host: f.hostId, removed: done }, "orphan destroyed");
    return create(DestroyOrphanResponseSchema, { removed: done, kept: plan.kept });
  }

  async function apply(caller: Caller, f: OrphanFinding, a: DestroyAction): Promise<void> {
    switch (a.what) {
      case "container":
        await ask(f.hostId, { kind: CommandKind.REMOVE_CONTAINER, containerId: a.containerId }, `removing container ${f.containerName}`).catch((err: unknown) => {
          // Already gone is what was asked for.
          if (!(err instanceof NotFoundError)) throw err;
        });
        store.removeContainer(f.hostId, a.containerId);
        return;
      case "network":
        await ask(f.hostId, { kind: CommandKind.REMOVE_NETWORK, network: a.networkId }, `removing network ${f.networkName ?? a.networkId}`);
        deps.networks?.forget(f.hostId, a.networkId);
        return;
      case "data":
        await ask(f.hostId, { kind: CommandKind.REMOVE_STRAY_DATA, dataDir: a.name }, `removing data directory ${f.dataPath}`);
        store.removeDataRootEntry(f.hostId, a.name);
        return;
      case "record": {
        const s = store.getServer(a.serverId);
        if (!s) return;
        store.transaction(() => {
          store.deleteServerRecord(s.id);
          ledger.append({
            type: "server.purged",
            project: s.project,
            serverId: s.id,
            hostId: s.hostId,
            actor: actorOf(caller),
            reason: "StrandedDestroyed",
            message: `record dropped: its host ${hostName(s.hostId)} was removed (DestroyOrphan); any data there stays`,
          });
        });
        return;
      }
    }
  }

  return {
    listOrphans(req, ctx) {
      callerOf(ctx);
      const hostId = req.hostId.trim();
      if (hostId && !store.getHost(hostId)) throw new NotFoundError("host", hostId, "list hosts with HostService.ListHosts");
      const includeUnmanaged = req.includeUnmanaged || req.kinds.includes(OrphanKind.UNMANAGED);
      const orphans = detector
        .find({ includeUnmanaged })
        .filter((f) => (!hostId || f.hostId === hostId) && (req.kinds.length === 0 || req.kinds.includes(f.kind)));
      return create(ListOrphansResponseSchema, { orphans: orphans.map(toProto) });
    },

    async adoptOrphan(req, ctx) {
      const caller = callerOf(ctx);
      const f = resolve(req.id);
      return exclusive(f, () => adopt(caller, f, req));
    },

    async destroyOrphan(req, ctx) {
      const caller = callerOf(ctx);
      const f = resolve(req.id);
      if (req.dryRun) return destroy(caller, f, req);
      return exclusive(f, () => destroy(caller, f, req));
    },

    async reassignServer(req, ctx) {
      const caller = callerOf(ctx);
      const key = req.id.trim();
      if (!key) throw new InvalidArgumentError("id", "required: the stranded server's orphan id, server id or name");
      const targetId = req.hostId.trim();
      if (!targetId) throw new InvalidArgumentError("host_id", "required: the host to run the server on (one that has its data directory)");
      let s: ServerRecord;
      if (ORPHAN_ID_RE.test(key)) {
        const f = resolve(key);
        if (f.kind !== OrphanKind.STRANDED) throw new PreconditionError(`orphan ${key} is not a stranded server but ${OrphanKind[f.kind]}; only servers whose host was removed are reassigned`);
        s = store.getServer(f.serverId)!;
      } else {
        s = findVisibleServer(store, caller, key);
      }
      const current = store.getHost(s.hostId);
      if (current && current.removedAt === null) {
        throw new PreconditionError(`server ${s.name} is on host ${current.name}, which was not removed; berth moves a server to another host only when its host was removed (HostService.RemoveHost)`);
      }
      if (s.lifecycle.purge) throw new PreconditionError(`server ${s.name} is being purged; finish with PurgeServer force=true instead`);
      const target = store.getHost(targetId);
      if (!target || target.removedAt !== null) throw new NotFoundError("host", targetId, "list hosts with HostService.ListHosts");
      if (!hub.isConnected(target.id)) throw new PreconditionError(`host ${target.name} is offline; berth must see its data directory first: retry once its agent is connected`);
      const root = target.facts.dataRoot ?? "<data root>";
      if (!store.listDataRootEntries(target.id).some((e) => e.name === s.id)) {
        throw new PreconditionError(
          `host ${target.name} has no data directory ${root}/${s.id}: copy the server's data there first (the directory is named after the server id), ` +
            "then HostService.ResyncHost and retry; or purge the server",
        );
      }
      portConflicts(target.id, s.spec.ports, s.id, s.project);
      const at = now();
      const from = current?.name ?? s.hostId;
      const { containerLostAt: _lost, adoptedContainerId: _adopted, ...lifecycle } = s.lifecycle;
      store.transaction(() => {
        store.updateServerSpec({ id: s.id, spec: { ...s.spec, hostId: target.id }, generation: s.generation + 1, updatedAt: at, deletedAt: s.deletedAt, hostId: target.id });
        store.updateLifecycle(s.id, lifecycle);
        // Nothing observed on the old host applies any more (and no container there may count as "removed").
        store.updateServerStatus(s.id, { ...s.status, phase: Phase.PENDING, reason: "Reassigned", message: `moved from removed host ${from}`, containerId: "", containerState: "" }, true);
        ledger.append({
          type: "server.reassigned",
          project: s.project,
          serverId: s.id,
          hostId: target.id,
          actor: actorOf(caller),
          message: `moved from removed host ${from} to host ${target.name}, where its data directory is`,
          payload: { from: s.hostId, to: target.id },
        });
      });
      log.info({ server: s.id, name: s.name, from: s.hostId, to: target.id }, "stranded server reassigned");
      await reconciler.reconcileNow(s.id, `reassigned by ${caller.name}`);
      return create(ReassignServerResponseSchema, { server: serverToProto(store.getServer(s.id)!) });
    },
  };
}

