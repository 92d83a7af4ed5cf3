import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  CreateServerResponseSchema,
  DeleteServerResponseSchema,
  DesiredState,
  PurgeServerResponseSchema,
  RebuildServerResponseSchema,
  RestartServerResponseSchema,
  RestoreServerResponseSchema,
  UpdateServerResponseSchema,
  GetServerResponseSchema,
  ListServersResponseSchema,
  Phase,
  ServerService,
  StartServerResponseSchema,
  StopServerResponseSchema,
  PauseServerResponseSchema,
  ResumeServerResponseSchema,
  type ServerSpec,
} from "@berth/proto/berth/v1/server_pb.js";
import { actorOf, callerOf, projectFor, requireRole, type Caller } from "../auth/caller.js";
import { InvalidArgumentError, PreconditionError, ServerNameTakenError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import { findPortConflicts } from "../domain/port-conflicts.js";
import { type Store } from "../store/store.js";
import { initialStatus, type Lifecycle, type ServerRecord } from "../domain/records.js";
import { serverToProto } from "./convert.js";
import { mergeSecretEnv } from "../store/secrets.js";
import { checkPortsFree, portOwnersOnHost } from "./port-check.js";
import { normalizeSpec } from "./validate.js";
import { createWatchServers } from "./watch-servers.js";
import { createTailLogs } from "./logs.js";
import { findHost, findVisibleServer } from "./find-server.js";

export interface ServerServiceDeps {
  store: Store;
  hub: AgentHub;
  ledger: Ledger;
  reconciler: Reconciler;
  now?: () => number;
}

const MAX_PAGE = 1000;

export function createServerService(deps: ServerServiceDeps): Partial<ServiceImpl<typeof ServerService>> {
  const { store, hub, ledger, reconciler } = deps;
  const now = deps.now ?? Date.now;

  /** The server `idOrName` names for this caller (find-server.ts: the one look-up every API call uses). */
  function find(caller: Caller, idOrName: string): ServerRecord {
    return findVisibleServer(store, caller, idOrName);
  }

  function pickHost(spec: ServerSpec, project: string): string {
    const counts = store.countServersByHost();
    if (spec.hostId) {
      return findHost(store, spec.hostId).id;
    }
    const candidates = hub
      .connectedHostIds()
      .filter((id) => spec.ports.length === 0 || findPortConflicts(spec.ports, portOwnersOnHost(store, id, "")).length === 0)
      .sort((a, b) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0) || a.localeCompare(b));
    if (candidates.length === 0) {
      if (hub.connectedHostIds().length === 0) {
        throw new PreconditionError("no host is connected; enroll an agent (HostService.CreateEnrollmentToken) or set spec.host_id");
      }
      // Name the conflicts on the least-loaded host, with free ports to try instead.
      const best = hub.connectedHostIds().sort((a, b) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0))[0]!;
      checkPorts(best, spec, "", project);
      throw new PreconditionError("no connected host has the requested ports free; choose other host ports");
    }
    return candidates[0]!;
  }

  /** Refuses ports another server on the host publishes; servers outside `project` are not named. */
  function checkPorts(hostId: string, spec: ServerSpec, exceptId: string, project: string): void {
    checkPortsFree(store, hostId, spec.ports, { exceptId, project });
  }

  /**
   * Applies one operator action to a server: checks role and visibility, lets
   * `change` compute the new record (throwing to refuse), writes it with its
   * ledger event in one transaction, and resolves with the record after the
   * reconcile it queues has run (through the work queue like every other
   * trigger, so a failed reconcile is retried). With `expectedVersion`, the
   * write happens only if the server still has that version (ConflictError).
   */
  async function act(
    ctx: HandlerContext,
    idOrName: string,
    action: string,
    change: (s: ServerRecord, at: number) => { spec?: ServerSpec; lifecycle?: Lifecycle; deletedAt?: number | null; message: string; bumpGeneration?: boolean },
    expectedVersion?: number,
  ): Promise<ServerRecord> {
    const caller = callerOf(ctx);
    const s = find(caller, idOrName);
    const at = now();
    const c = change(s, at);
    const spec = c.spec ?? s.spec;
    const specChanged = c.spec !== undefined && (c.bumpGeneration ?? true);
    store.transaction(() => {
      store.updateServerSpec({
        id: s.id,
        spec,
        generation: specChanged ? s.generation + 1 : s.generation,
        updatedAt: at,
        deletedAt: c.deletedAt !== undefined ? c.deletedAt : s.deletedAt,
        hostId: s.hostId,
      }, expectedVersion);
      if (c.lifecycle) store.updateLifecycle(s.id, c.lifecycle);
      ledger.append({ type: `server.${action}`, project: s.project, serverId: s.id, hostId: s.hostId, actor: actorOf(caller), message: c.message });
    });
    await reconciler.reconcileNow(s.id, `${action} by ${caller.name}`);
    return store.getServer(s.id) ?? s;
  }

  function notDeleted(s: ServerRecord, what: string): void {
    if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged; ${what} is not possible`);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it first with ServerService.RestoreServer`);
  }

  /** Records an operator's new desired state. */
  function setDesired(ctx: HandlerContext, idOrName: string, desired: DesiredState, action: string, lifecycle?: (s: ServerRecord) => Lifecycle): Promise<ServerRecord> {
    requireRole(callerOf(ctx), "operator", action);
    return act(ctx, idOrName, action, (s) => {
      notDeleted(s, action);
      if (desired !== DesiredState.STOPPED) checkPorts(s.hostId, s.spec, s.id, s.project);
      return {
        spec: { ...s.spec, desiredState: desired },
        bumpGeneration: s.spec.desiredState !== desired,
        ...(lifecycle ? { lifecycle: lifecycle(s) } : {}),
        message: `desired state ${DesiredState[desired].toLowerCase()}`,
      };
    });
  }

  /** Start/restart of a server whose container is gone needs its data, unless empty data is allowed. */
  function checkData(s: ServerRecord, allowEmpty: boolean): void {
    const containerGone = !s.status.containerId;
    const data = store.getDataDir(s.hostId, s.id);
    if (containerGone && s.dataInitialized && data && !data.present) {
      if (!allowEmpty) {
        throw new PreconditionError(
          `the data directory of "${s.name}" is gone from its host; purge the server (PurgeServer), or start it with allow_empty_data=true to begin with empty data`,
        );
      }
      store.resetDataInitialized(s.id);
    }
  }

  return {
    watchServers: createWatchServers({ store, ledger }),
    tailLogs: createTailLogs({ store, hub }),

    async createServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateServer");
      const actor = actorOf(caller);
      // The spec was checked before the handler (validateRequests); only the defaults are filled here.
      const spec = mergeSecretEnv(normalizeSpec(req.spec), undefined);
      const project = projectFor(caller, req.project);
      if (store.findServerByName(project, spec.name)) throw new ServerNameTakenError(project, spec.name);
      const hostId = pickHost(spec, project);
      checkPorts(hostId, spec, "", project);
      const at = now();
      const rec: ServerRecord = {
        id: newId("srv"),
        project,
        name: spec.name,
        hostId,
        generation: 1,
        spec: { ...spec, hostId },
        status: { ...initialStatus(), phase: Phase.PENDING, reason: "Created", message: "waiting for the reconciler" },
        dataInitialized: false,
        lifecycle: {},
        createdAt: at,
        updatedAt: at,
        deletedAt: null,
        version: 1,
      };
      store.transaction(() => {
        store.insertServer(rec);
        ledger.append({ type: "server.created", project, serverId: rec.id, hostId, actor, message: `server ${rec.name} created on ${hostId}` });
      });
      await reconciler.reconcileNow(rec.id, `created by ${caller.name}`);
      return create(CreateServerResponseSchema, { server: serverToProto(store.getServer(rec.id)!) });
    },

    getServer(req, ctx) {
      return create(GetServerResponseSchema, { server: serverToProto(find(callerOf(ctx), req.id)) });
    },

    listServers(req, ctx) {
      const caller = callerOf(ctx);
      if (req.pageSize < 0) throw new InvalidArgumentError("page_size", "must not be negative");
      const limit = Math.min(req.pageSize || 100, MAX_PAGE);
      let before: { createdAt: number; id: string } | undefined;
      if (req.pageToken) {
        const m = /^(\d+):(srv_[a-z2-7]+)$/.exec(Buffer.from(req.pageToken, "base64url").toString());
        if (!m) throw new InvalidArgumentError("page_token", "not a token returned by ListServers; omit it to start from the first page");
        before = { createdAt: Number(m[1]), id: m[2]! };
      }
      // An all-projects admin sees every project unless it asks for one.
      const project = caller.project ?? (req.project.trim() || undefined);
      if (caller.project !== null) projectFor(caller, req.project);
      // The phase filter runs in the query, before the page is cut: filtering a cut page
      // answered an empty page without a next token while matching servers existed.
      const phases = [...new Set(req.phases)].map((p) => Phase[p] ?? "UNSPECIFIED");
      const rows = store.listServers({ ...(project !== undefined ? { project } : {}), hostId: req.hostId, includeDeleted: req.showDeleted, phases, before, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const nextPageToken = rows.length > limit && last ? Buffer.from(`${last.createdAt}:${last.id}`).toString("base64url") : "";
      return create(ListServersResponseSchema, { servers: page.map(serverToProto), nextPageToken });
    },

    async startServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "StartServer");
      const s = find(callerOf(ctx), req.id);
      notDeleted(s, "start");
      checkData(s, req.allowEmptyData);
      return create(StartServerResponseSchema, { server: serverToProto(await setDesired(ctx, s.id, DesiredState.RUNNING, "start_requested")) });
    },

    async stopServer(req, ctx) {
      if (req.timeoutSeconds > 3600) throw new InvalidArgumentError("timeout_seconds", "at most 3600");
      const server = await setDesired(ctx, req.id, DesiredState.STOPPED, "stop_requested", (s) => ({
        ...s.lifecycle,
        stopTimeoutSeconds: req.timeoutSeconds || undefined,
      }));
      return create(StopServerResponseSchema, { server: serverToProto(server) });
    },

    async pauseServer(req, ctx) {
      return create(PauseServerResponseSchema, { server: serverToProto(await setDesired(ctx, req.id, DesiredState.PAUSED, "pause_requested")) });
    },

    async resumeServer(req, ctx) {
      const s = find(callerOf(ctx), req.id);
      if (s.spec.desiredState !== DesiredState.PAUSED) throw new PreconditionError(`server "${s.name}" is not paused; use StartServer to start it`);
      return create(ResumeServerResponseSchema, { server: serverToProto(await setDesired(ctx, s.id, DesiredState.RUNNING, "resume_requested")) });
    },

    async restartServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "RestartServer");
      const s = find(callerOf(ctx), req.id);
      notDeleted(s, "restart");
      checkData(s, false);
      // A restart also applies a newer spec: the agent recreates a container whose spec hash differs.
      return create(RestartServerResponseSchema, {
        server: serverToProto(await setDesired(ctx, s.id, DesiredState.RUNNING, "restart_requested", (x) => ({ ...x.lifecycle, restartRequestedAt: now() }))),
      });
    },

    async rebuildServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "RebuildServer");
      const server = await act(ctx, req.id, "rebuild_requested", (s, at) => {
        notDeleted(s, "rebuild");
        checkData(s, false);
        return { lifecycle: { ...s.lifecycle, rebuildRequestedAt: at }, message: "recreate the container from the current spec, keeping data" };
      });
      return create(RebuildServerResponseSchema, { server: serverToProto(server) });
    },

    async updateServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "UpdateServer");
      // Checked before the handler (validateRequests), like CreateServer's.
      const spec = normalizeSpec(req.spec);
      const server = await act(ctx, req.id, "updated", (s, at) => {
        notDeleted(s, "update");
        if (spec.name !== s.name) throw new InvalidArgumentError("spec.name", `renaming is not supported (server is "${s.name}")`);
        if (spec.hostId && spec.hostId !== s.hostId) {
          throw new InvalidArgumentError("spec.host_id", `moving a server to another host is not supported (it is on ${s.hostId}); leave host_id empty`);
        }
        checkPorts(s.hostId, spec, s.id, s.project);
        return {
          // "********" for a secret keeps its stored value (the caller only ever saw the mask).
          spec: { ...mergeSecretEnv(spec, s.spec), hostId: s.hostId },
          ...(req.applyNow ? { lifecycle: { ...s.lifecycle, rebuildRequestedAt: at } } : {}),
          message: req.applyNow ? "spec updated; applying now" : "spec updated; applies at the next restart or rebuild",
        };
      }, req.expectedVersion === undefined ? undefined : Number(req.expectedVersion));
      return create(UpdateServerResponseSchema, { server: serverToProto(server) });
    },

    async deleteServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "DeleteServer");
      const server = await act(ctx, req.id, "deleted", (s, at) => {
        if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged`);
        if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is already deleted`);
        return { deletedAt: at, message: "soft delete: container removed, data and record kept" };
      });
      return create(DeleteServerResponseSchema, { server: serverToProto(server) });
    },

    async restoreServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "RestoreServer");
      const server = await act(ctx, req.id, "restored", (s) => {
        if (s.deletedAt === null) throw new PreconditionError(`server "${s.name}" is not deleted`);
        if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged`);
        if (store.findServerByName(s.project, s.name)?.id !== s.id) {
          throw new PreconditionError(`another server is now named "${s.name}"; purge or rename it first`);
        }
        // A deleted server holds no ports: another may have taken them meanwhile (refused here with free
        // ports to try, rather than by the store's reservation with a bare message).
        checkPorts(s.hostId, s.spec, s.id, s.project);
        return { deletedAt: null, spec: { ...s.spec, desiredState: DesiredState.STOPPED }, message: "restored (stopped); start it to recreate the container" };
      });
      return create(RestoreServerResponseSchema, { server: serverToProto(server) });
    },

    async purgeServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "PurgeServer");
      const s = find(caller, req.id);
      if (req.force && !hub.isConnected(s.hostId)) {
        // The host is away: drop the record now and say what may be left behind.
        reconciler.dropRecord(
          s,
          {
            actor: actorOf(caller),
            reason: "ForcedWhileHostOffline",
            message: `record dropped while host ${s.hostId} is offline; its container${req.removeData ? " and data directory" : ""} may remain there (see orphans)`,
          },
          `purged by ${caller.name} (force)`,
        );
        reconciler.enqueue(s.id, "purged");
        return create(PurgeServerResponseSchema, {});
      }
      await act(ctx, s.id, "purge_requested", (x, at) => ({
        lifecycle: { ...x.lifecycle, purge: { requestedAt: at, removeData: req.removeData } },
        message: req.removeData ? "purge: container, data directory and record" : "purge: container and record; data kept on the host",
      }));
      return create(PurgeServerResponseSchema, {});
    },
  };
}
