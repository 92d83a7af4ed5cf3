/**
 * Moving and copying a server with its data: TransferServer and CloneServer.
 *
 * Both carry the data as a backup (agent/src/data/archive.ts) through a
 * backup target, so they reuse what backups already guarantee: a checksum
 * verified before anything is unpacked, a fresh directory swapped in whole,
 * deadlines, a restarted agent failing the step instead of leaving it
 * running for ever, and the archive listed as a backup afterwards.
 *
 * A transfer is one data operation on the server (Lifecycle.dataOp, kind
 * "transfer", plan() step 2b): archive on the source (stopped), move the
 * record, restore and start on the target; the source keeps its container
 * and data until the server runs on the target, and gets them back on any
 * failure (reconciler.ts moveToTarget / moveBack). A clone is a new server
 * record whose first data operation restores a backup of its source (an
 * existing one, or one made now).
 */
import { DesiredState, Phase, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import type { HostPresence } from "../cluster/presence.js";
import { repickPorts } from "../domain/port-conflicts.js";
import { initialStatus, type BackupLocationRecord, type BackupRecord, type BackupTargetRecord, type DataOp, type HostRecord, type ServerRecord } from "../domain/records.js";
import { ConflictError, InvalidArgumentError, NotFoundError, PreconditionError, ServerNameTakenError, WRITE_ATTEMPTS } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";
import { backupLocationOn } from "../api/backup-removal.js";
import { backupKey, pendingBackup, requireDataOpAllowed, withDataOpSettled } from "../backups/pending.js";
import { loadHost } from "../api/find-server.js";
import { requireSchedulable } from "../hosts/placement.js";
import { loadPortOwners, requirePortsFree } from "../api/port-check.js";

/** Who asks (the ledger's actor and a name for logs). */
export interface Mover {
  actor: string;
  name: string;
}

export interface MovesDeps {
  store: Store;
  ledger: Ledger;
  reconciler: Pick<Reconciler, "reconcileNow">;
  presence: Pick<HostPresence, "isConnected">;
  now?: () => number;
  /** A transfer's deadline unless asked otherwise (6 h). */
  defaultTimeoutMs?: number;
}

export interface TransferOptions {
  /** Backup target id or name; empty: the first one both hosts reach. */
  target?: string;
  keepSourceHours?: number;
  timeoutSeconds?: number;
}

export interface CloneOptions {
  name: string;
  /** Host id or name; empty: the source's. */
  host?: string;
  fromBackup?: string;
  target?: string;
  desiredState?: DesiredState;
}

const DEFAULT_TIMEOUT_MS = 6 * 3_600_000;

export class ServerMoves {
  private readonly now: () => number;

  constructor(private readonly deps: MovesDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * TransferServer: records the move of `s` to `hostIdOrName` (checked now:
   * both hosts connected, the target schedulable with the server's ports
   * free, a backup target both reach) and lets the reconciler carry it out.
   */
  async transfer(by: Mover, s: ServerRecord, hostIdOrName: string, o: TransferOptions = {}): Promise<{ server: ServerRecord; backupId: string }> {
    const { store, ledger } = this.deps;
    const dest = await this.schedulableHost(hostIdOrName, "transfer");
    for (let attempt = 1; ; attempt++) {
      const cur = await this.settled(attempt === 1 ? s : await this.reload(s.id), "transfer");
      requireDataOpAllowed(cur, "transfer", (h) => this.deps.presence.isConnected(h));
      if (dest.id === cur.hostId) throw new PreconditionError(`server "${cur.name}" is on host ${dest.name} already; choose another host`);
      await requirePortsFree(store, dest.id, cur.spec.ports, { exceptId: cur.id, project: cur.project, hostLabel: dest.name || dest.id });
      const carrier = await this.carrier(o.target ?? "", cur.hostId, dest.id);
      const at = this.now();
      const backupId = newId("bk");
      const backup = pendingBackup(cur, carrier.target.id, backupId, at, by.actor, { live: false, message: `made to move the server to host ${dest.name}` });
      const timeoutMs = o.timeoutSeconds ? o.timeoutSeconds * 1000 : (this.deps.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS);
      const op: DataOp = {
        kind: "transfer",
        backupId,
        requestedAt: at,
        deadlineAt: at + timeoutMs,
        live: false,
        location: carrier.from,
        key: backup.key,
        actor: by.actor,
        transfer: { sourceHost: cur.hostId, targetHost: dest.id, targetId: carrier.target.id, targetLocation: carrier.to, stage: "backup", keepSourceHours: o.keepSourceHours ?? 0 },
      };
      try {
        await store.commit([
          { op: "server.lifecycle", id: cur.id, lifecycle: { ...cur.lifecycle, dataOp: op }, expectVersion: cur.version },
          { op: "backup.insert", backup },
          ledger.op({
            type: "server.transfer_requested",
            project: cur.project,
            serverId: cur.id,
            hostId: cur.hostId,
            actor: by.actor,
            correlationId: backupId,
            message: `move to host ${dest.name} through backup target "${carrier.target.name}" (backup ${backupId}): the server stops, its data is archived and verified on arrival, and it starts on ${dest.name} if it should run; the copy here is removed ${o.keepSourceHours ? `${o.keepSourceHours} h after that` : "once it runs there"}`,
            payload: { from: cur.hostId, to: dest.id, target: carrier.target.id },
          }),
        ]);
      } catch (err) {
        if (err instanceof ConflictError && attempt < WRITE_ATTEMPTS) continue;
        throw err;
      }
      await this.deps.reconciler.reconcileNow(cur.id, `transfer by ${by.name}`);
      return { server: await this.reload(cur.id), backupId };
    }
  }

  /**
   * CloneServer: a new server in the source's project with its spec (the
   * name, host and desired state asked for; host ports that clash on the
   * clone's host moved to free ones) whose first data operation restores a
   * backup of the source: `fromBackup`, or one made now (the source stops
   * for it and starts again, as any backup).
   */
  async clone(by: Mover, asked: ServerRecord, o: CloneOptions): Promise<{ server: ServerRecord; backupId: string }> {
    const { store, ledger } = this.deps;
    const src = await this.settled(asked, "clone");
    if (src.lifecycle.purge) throw new PreconditionError(`server "${src.name}" is being purged; it cannot be cloned`);
    if (src.deletedAt !== null) throw new PreconditionError(`server "${src.name}" is deleted; restore it first with ServerService.RestoreServer, or clone one of its backups into a server that exists`);
    if (await store.findServerByName(src.project, o.name)) throw new ServerNameTakenError(src.project, o.name);
    const host = o.host?.trim() ? await this.schedulableHost(o.host, "clone") : await this.schedulableHost(src.hostId, "clone");
    const ports = await this.freePortsOn(host.id, src.spec.ports);
    const at = this.now();
    const id = newId("srv");
    let backupId: string;
    let location: BackupLocationRecord;
    let sourceOps: WriteOp[] = [];
    let known: BackupRecord | undefined;
    if (o.fromBackup?.trim()) {
      const b = await store.getBackup(o.fromBackup.trim());
      if (!b || b.project !== src.project) throw new NotFoundError("backup", o.fromBackup, `list the source's backups with BackupService.ListBackups server=${src.name}`);
      if (b.serverId !== src.id) throw new PreconditionError(`backup ${b.id} is of server "${b.serverName}", not of "${src.name}"; clone "${b.serverName}" or pick a backup of "${src.name}"`);
      if (b.state !== "succeeded") throw new PreconditionError(`backup ${b.id} is ${b.state}; only a succeeded backup can be cloned`);
      const target = await store.getBackupTarget(b.targetId);
      if (!target) throw new PreconditionError(`backup ${b.id}'s target is gone`);
      if (target.config.kind === "directory" && !target.config.shared && b.hostId !== host.id) {
        throw new PreconditionError(`backup ${b.id} is in host ${b.hostId}'s own directory ${target.config.path} (target "${target.name}" is not shared): clone it onto that host, or use a backup in S3 or a shared directory`);
      }
      location = await backupLocationOn(store, target, host.id);
      backupId = b.id;
      known = b;
    } else {
      requireDataOpAllowed(src, "clone", (h) => this.deps.presence.isConnected(h));
      const carrier = await this.carrier(o.target ?? "", src.hostId, host.id);
      location = carrier.to;
      backupId = newId("bk");
      const backup = pendingBackup(src, carrier.target.id, backupId, at, by.actor, { live: false, message: `made to clone the server as "${o.name}"` });
      const op: DataOp = { kind: "backup", backupId, requestedAt: at, deadlineAt: at + (this.deps.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS), live: false, location: carrier.from, key: backup.key, actor: by.actor };
      sourceOps = [
        { op: "server.lifecycle", id: src.id, lifecycle: { ...src.lifecycle, dataOp: op }, expectVersion: src.version },
        { op: "backup.insert", backup },
        ledger.op({ type: "backup.requested", project: src.project, serverId: src.id, hostId: src.hostId, actor: by.actor, correlationId: backupId, message: `backup ${backupId} to target "${carrier.target.name}" to clone the server as "${o.name}" (the server stops for the copy and starts again if it should run)` }),
      ];
    }
    const desired = o.desiredState || DesiredState.STOPPED;
    const spec = { ...src.spec, name: o.name, hostId: host.id, ports, desiredState: desired };
    const restore: DataOp = {
      kind: "restore",
      backupId,
      requestedAt: at,
      deadlineAt: at + (this.deps.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS),
      live: false,
      location,
      key: known?.key ?? backupKey(src.id, backupId),
      ...(known ? { sha256: known.sha256, rawBytes: known.rawBytes } : { awaitBackup: true }),
      fresh: true,
      actor: by.actor,
    };
    const rec: ServerRecord = {
      id,
      project: src.project,
      name: o.name,
      hostId: host.id,
      generation: 1,
      spec,
      status: { ...initialStatus(), phase: Phase.PENDING, reason: "Cloning", message: `a copy of "${src.name}": waiting for its data` },
      dataInitialized: false,
      lifecycle: { dataOp: restore, createPending: true },
      createdAt: at,
      updatedAt: at,
      deletedAt: null,
      version: 1,
    };
    const repicked = src.spec.ports.map((p, i) => (p.hostPort !== ports[i]!.hostPort ? `${p.hostPort}→${ports[i]!.hostPort}` : "")).filter(Boolean);
    await store.commit([
      ...sourceOps,
      { op: "server.insert", server: rec },
      ledger.op({
        type: "server.cloned",
        project: src.project,
        serverId: id,
        hostId: host.id,
        actor: by.actor,
        correlationId: backupId,
        message: `server ${o.name} created on host ${host.name} as a copy of "${src.name}" from ${known ? `backup ${backupId}` : `a backup made now (${backupId})`}${repicked.length ? `; host ports moved: ${repicked.join(", ")}` : ""}`,
        payload: { source: src.id, backupId },
      }),
    ]);
    if (sourceOps.length > 0) await this.deps.reconciler.reconcileNow(src.id, `backup for a clone by ${by.name}`);
    await this.deps.reconciler.reconcileNow(id, `cloned by ${by.name}`);
    return { server: await this.reload(id), backupId };
  }

  /** The server once a data command that may just have finished is folded in (withDataOpSettled). */
  private settled(s: ServerRecord, what: string): Promise<ServerRecord> {
    return withDataOpSettled(s, this.deps, what);
  }

  private async reload(id: string): Promise<ServerRecord> {
    const s = await this.deps.store.getServer(id);
    if (!s) throw new NotFoundError("server", id, "it was purged meanwhile; list servers with ServerService.ListServers");
    return s;
  }

  /** A host new data may go to: known, not removed, connected, not cordoned. */
  private async schedulableHost(idOrName: string, what: string): Promise<HostRecord> {
    if (!idOrName.trim()) throw new InvalidArgumentError("host", "required: a host id or name (HostService.ListHosts)");
    const h = await loadHost(this.deps.store, idOrName.trim());
    if (h.removedAt !== null) throw new PreconditionError(`host ${h.name} was removed; choose another host (HostService.ListHosts)`);
    if (!this.deps.presence.isConnected(h.id)) throw new PreconditionError(`host ${h.name} is offline; a ${what} needs its agent: choose a connected host, or retry once it is back`);
    requireSchedulable(h);
    return h;
  }

  /**
   * The backup target the data travels through from `fromHost` to `toHost`
   * (the same host for a clone onto its source's host): the one named, or
   * the first that both reach (S3, a shared directory; a host's own
   * directory only when both are the same host).
   */
  private async carrier(named: string, fromHost: string, toHost: string): Promise<{ target: BackupTargetRecord; from: BackupLocationRecord; to: BackupLocationRecord }> {
    const { store } = this.deps;
    const reach = async (t: BackupTargetRecord) => {
      if (t.config.kind === "directory" && !t.config.shared && fromHost !== toHost) {
        throw new PreconditionError(`backup target "${t.name}" is a directory of each host's own (${t.config.path}, not shared): host ${toHost} cannot read what host ${fromHost} writes there; use an S3 target or a directory every host mounts (CreateBackupTarget with shared)`);
      }
      return { target: t, from: await backupLocationOn(store, t, fromHost), to: await backupLocationOn(store, t, toHost) };
    };
    if (named.trim()) {
      const key = named.trim();
      const t = (await store.getBackupTarget(key)) ?? (await store.findBackupTargetByName(key));
      if (!t) throw new NotFoundError("backup target", key, "list targets with BackupService.ListBackupTargets");
      return reach(t);
    }
    const targets = await store.listBackupTargets();
    const why: string[] = [];
    for (const t of targets) {
      try {
        return await reach(t);
      } catch (err) {
        if (!(err instanceof PreconditionError)) throw err;
        why.push(`"${t.name}": ${err.message}`);
      }
    }
    throw new PreconditionError(
      targets.length === 0
        ? "the data travels through a backup target, and there is none: create an S3 target, or a directory every host mounts (BackupService.CreateBackupTarget with shared), then retry"
        : `no backup target carries data from host ${fromHost} to host ${toHost}: ${why.join("; ")}`,
    );
  }

  /** `ports` with every host port taken on `hostId` moved to the nearest free one. */
  private async freePortsOn(hostId: string, ports: readonly PortMapping[]): Promise<PortMapping[]> {
    if (ports.length === 0) return [];
    const moved = repickPorts(ports, await loadPortOwners(this.deps.store, hostId, ""));
    if (!moved) throw new PreconditionError(`host ${hostId} has no free host port left for some of the server's ports; choose another host`);
    return moved;
  }
}
