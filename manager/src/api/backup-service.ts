/**
 * BackupService: backup targets, backups of servers' data directories, and
 * restores (docs/data.md). A backup or restore is a data operation on the
 * server (Lifecycle.dataOp): this service records the request, and the
 * reconciler stops the container when it must, has the agent copy, and
 * starts it again; the agent's results end it (reconcile/plan.ts,
 * api/agent-service.ts).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  BackupSchema,
  BackupService,
  BackupState,
  BackupTargetSchema,
  CreateBackupResponseSchema,
  CreateBackupTargetResponseSchema,
  DeleteBackupResponseSchema,
  DeleteBackupTargetResponseSchema,
  GetBackupResponseSchema,
  ListBackupTargetsResponseSchema,
  ListBackupsResponseSchema,
  LockBackupResponseSchema,
  RestoreBackupResponseSchema,
  type Backup,
  type BackupTarget,
} from "@berth/proto/berth/v1/backup_pb.js";
import { posix } from "node:path";
import { actorOf, callerOf, canSee, projectFor, requireRole, type Caller } from "../auth/caller.js";
import type { HostPresence } from "../cluster/presence.js";
import type { BackupRecord, BackupState as StoredState, BackupTargetRecord, DataOp, ServerRecord } from "../domain/records.js";
import { AlreadyExistsError, ConflictError, InvalidArgumentError, NotFoundError, PreconditionError, WRITE_ATTEMPTS } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";
import { backupTargetContext, type SecretBox } from "../store/secrets.js";
import { loadVisibleServer } from "./find-server.js";
import { serverToProto } from "./convert.js";
import { pageTokenAfter, positionOfPageToken } from "./page-token.js";
import { backupLocationOn, BackupRemoval } from "./backup-removal.js";
import { backupKey, pendingBackup, requireDataOpAllowed, withDataOpSettled } from "../backups/pending.js";

export interface BackupServiceDeps {
  store: Store;
  hub: AgentHub;
  presence?: HostPresence;
  ledger: Ledger;
  reconciler: Reconciler;
  now?: () => number;
  /** A backup's or restore's deadline when the request sets none (default 6 h). */
  defaultTimeoutMs?: number;
  /** Seals S3 targets' secret keys (the manager's secret key). */
  secrets?: SecretBox;
}

export const DEFAULT_BACKUP_TIMEOUT_MS = 6 * 3600_000;
const MAX_PAGE = 1000;

const STATE_TO_PROTO: Record<StoredState, BackupState> = {
  pending: BackupState.PENDING,
  running: BackupState.RUNNING,
  succeeded: BackupState.SUCCEEDED,
  failed: BackupState.FAILED,
  deleting: BackupState.DELETING,
};
const STATE_FROM_PROTO = new Map<BackupState, StoredState>(Object.entries(STATE_TO_PROTO).map(([k, v]) => [v, k as StoredState]));

export function backupToProto(b: BackupRecord): Backup {
  return create(BackupSchema, {
    id: b.id,
    serverId: b.serverId,
    serverName: b.serverName,
    project: b.project,
    hostId: b.hostId,
    targetId: b.targetId,
    key: b.key,
    state: STATE_TO_PROTO[b.state],
    reason: b.reason,
    message: b.message,
    live: b.live,
    compression: b.compression,
    archiveBytes: BigInt(b.archiveBytes),
    rawBytes: BigInt(b.rawBytes),
    files: BigInt(b.files),
    sha256: b.sha256,
    bytesDone: BigInt(b.bytesDone),
    bytesTotal: BigInt(b.bytesTotal),
    locked: b.locked,
    createdBy: b.createdBy,
    createTime: timestampFromMs(b.createdAt),
    ...(b.startedAt !== null ? { startTime: timestampFromMs(b.startedAt) } : {}),
    ...(b.finishedAt !== null ? { finishTime: timestampFromMs(b.finishedAt) } : {}),
  });
}

/** A target as the API shows it: never its secret. */
export function targetToProto(t: BackupTargetRecord): BackupTarget {
  const c = t.config;
  return create(BackupTargetSchema, {
    id: t.id,
    name: t.name,
    kind:
      c.kind === "directory"
        ? { case: "directory", value: { path: c.path, shared: c.shared } }
        : {
            case: "s3",
            value: { endpoint: c.endpoint, bucket: c.bucket, prefix: c.prefix, region: c.region, pathStyle: c.pathStyle, accessKeyId: c.accessKeyId, secretAccessKey: t.sealedSecret ? "********" : "" },
          },
    createTime: timestampFromMs(t.createdAt),
    createdBy: t.createdBy,
  });
}

export function createBackupService(deps: BackupServiceDeps): ServiceImpl<typeof BackupService> {
  const { store, hub, ledger, reconciler } = deps;
  const presence = deps.presence ?? hub;
  const now = deps.now ?? Date.now;
  const defaultTimeoutMs = deps.defaultTimeoutMs ?? DEFAULT_BACKUP_TIMEOUT_MS;
  const removal = new BackupRemoval({ store, hub, presence, ledger, now });
  const locationOn = (t: BackupTargetRecord, hostId: string) => backupLocationOn(store, t, hostId);

  async function findTarget(idOrName: string): Promise<BackupTargetRecord> {
    const key = idOrName.trim();
    const t = (await store.getBackupTarget(key)) ?? (await store.findBackupTargetByName(key));
    if (!t) throw new NotFoundError("backup target", key, "list targets with BackupService.ListBackupTargets, or create one with CreateBackupTarget");
    return t;
  }

  async function findBackup(caller: Caller, id: string): Promise<BackupRecord> {
    const b = await store.getBackup(id.trim());
    if (!b || !canSee(caller, b.project)) throw new NotFoundError("backup", id, "list backups with BackupService.ListBackups");
    return b;
  }

  /**
   * Records a data operation on the server named `idOrName` with `more` (the
   * backup row, events) in one batch on the version read; a concurrent write
   * reads and decides again (as ServerService's actions do).
   */
  async function startDataOp(caller: Caller, idOrName: string, what: string, decide: (s: ServerRecord, at: number) => Promise<{ op: DataOp; more: WriteOp[] }>): Promise<ServerRecord> {
    let key = idOrName;
    for (let attempt = 1; ; attempt++) {
      const s = await withDataOpSettled(await loadVisibleServer(store, caller, key), { reconciler, store }, what);
      key = s.id;
      requireDataOpAllowed(s, what, (h) => presence.isConnected(h));
      const at = now();
      const { op, more } = await decide(s, at);
      try {
        await store.commit([{ op: "server.lifecycle", id: s.id, lifecycle: { ...s.lifecycle, dataOp: op }, expectVersion: s.version }, ...more]);
      } catch (err) {
        if (err instanceof ConflictError && attempt < WRITE_ATTEMPTS) continue;
        throw err;
      }
      await reconciler.reconcileNow(s.id, `${what} by ${caller.name}`);
      return (await store.getServer(s.id)) ?? s;
    }
  }

  function timeoutMs(seconds: number): number {
    return seconds > 0 ? seconds * 1000 : defaultTimeoutMs;
  }

  return {
    async createBackupTarget(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "CreateBackupTarget");
      if (await store.findBackupTargetByName(req.name)) throw new AlreadyExistsError(`backup target "${req.name}" already exists; choose another name or delete it first`);
      const id = newId("bkt");
      const at = now();
      let config: BackupTargetRecord["config"];
      let sealed = "";
      if (req.kind.case === "directory") {
        const path = req.kind.value.path;
        const normal = posix.normalize(path).replace(/\/+$/, "");
        if (path.split("/").includes("..")) throw new InvalidArgumentError("directory.path", "must not contain '..'");
        if (normal === "" || normal === "/") throw new InvalidArgumentError("directory.path", "must be a directory below /, e.g. /var/backups/berth");
        config = { kind: "directory", path: normal, shared: req.kind.value.shared };
      } else {
        if (req.kind.case !== "s3") throw new InvalidArgumentError("kind", "set directory or s3");
        const v = req.kind.value;
        if (v.endpoint) {
          let u: URL;
          try {
            u = new URL(v.endpoint);
          } catch {
            throw new InvalidArgumentError("s3.endpoint", `"${v.endpoint}" is not a URL; e.g. https://s3.eu-central-1.amazonaws.com or http://minio.internal:9000 (empty: AWS S3 of the region)`);
          }
          if (u.protocol !== "https:" && u.protocol !== "http:") throw new InvalidArgumentError("s3.endpoint", "must be an http:// or https:// URL");
          if (u.username || u.password) throw new InvalidArgumentError("s3.endpoint", "must not carry credentials; use access_key_id and secret_access_key");
        }
        if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(v.bucket)) throw new InvalidArgumentError("s3.bucket", "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit");
        if (v.prefix.split("/").includes("..") || v.prefix.startsWith("/")) throw new InvalidArgumentError("s3.prefix", "must not start with '/' or contain '..' (e.g. berth/)");
        if (!v.accessKeyId || !v.secretAccessKey) throw new InvalidArgumentError(v.accessKeyId ? "s3.secret_access_key" : "s3.access_key_id", "required: the target's credentials");
        if (!deps.secrets) throw new PreconditionError("this manager has no secret key to seal the target's secret access key with (--secret-key)");
        config = { kind: "s3", endpoint: v.endpoint.replace(/\/+$/, ""), bucket: v.bucket, prefix: v.prefix && !v.prefix.endsWith("/") ? `${v.prefix}/` : v.prefix, region: v.region, pathStyle: v.pathStyle, accessKeyId: v.accessKeyId };
        sealed = deps.secrets.seal(v.secretAccessKey, backupTargetContext(id));
      }
      const target: BackupTargetRecord = { id, name: req.name, config, sealedSecret: sealed, createdAt: at, createdBy: actorOf(caller) };
      const where = config.kind === "directory" ? `directory ${config.path}${config.shared ? " (shared by every host)" : ""}` : `S3 bucket ${config.bucket}${config.prefix ? ` prefix ${config.prefix}` : ""} at ${config.endpoint || `AWS S3 (${config.region || "us-east-1"})`}`;
      await store.commit([{ op: "backupTarget.insert", target }, ledger.op({ type: "backup.target_created", actor: actorOf(caller), message: `backup target "${req.name}": ${where}` })]);
      return create(CreateBackupTargetResponseSchema, { target: targetToProto(target) });
    },

    async listBackupTargets(_req, ctx) {
      callerOf(ctx);
      return create(ListBackupTargetsResponseSchema, { targets: (await store.listBackupTargets()).map(targetToProto) });
    },

    async deleteBackupTarget(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "DeleteBackupTarget");
      const t = await findTarget(req.id);
      const used = await store.countBackupsOnTarget(t.id);
      if (used > 0) throw new PreconditionError(`backup target "${t.name}" holds ${used} backup(s); delete them first (BackupService.ListBackups, DeleteBackup)`);
      await store.commit([{ op: "backupTarget.delete", id: t.id }, ledger.op({ type: "backup.target_deleted", actor: actorOf(caller), message: `backup target "${t.name}" deleted` })]);
      return create(DeleteBackupTargetResponseSchema, {});
    },

    async createBackup(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateBackup");
      const target = await findTarget(req.target);
      let backupId = "";
      await startDataOp(caller, req.server, "backup", async (s, at) => {
        const location = await locationOn(target, s.hostId);
        backupId = newId("bk");
        const key = backupKey(s.id, backupId);
        const actor = actorOf(caller);
        const op: DataOp = { kind: "backup", backupId, requestedAt: at, deadlineAt: at + timeoutMs(req.timeoutSeconds), live: req.live, location, key, ignore: req.ignore.length > 0 ? [...req.ignore] : [...(s.spec.backupPolicy?.ignore ?? [])], actor };
        const backup = pendingBackup(s, target.id, backupId, at, actor, { live: req.live, message: req.live ? "a live copy: files the server writes meanwhile may be caught half-written" : "" });
        return {
          op,
          more: [
            { op: "backup.insert", backup },
            ledger.op({
              type: "backup.requested",
              project: s.project,
              serverId: s.id,
              hostId: s.hostId,
              actor,
              correlationId: backupId,
              message: `backup ${backupId} to target "${target.name}" (${req.live ? "live copy, the server keeps running" : "the server stops for the copy and starts again if it should run"})`,
            }),
          ],
        };
      });
      const b = await store.getBackup(backupId);
      if (!b) throw new NotFoundError("backup", backupId, "it was removed meanwhile");
      return create(CreateBackupResponseSchema, { backup: backupToProto(b) });
    },

    async getBackup(req, ctx) {
      return create(GetBackupResponseSchema, { backup: backupToProto(await findBackup(callerOf(ctx), req.id)) });
    },

    async listBackups(req, ctx) {
      const caller = callerOf(ctx);
      const limit = Math.min(req.pageSize || 100, MAX_PAGE);
      const before = positionOfPageToken(req.pageToken, "bk", "ListBackups");
      const project = caller.project ?? (req.project.trim() || undefined);
      if (caller.project !== null) projectFor(caller, req.project);
      let serverId: string | undefined;
      if (req.server.trim()) {
        // A purged server's backups are still listed by its id.
        const byId = req.server.trim();
        serverId = /^srv_[a-z2-7]+$/.test(byId) ? byId : (await loadVisibleServer(store, caller, byId)).id;
      }
      const states = req.states.map((s) => STATE_FROM_PROTO.get(s)).filter((s): s is StoredState => s !== undefined);
      const rows = await store.listBackups({
        ...(serverId ? { serverId } : {}),
        ...(project !== undefined ? { project } : {}),
        ...(states.length > 0 ? { states } : {}),
        ...(before ? { before } : {}),
        limit: limit + 1,
      });
      const page = rows.slice(0, limit);
      return create(ListBackupsResponseSchema, { backups: page.map(backupToProto), nextPageToken: pageTokenAfter(page.at(-1), rows.length > limit) });
    },

    async lockBackup(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "LockBackup");
      const b = await findBackup(caller, req.id);
      if (b.locked !== req.locked) {
        await store.commit([
          { op: "backup.update", id: b.id, set: { locked: req.locked } },
          ledger.op({ type: req.locked ? "backup.locked" : "backup.unlocked", project: b.project, serverId: b.serverId, actor: actorOf(caller), correlationId: b.id, message: `backup ${b.id} ${req.locked ? "locked: never deleted until unlocked" : "unlocked"}` }),
        ]);
      }
      return create(LockBackupResponseSchema, { backup: backupToProto(await findBackup(caller, b.id)) });
    },

    async deleteBackup(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "DeleteBackup");
      const b = await findBackup(caller, req.id);
      await removal.remove(b, actorOf(caller));
      return create(DeleteBackupResponseSchema, { backup: backupToProto({ ...b, state: "deleting" }) });
    },

    async restoreBackup(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "RestoreBackup");
      const b = await findBackup(caller, req.backupId);
      if (b.state !== "succeeded") throw new PreconditionError(`backup ${b.id} is ${b.state}; only a succeeded backup can be restored`);
      const target = await findTarget(b.targetId);
      const server = await startDataOp(caller, req.server, "restore", async (s, at) => {
        if (b.serverId !== s.id) {
          throw new PreconditionError(`backup ${b.id} is of server "${b.serverName}" (${b.serverId}), not of "${s.name}"; restore a backup of "${s.name}" (ListBackups with server=${s.name})`);
        }
        if (target.config.kind === "directory" && !target.config.shared && b.hostId !== s.hostId) {
          throw new PreconditionError(`backup ${b.id} is on host ${b.hostId}'s own directory ${target.config.path} (target "${target.name}" is not shared), and the server now runs on ${s.hostId}`);
        }
        const location = await locationOn(target, s.hostId);
        const actor = actorOf(caller);
        return {
          op: { kind: "restore", backupId: b.id, requestedAt: at, deadlineAt: at + defaultTimeoutMs, live: false, location, key: b.key, sha256: b.sha256, rawBytes: b.rawBytes, keepPrevious: req.keepPrevious, actor },
          more: [
            ledger.op({
              type: "backup.restore_requested",
              project: s.project,
              serverId: s.id,
              hostId: s.hostId,
              actor,
              correlationId: b.id,
              message: `restore of backup ${b.id} (made ${new Date(b.createdAt).toISOString()}): the server stops, its data is replaced (the current data is kept as a safety copy${req.keepPrevious ? "" : " until it runs again"}), and it starts again if it should run`,
            }),
          ],
        };
      });
      return create(RestoreBackupResponseSchema, { backup: backupToProto(b), server: serverToProto(server) });
    },
  };
}

