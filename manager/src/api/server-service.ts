import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  CreateServerResponseSchema,
  DesiredState,
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
import { actorOf, callerOf, canSee, projectFor, requireRole, type Caller } from "../auth/caller.js";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import { describeConflicts, findPortConflicts, suggestFreePorts } from "../domain/port-conflicts.js";
import { initialStatus, type ServerRecord, type Store } from "../store/store.js";
import { serverToProto } from "./convert.js";
import { requireId, validateSpec } from "./validate.js";

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

  /**
   * Finds a server by id, or by name within the caller's project. A server of
   * another project answers NotFound, exactly like one that does not exist.
   */
  function find(caller: Caller, idOrName: string): ServerRecord {
    const key = requireId(idOrName);
    const s = store.getServer(key) ?? (caller.project !== null ? store.findServerByName(caller.project, key) : findByNameAnyProject(key));
    if (!s || !canSee(caller, s.project)) throw new NotFoundError("server", key, "list servers with ServerService.ListServers");
    return s;
  }

  /** For all-projects admins a bare name must be unambiguous. */
  function findByNameAnyProject(name: string): ServerRecord | undefined {
    const matches = store.listServers({ includeDeleted: true }).filter((s) => s.name === name);
    if (matches.length > 1) {
      throw new InvalidArgumentError("id", `name "${name}" exists in several projects (${matches.map((m) => m.project).join(", ")}); use the server id`);
    }
    return matches[0];
  }

  function pickHost(spec: ServerSpec): string {
    const counts = store.countServersByHost();
    if (spec.hostId) {
      const h = store.getHost(spec.hostId);
      if (!h || h.removedAt !== null) throw new NotFoundError("host", spec.hostId, "list hosts with HostService.ListHosts");
      return h.id;
    }
    const candidates = hub
      .connectedHostIds()
      .filter((id) => findPortConflicts(spec.ports, othersOnHost(id, "")).length === 0)
      .sort((a, b) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0) || a.localeCompare(b));
    if (candidates.length === 0) {
      if (hub.connectedHostIds().length === 0) {
        throw new PreconditionError("no host is connected; enroll an agent (HostService.CreateEnrollmentToken) or set spec.host_id");
      }
      // Name the conflicts on the least-loaded host, with free ports to try instead.
      const best = hub.connectedHostIds().sort((a, b) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0))[0]!;
      checkPorts(best, spec, "");
      throw new PreconditionError("no connected host has the requested ports free; choose other host ports");
    }
    return candidates[0]!;
  }

  function othersOnHost(hostId: string, exceptId: string) {
    return store
      .listServers({ hostId })
      .filter((s) => s.id !== exceptId)
      .map((s) => ({ name: s.name, ports: s.spec.ports }));
  }

  function checkPorts(hostId: string, spec: ServerSpec, exceptId: string): void {
    const others = othersOnHost(hostId, exceptId);
    const conflicts = findPortConflicts(spec.ports, others);
    if (conflicts.length > 0) {
      throw new PreconditionError(`port conflict on host ${hostId}: ${describeConflicts(conflicts, suggestFreePorts(conflicts, others, spec.ports))}`);
    }
  }

  /** Records an operator's new desired state and wakes the reconciler. */
  function setDesired(ctx: HandlerContext, idOrName: string, desired: DesiredState, type: string): ServerRecord {
    const caller = callerOf(ctx);
    requireRole(caller, "operator", type.replace("server.", "").replace("_requested", ""));
    const s = find(caller, idOrName);
    const actor = actorOf(caller);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it first with ServerService.RestoreServer`);
    if (desired !== DesiredState.STOPPED) checkPorts(s.hostId, s.spec, s.id);
    const at = now();
    const changed = s.spec.desiredState !== desired;
    const spec = { ...s.spec, desiredState: desired };
    const generation = changed ? s.generation + 1 : s.generation;
    store.transaction(() => {
      store.updateServerSpec({ id: s.id, spec, generation, updatedAt: at, deletedAt: null, hostId: s.hostId });
      ledger.append({ type, project: s.project, serverId: s.id, hostId: s.hostId, actor, message: `desired state ${DesiredState[desired].toLowerCase()}` });
    });
    reconciler.reconcile(s.id, `${type} by ${caller.name}`);
    return store.getServer(s.id)!;
  }

  return {
    createServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateServer");
      const actor = actorOf(caller);
      const spec = validateSpec(req.spec);
      const project = projectFor(caller, req.project);
      if (store.findServerByName(project, spec.name)) {
        throw new AlreadyExistsError(`a server named "${spec.name}" already exists in project "${project}"; pick another name or update it`);
      }
      const hostId = pickHost(spec);
      checkPorts(hostId, spec, "");
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
        createdAt: at,
        updatedAt: at,
        deletedAt: null,
      };
      store.transaction(() => {
        store.insertServer(rec);
        ledger.append({ type: "server.created", project, serverId: rec.id, hostId, actor, message: `server ${rec.name} created on ${hostId}` });
      });
      reconciler.reconcile(rec.id, `created by ${caller.name}`);
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
      const rows = store
        .listServers({ ...(project !== undefined ? { project } : {}), hostId: req.hostId, includeDeleted: req.showDeleted, before, limit: limit + 1 })
        .filter((s) => req.phases.length === 0 || req.phases.includes(s.status.phase));
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const nextPageToken = rows.length > limit && last ? Buffer.from(`${last.createdAt}:${last.id}`).toString("base64url") : "";
      return create(ListServersResponseSchema, { servers: page.map(serverToProto), nextPageToken });
    },

    startServer(req, ctx) {
      return create(StartServerResponseSchema, { server: serverToProto(setDesired(ctx, req.id, DesiredState.RUNNING, "server.start_requested")) });
    },

    stopServer(req, ctx) {
      if (req.timeoutSeconds > 3600) throw new InvalidArgumentError("timeout_seconds", "at most 3600");
      return create(StopServerResponseSchema, { server: serverToProto(setDesired(ctx, req.id, DesiredState.STOPPED, "server.stop_requested")) });
    },

    pauseServer(req, ctx) {
      return create(PauseServerResponseSchema, { server: serverToProto(setDesired(ctx, req.id, DesiredState.PAUSED, "server.pause_requested")) });
    },

    resumeServer(req, ctx) {
      return create(ResumeServerResponseSchema, { server: serverToProto(setDesired(ctx, req.id, DesiredState.RUNNING, "server.resume_requested")) });
    },
  };
}
