/**
 * What AdoptOrphan, DestroyOrphan and ReassignServer do once a request is
 * valid and allowed (the I/O edge of orphans/actions.ts): they read the store,
 * record the operator's intent with its ledger event, and leave every command
 * to the reconciler — the one-off inspections and removals an orphan needs
 * (`Reconciler.requestOrphanCommand`), a move_data adoption's COPY_DATA as the
 * new server's in-flight command (`issueCopyData`, `dispatch`), and a dropped
 * record (`dropRecord`).
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { CommandKind, type Command, type CommandResult } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { loadHost } from "../api/find-server.js";
import { requirePortsFree } from "../api/port-check.js";
import { validateSpec } from "../api/validate.js";
import { initialStatus, type NewServerRecord, type ServerRecord } from "../domain/records.js";
import { AlreadyExistsError, BerthError, InvalidArgumentError, NotFoundError, PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Logger } from "../log.js";
import type { OrphanCommand, Reconciler } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";
import { dataRootEntriesOfMounts, planAdoption, planDestroy, refuseAdoption, type DestroyAction, type DestroyPlan } from "./actions.js";
import type { OrphanFinding } from "./classify.js";
import type { NetworkInventory } from "./network-inventory.js";

export interface OrphanOperationsDeps {
  store: Store;
  /** Read only: whether a host is connected, and a COPY_DATA's result. Commands go through the reconciler. */
  hub: Pick<AgentHub, "isConnected" | "awaitResult">;
  /** Which hosts are connected to any manager of this database (cluster/presence.ts); default: this manager's streams. */
  presence?: { isConnected(hostId: string): boolean } | undefined;
  ledger: Pick<Ledger, "op">;
  reconciler: Pick<Reconciler, "reconcileNow" | "dropRecord" | "issueCopyData" | "dispatch" | "requestOrphanCommand" | "deadlineFor">;
  /** Project networks as reported; a destroyed one is dropped from it at once. */
  networks?: NetworkInventory | undefined;
  /** Host directories outside the data root AdoptOrphan's move_data may copy (--adoptable-path). */
  adoptablePaths?: readonly string[];
  log: Logger;
  now?: () => number;
}

/** Who acts: `actor` goes on ledger events, `name` into the reconcile cause. */
export interface Actor {
  actor: string;
  name: string;
}

export interface AdoptRequest {
  /** The project the caller may create the server in (already checked). */
  project: string;
  /** Trimmed and non-empty. */
  name: string;
  moveData: boolean;
  dataMountPath: string;
  force: boolean;
}

/**
 * Adopts, destroys and reassigns. Each method re-checks what the host or the
 * store may have changed since the caller looked, and throws typed errors that
 * say what to do next.
 */
export class OrphanOperations {
  private readonly now: () => number;

  constructor(private readonly deps: OrphanOperationsDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** A host's name for messages (its id if it has no record). */
  async hostName(hostId: string): Promise<string> {
    return (await this.deps.store.getHost(hostId))?.name || hostId;
  }

  /** What DestroyOrphan would remove and keep (its dry run). */
  async planDestroy(f: OrphanFinding, req: { removeData: boolean; force: boolean }): Promise<DestroyPlan> {
    return planDestroy(f, await this.hostName(f.hostId), req);
  }

  /**
   * Makes a server of an orphan container from its actual configuration (asked
   * of the host): with its own id (labelled by this manager), bound to the
   * container by its Docker id, or — move_data — with a COPY_DATA command that
   * copies its data into the data root, after which the reconciler recreates it.
   */
  async adopt(by: Actor, f: OrphanFinding, req: AdoptRequest): Promise<{ server: ServerRecord; warnings: string[] }> {
    const { store, ledger, reconciler, log } = this.deps;
    const { project, name } = req;
    if (await store.findServerByName(project, name)) throw new AlreadyExistsError(`a server named "${name}" already exists in project "${project}"; pick another name`);
    // Refuse what cannot be adopted before asking the host anything.
    refuseAdoption(f, req.force);
    const host = await store.getHost(f.hostId);
    const hostName = host?.name || f.hostId;
    const inspected = await this.ask(f.hostId, { kind: CommandKind.INSPECT_CONTAINER, containerId: f.containerId }, `inspecting container ${f.containerName}`);
    if (!inspected.container) throw new PreconditionError(`host ${hostName} did not describe container ${f.containerName}; is its agent up to date?`);
    const dataRoot = host?.facts.dataRoot ?? "";
    // The records owning the data-root entries the container mounts, read before planning (which is pure).
    const owners = new Map<string, string>();
    for (const entry of dataRootEntriesOfMounts(inspected.container, dataRoot)) {
      const owner = await store.getServer(entry);
      if (owner) owners.set(entry, `${owner.name} (${owner.id})`);
    }
    const plan = planAdoption(f, inspected.container, dataRoot, {
      moveData: req.moveData,
      dataMountPath: req.dataMountPath.trim(),
      force: req.force,
      adoptablePaths: this.deps.adoptablePaths ?? [],
      dataDirOwner: (entry) => owners.get(entry),
    });
    const spec = adoptedSpec({ ...plan.spec, name, hostId: f.hostId });
    const stale = plan.serverId ? await store.getServer(plan.serverId) : undefined;
    if (stale) throw new AlreadyExistsError(`server ${plan.serverId} has a record already (on host ${stale.hostId}); this container is a stale copy: destroy it`);
    await requirePortsFree(store, f.hostId, spec.ports, { exceptId: "", project, hostLabel: hostName });
    const at = this.now();
    const id = plan.serverId || newId("srv");
    const rec: NewServerRecord = {
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
      version: 1,
    };
    const how = {
      "same-id": `with its own server id ${id}`,
      bind: "in place (bound by its container id until berth recreates it)",
      copy: `copying its data from ${plan.copyMountPath} into the data root; berth then recreates it`,
    }[plan.mode];
    const copy = plan.mode === "copy" ? reconciler.issueCopyData(rec, { containerId: f.containerId, mountPath: plan.copyMountPath }, at) : undefined;
    // The host was asked in between: the database refuses a name or ports taken meanwhile
    // (ServerNameTakenError, PreconditionError); the same id is checked below.
    const batch: WriteOp[] = [
      { op: "server.insert", server: rec },
      ...(copy?.ops ?? []),
      ledger.op({
        type: "orphan.adopted",
        project,
        serverId: id,
        hostId: f.hostId,
        actor: by.actor,
        reason: OrphanKind[f.kind] ?? "",
        correlationId: f.id,
        message: `container ${f.containerName} (${f.containerId.slice(0, 12)}) adopted as server ${name} ${how}${plan.warnings.length ? `; ${plan.warnings.length} setting(s) berth cannot keep` : ""}`,
        payload: { orphanKind: OrphanKind[f.kind], containerId: f.containerId, mode: plan.mode, warnings: plan.warnings },
      }),
    ];
    try {
      await store.commit(batch);
    } catch (err) {
      // A record with this id appeared meanwhile (the same orphan adopted on another manager).
      if (!(err instanceof BerthError) && (await store.getServer(id))) throw new AlreadyExistsError(`server ${id} has a record already; list orphans again`);
      throw err;
    }
    if (copy) await this.followCopy(rec, f, copy.command, at);
    log.info({ server: id, name, project, host: f.hostId, container: f.containerId, mode: plan.mode, warnings: plan.warnings.length }, "orphan adopted");
    await reconciler.reconcileNow(id, `adopted by ${by.name}`);
    // Dropped meanwhile (a copy refused at once): answer with what was adopted.
    return { server: (await store.getServer(id)) ?? { ...rec, version: 1 }, warnings: plan.warnings };
  }

  /**
   * Removes what `f` is (container, data directory with remove_data, network,
   * stranded record), in plan order, and records `orphan.destroyed` — partly
   * destroyed, with the error, when a step after the first fails.
   */
  async destroy(by: Actor, f: OrphanFinding, req: { removeData: boolean; force: boolean }): Promise<DestroyPlan> {
    const plan = await this.planDestroy(f, req);
    if (f.kind === OrphanKind.STRAY_DATA && !req.removeData) {
      throw new InvalidArgumentError("remove_data", `destroying a stray data directory deletes ${f.dataPath}; set remove_data=true to confirm (dry_run shows it first)`);
    }
    const done: string[] = [];
    const record = (failure?: string) =>
      this.deps.store.commit([this.deps.ledger.op({
        type: "orphan.destroyed",
        hostId: f.hostId,
        ...(f.kind === OrphanKind.STRANDED ? { serverId: f.serverId, project: f.project } : {}),
        actor: by.actor,
        reason: failure ? "PartlyDestroyed" : (OrphanKind[f.kind] ?? ""),
        correlationId: f.id,
        message: `${failure ? "partly destroyed" : "destroyed"}: ${done.join("; ") || "nothing"}${failure ? `; then failed: ${failure}` : ""}`,
        payload: { orphanKind: OrphanKind[f.kind], removed: done, kept: plan.kept, ...(failure ? { error: failure } : {}) },
      })]);
    for (const [i, a] of plan.actions.entries()) {
      try {
        await this.apply(by, f, a);
      } catch (err) {
        if (done.length > 0) {
          // The caller hears the step's error; a failure to record the partial destruction is logged.
          await record(err instanceof Error ? err.message : String(err)).catch((recordErr: unknown) =>
            this.deps.log.error({ err: recordErr, orphan: f.id }, "could not record a partly destroyed orphan"),
          );
        }
        throw err;
      }
      done.push(plan.removed[i]!);
    }
    await record();
    this.deps.log.info({ orphan: f.id, kind: OrphanKind[f.kind], host: f.hostId, removed: done }, "orphan destroyed");
    return { actions: plan.actions, removed: done, kept: plan.kept };
  }

  /**
   * Moves a stranded server (its host was removed) to `targetId`, a connected
   * host that has its data directory, and lets the reconciler recreate it there.
   */
  async reassign(by: Actor, s: ServerRecord, targetId: string): Promise<ServerRecord> {
    const { store, ledger, reconciler, log } = this.deps;
    const current = await store.getHost(s.hostId);
    if (current && current.removedAt === null) {
      throw new PreconditionError(`server ${s.name} is on host ${current.name}, which was not removed; berth moves a server to another host only when its host was removed (HostService.RemoveHost)`);
    }
    if (s.lifecycle.purge) throw new PreconditionError(`server ${s.name} is being purged; finish with PurgeServer force=true instead`);
    const target = await loadHost(store, targetId);
    if (!(this.deps.presence ?? this.deps.hub).isConnected(target.id)) throw new PreconditionError(`host ${target.name} is offline; berth must see its data directory first: retry once its agent is connected`);
    const root = target.facts.dataRoot ?? "<data root>";
    if (!(await store.listDataRootEntries(target.id)).some((e) => e.name === s.id)) {
      throw new PreconditionError(
        `host ${target.name} has no data directory ${root}/${s.id}: copy the server's data there first (the directory is named after the server id), ` +
          "then HostService.ResyncHost and retry; or purge the server",
      );
    }
    await requirePortsFree(store, target.id, s.spec.ports, { exceptId: s.id, project: s.project, hostLabel: target.name || target.id });
    const at = this.now();
    const from = current?.name ?? s.hostId;
    const { containerLostAt: _lost, adoptedContainerId: _adopted, ...lifecycle } = s.lifecycle;
    // On the version the caller read: a change made meanwhile refuses the move (ConflictError: read again and retry).
    await store.commit([
      { op: "server.spec", id: s.id, spec: { ...s.spec, hostId: target.id }, generation: s.generation + 1, updatedAt: at, deletedAt: s.deletedAt, hostId: target.id, expectVersion: s.version },
      { op: "server.lifecycle", id: s.id, lifecycle },
      // Nothing observed on the old host applies any more (and no container there may count as "removed").
      { op: "server.status", id: s.id, status: { ...s.status, phase: Phase.PENDING, reason: "Reassigned", message: `moved from removed host ${from}`, containerId: "", containerState: "" }, dataInitialized: true },
      ledger.op({
        type: "server.reassigned",
        project: s.project,
        serverId: s.id,
        hostId: target.id,
        actor: by.actor,
        message: `moved from removed host ${from} to host ${target.name}, where its data directory is`,
        payload: { from: s.hostId, to: target.id },
      }),
    ]);
    log.info({ server: s.id, name: s.name, from: s.hostId, to: target.id }, "stranded server reassigned");
    await reconciler.reconcileNow(s.id, `reassigned by ${by.name}`);
    const moved = await store.getServer(s.id);
    if (!moved) throw new NotFoundError("server", s.id, "it was purged meanwhile; list servers with ServerService.ListServers");
    return moved;
  }

  /**
   * Sends a move_data adoption's COPY_DATA and follows its result. The agent
   * removes the container after copying and reports no event for an unlabelled
   * container, so it is forgotten here instead of at the next inventory. A
   * refused or failed copy takes the record back out: nothing was adopted, so no
   * server may linger in DataLost (with its alert) for data that never arrived;
   * the original container and directory are as they were, listed again.
   * Following outlives the call (a copy takes minutes); its writes are awaited
   * in that chain and their failures logged. The command is recorded, so if the
   * result is missed (the link drops) it is resent, and plan() expires it.
   */
  private async followCopy(rec: Pick<ServerRecord, "id" | "name" | "project" | "hostId">, f: OrphanFinding, copy: Command, at: number): Promise<void> {
    const { store, hub, reconciler, log } = this.deps;
    // Listening before sending: a quick answer cannot be missed.
    const result = hub.awaitResult(f.hostId, copy.id, reconciler.deadlineFor(CommandKind.COPY_DATA));
    void result
      .then(async (r) => {
        if (r.success) {
          await store.commit([{ op: "container.remove", hostId: f.hostId, containerId: f.containerId }]);
          return;
        }
        const why = r.message || r.reason;
        const dropped = await reconciler.dropRecord(
          rec,
          {
            type: "orphan.adopt_failed",
            actor: "manager",
            reason: "CopyFailed",
            correlationId: f.id,
            message: `copying the data of container ${f.containerName} failed (${why}); server ${rec.name} was not adopted and its record is removed`,
          },
          "adoption copy failed",
        );
        if (dropped) log.warn({ server: rec.id, host: f.hostId, container: f.containerId, why }, "adoption copy failed; record removed");
      }, () => {
        // No answer in time (or the link dropped): the stored command is resent or expires through the reconciler.
      })
      .catch((err: unknown) => log.error({ err, server: rec.id, host: f.hostId, container: f.containerId }, "could not record the adoption copy's result; the next inventory shows it"));
    await reconciler.dispatch(f.hostId, copy, at);
  }

  private async apply(by: Actor, f: OrphanFinding, a: DestroyAction): Promise<void> {
    const { store } = this.deps;
    switch (a.what) {
      case "container":
        await this.ask(f.hostId, { kind: CommandKind.REMOVE_CONTAINER, containerId: a.containerId }, `removing container ${f.containerName}`).catch((err: unknown) => {
          // Already gone is what was asked for.
          if (!(err instanceof NotFoundError)) throw err;
        });
        await store.commit([{ op: "container.remove", hostId: f.hostId, containerId: a.containerId }]);
        return;
      case "network":
        await this.ask(f.hostId, { kind: CommandKind.REMOVE_NETWORK, network: a.networkId }, `removing network ${f.networkName ?? a.networkId}`);
        this.deps.networks?.forget(f.hostId, a.networkId);
        return;
      case "data":
        await this.ask(f.hostId, { kind: CommandKind.REMOVE_STRAY_DATA, dataDir: a.name }, `removing data directory ${f.dataPath}`);
        await store.commit([{ op: "dataRootEntry.remove", hostId: f.hostId, name: a.name }]);
        return;
      case "record": {
        const s = await store.getServer(a.serverId);
        if (!s) return;
        await this.deps.reconciler.dropRecord(
          s,
          { actor: by.actor, reason: "StrandedDestroyed", message: `record dropped: its host ${await this.hostName(s.hostId)} was removed (DestroyOrphan); any data there stays` },
          `destroyed by ${by.name}`,
        );
        return;
      }
    }
  }

  /** Asks the orphan's host one thing through the reconciler and waits; failures become errors that say what happened. */
  private async ask(hostId: string, init: OrphanCommand, what: string): Promise<CommandResult> {
    if (!this.deps.hub.isConnected(hostId)) {
      if (this.deps.presence?.isConnected(hostId)) {
        throw new UnavailableError(`host ${await this.hostName(hostId)} is connected to another manager of this berth; this action runs through the manager holding its agent's stream: call it there (or retry: agents move between managers when one stops)`);
      }
      throw new UnavailableError(`host ${await this.hostName(hostId)} is offline; try again once its agent is connected`);
    }
    let r: CommandResult;
    try {
      r = await this.deps.reconciler.requestOrphanCommand(hostId, init);
    } catch (err) {
      throw new UnavailableError(`${what}: ${(err as Error).message}; list orphans again to see whether it happened`);
    }
    if (!r.success) {
      if (r.reason === "ContainerMissing") throw new NotFoundError("container", init.containerId ?? "", `${r.message}; list orphans again`);
      throw new PreconditionError(`${what} failed on host ${await this.hostName(hostId)}: ${r.reason}: ${r.message}`);
    }
    return r;
  }
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
