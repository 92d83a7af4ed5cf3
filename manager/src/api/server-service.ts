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
  TransferServerResponseSchema,
  CloneServerResponseSchema,
  GetServerResponseSchema,
  ListServersResponseSchema,
  Phase,
  ServerService,
  StartServerResponseSchema,
  StopServerResponseSchema,
  PauseServerResponseSchema,
  ResumeServerResponseSchema,
  SendConsoleCommandResponseSchema,
  GetInstallLogResponseSchema,
  ReinstallServerResponseSchema,
  Protocol,
  ServerSpecSchema,
  type ServerSpec,
  type TemplateRef,
} from "@berth/proto/berth/v1/server_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, CommandSchema, type CommandResult } from "@berth/proto/berth/v1/agent_pb.js";
import { actorOf, callerOf, projectFor, requireRole, type Caller } from "../auth/caller.js";
import { ConflictError, InvalidArgumentError, PreconditionError, ServerNameTakenError, UnavailableError, WRITE_ATTEMPTS } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { HostPresence } from "../cluster/presence.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";
import { initialStatus, type Lifecycle, type ServerRecord } from "../domain/records.js";
import { serverToProto } from "./convert.js";
import { mergeSecretEnv } from "../store/secrets.js";
import { loadPortOwners, requirePortsFree } from "./port-check.js";
import { normalizeSpec, validateSpec } from "./validate.js";
import { markOutdatedTemplates, renderForServer, requireTemplateFieldsEmpty } from "./template-apply.js";
import { HostPortMode } from "@berth/proto/berth/v1/template_pb.js";
import { createWatchServers } from "./watch-servers.js";
import { createExecCommand, createTailLogs, createWatchConsole } from "./logs.js";
import { loadVisibleServer } from "./find-server.js";
import { placeServer, requireRoom } from "../hosts/placement.js";
import { requestOf } from "../hosts/capacity.js";
import type { Server as ServerMessage } from "@berth/proto/berth/v1/server_pb.js";
import { requestFilter, FilterRun } from "../query/cel.js";
import { filterPage } from "../query/filter-page.js";
import { pageTokenAfter, positionOfPageToken } from "./page-token.js";
import { turns } from "../turns.js";
import { ServerMoves } from "../transfers/moves.js";

export interface ServerServiceDeps {
  store: Store;
  hub: AgentHub;
  /** Which hosts are connected, here or to another manager (cluster/presence.ts); default: this manager's streams. */
  presence?: HostPresence;
  ledger: Ledger;
  reconciler: Reconciler;
  now?: () => number;
}

const MAX_PAGE = 1000;
/** How long SendConsoleCommand waits for the agent to have written the line. */
const CONSOLE_ANSWER_MS = 10_000;

/** What an operator action changes in a server record (computed from the record as read). */
interface Change {
  spec?: ServerSpec;
  lifecycle?: Lifecycle;
  deletedAt?: number | null;
  message: string;
  /** A spec change bumps the generation unless this is false. */
  bumpGeneration?: boolean;
  /** Start with allow_empty_data: the server's data directory begins anew. */
  resetDataInitialized?: boolean;
}

export function createServerService(deps: ServerServiceDeps): Partial<ServiceImpl<typeof ServerService>> {
  const { store, hub, ledger, reconciler } = deps;
  const moves = new ServerMoves({ store, ledger, reconciler, presence: deps.presence ?? hub, ...(deps.now ? { now: deps.now } : {}) });
  const presence = deps.presence ?? hub;
  const now = deps.now ?? Date.now;

  /** The server `idOrName` names for this caller (find-server.ts: the one look-up every API call uses). */
  function find(caller: Caller, idOrName: string): Promise<ServerRecord> {
    return loadVisibleServer(store, caller, idOrName);
  }

  /** The host a new server goes to (hosts/placement.ts: connected, not cordoned, ports free, fewest servers). */
  function pickHost(spec: ServerSpec, project: string): Promise<string> {
    return placeServer(store, presence, spec, project);
  }

  /**
   * Refuses ports another server on the host publishes; servers outside `project` are not named.
   * The friendly check, with ports to try instead: the database's port reservations are the backstop.
   */
  async function checkPorts(hostId: string, spec: ServerSpec, exceptId: string, project: string): Promise<void> {
    if (spec.ports.length === 0) return;
    // The message names the host as the operator knows it.
    const hostLabel = (await store.getHost(hostId))?.name || hostId;
    return requirePortsFree(store, hostId, spec.ports, { exceptId, project, hostLabel });
  }

  /** The batch that writes `c` to `s` (read at version `expectVersion`) with its ledger event. */
  function changeOps(s: ServerRecord, c: Change, at: number, expectVersion: number, event: { type: string; actor: string }): WriteOp[] {
    const specChanged = c.spec !== undefined && (c.bumpGeneration ?? true);
    const ops: WriteOp[] = [
      {
        op: "server.spec",
        id: s.id,
        spec: c.spec ?? s.spec,
        generation: specChanged ? s.generation + 1 : s.generation,
        hostId: s.hostId,
        deletedAt: c.deletedAt !== undefined ? c.deletedAt : s.deletedAt,
        updatedAt: at,
        // The batch's first write carries the check; the rest of the batch is atomic with it.
        expectVersion,
      },
    ];
    if (c.lifecycle) ops.push({ op: "server.lifecycle", id: s.id, lifecycle: c.lifecycle });
    if (c.resetDataInitialized) ops.push({ op: "server.resetDataInitialized", id: s.id });
    ops.push(ledger.op({ type: event.type, project: s.project, serverId: s.id, hostId: s.hostId, actor: event.actor, message: c.message }));
    return ops;
  }

  /**
   * Applies one operator action to a server: looks it up for the caller, lets
   * `change` compute the new record from it (throwing to refuse), commits it
   * with its ledger event as one batch conditioned on the version it read,
   * and resolves with the record after the reconcile it queues has run
   * (through the work queue like every other trigger, so a failed reconcile
   * is retried).
   *
   * With the caller's `expectedVersion`, the batch is conditioned on that
   * version instead, and a mismatch answers Aborted (ConflictError). Without
   * one, a record changed between the read and the commit (a reconciler's
   * status write) is read again and `change` decides again, up to
   * WRITE_ATTEMPTS times: nothing the action did not look at is overwritten
   * with what it read.
   */
  async function act(
    ctx: HandlerContext,
    idOrName: string,
    action: string,
    change: (s: ServerRecord, at: number) => Change | Promise<Change>,
    expectedVersion?: number,
  ): Promise<ServerRecord> {
    const caller = callerOf(ctx);
    let key = idOrName;
    for (let attempt = 1; ; attempt++) {
      // In a slot of the turn, like the reconciles this starts: hundreds of calls arriving
      // in one poll (a scripted mass stop) held the loop for 70 ms (docs/benchmarks.md).
      await turns.slot();
      const s = await find(caller, key);
      key = s.id;
      const at = now();
      const c = await change(s, at);
      try {
        await store.commit(changeOps(s, c, at, expectedVersion ?? s.version, { type: `server.${action}`, actor: actorOf(caller) }));
      } catch (err) {
        if (err instanceof ConflictError && expectedVersion === undefined && attempt < WRITE_ATTEMPTS) continue;
        throw err;
      }
      await reconciler.reconcileNow(s.id, `${action} by ${caller.name}`);
      return (await store.getServer(s.id)) ?? s;
    }
  }

  function notDeleted(s: ServerRecord, what: string): void {
    if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged; ${what} is not possible`);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it first with ServerService.RestoreServer`);
  }

  /**
   * Records an operator's new desired state. `check` refuses (throwing) or
   * asks for more before the usual checks, on the same read of the record.
   */
  function setDesired(
    ctx: HandlerContext,
    idOrName: string,
    desired: DesiredState,
    action: string,
    opts: { lifecycle?: (s: ServerRecord) => Lifecycle; check?: (s: ServerRecord) => Promise<Pick<Change, "resetDataInitialized"> | void> | void } = {},
  ): Promise<ServerRecord> {
    requireRole(callerOf(ctx), "operator", action);
    return act(ctx, idOrName, action, async (s) => {
      const more = (await opts.check?.(s)) ?? {};
      notDeleted(s, action);
      if (desired !== DesiredState.STOPPED) await checkPorts(s.hostId, s.spec, s.id, s.project);
      return {
        ...more,
        spec: { ...s.spec, desiredState: desired },
        bumpGeneration: s.spec.desiredState !== desired,
        ...(opts.lifecycle ? { lifecycle: opts.lifecycle(s) } : {}),
        message: `desired state ${DesiredState[desired].toLowerCase()}`,
      };
    });
  }

  /**
   * Start/restart of a server whose container is gone needs its data, unless
   * empty data is allowed: then its data directory begins anew (the answer
   * asks the action's batch to reset `dataInitialized`).
   */
  async function checkData(s: ServerRecord, allowEmpty: boolean): Promise<Pick<Change, "resetDataInitialized">> {
    if (s.status.containerId || !s.dataInitialized) return {};
    const data = await store.getDataDir(s.hostId, s.id);
    if (!data || data.present) return {};
    if (!allowEmpty) {
      throw new PreconditionError(
        `the data directory of "${s.name}" is gone from its host; purge the server (PurgeServer), or start it with allow_empty_data=true to begin with empty data`,
      );
    }
    return { resetDataInitialized: true };
  }

  /** Host ports other servers publish on `hostId`, as "25565/tcp" (a template's RANGE ports pick around them). */
  async function takenPorts(hostId: string, exceptId: string): Promise<Set<string>> {
    const owners = await loadPortOwners(store, hostId, exceptId);
    return new Set(owners.flatMap((o) => o.ports.map((p) => `${p.hostPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`)));
  }

  /**
   * CreateServer with a template: the spec rendered (InvalidArgument naming
   * template.variables["X"] for a bad value), its host picked (ports from a
   * RANGE left out of the placement: they are picked on the host chosen),
   * then rendered again with that host's taken ports.
   */
  async function fromTemplate(caller: Caller, ref: TemplateRef, given: ServerSpec, project: string): Promise<{ spec: ServerSpec; hostId: string }> {
    requireTemplateFieldsEmpty(given);
    const base = normalizeSpec(given);
    const first = await renderForServer(store, caller, ref, { base, project });
    if (await store.findServerByName(project, first.spec.name)) throw new ServerNameTakenError(project, first.spec.name);
    const ranged = new Set(first.template.template.ports.filter((p) => p.hostPortMode === HostPortMode.RANGE).map((p) => `${p.containerPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`));
    const fixed = first.spec.ports.filter((p) => !ranged.has(`${p.containerPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`));
    const hostId = await pickHost(create(ServerSpecSchema, { ...first.spec, ports: fixed }), project);
    const rendered = ranged.size > 0 ? (await renderForServer(store, caller, ref, { base, project, takenHostPorts: await takenPorts(hostId, "") })).spec : first.spec;
    return { spec: mergeSecretEnv(validateSpec(rendered, "spec"), undefined), hostId };
  }

  return {
    watchServers: createWatchServers({ store, ledger }),
    tailLogs: createTailLogs({ store, hub, presence }),
    watchConsole: createWatchConsole({ store, hub, presence }),
    execCommand: createExecCommand({
      store,
      hub,
      presence,
      commit: async (s, caller, argv) => {
        await store.commit([
          ledger.op({ type: "exec.run", project: s.project, serverId: s.id, hostId: s.hostId, actor: actorOf(caller), message: `exec: ${JSON.stringify(argv)}`, payload: { argv } }),
        ]);
      },
    }),

    async sendConsoleCommand(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "SendConsoleCommand");
      const s = await loadVisibleServer(store, caller, req.id);
      if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore and start it to use its console`);
      if (!s.spec.console) throw new PreconditionError(`server "${s.name}" has no console: set spec.console (UpdateServer), then restart it`);
      if (!hub.isConnected(s.hostId)) {
        throw new UnavailableError(
          presence?.isConnected(s.hostId)
            ? `host ${s.hostId} of server "${s.name}" is connected to another manager of this berth: send the line there (or retry)`
            : `host ${s.hostId} of server "${s.name}" is offline; try again when it is back`,
        );
      }
      const command = create(CommandSchema, {
        id: newId("cmd"),
        kind: CommandKind.CONSOLE_INPUT,
        serverId: s.id,
        consoleInput: new TextEncoder().encode(`${req.line}\n`),
        deadline: timestampFromMs(Date.now() + CONSOLE_ANSWER_MS),
      });
      let result: CommandResult;
      try {
        result = await hub.request(s.hostId, command, CONSOLE_ANSWER_MS);
      } catch (err) {
        throw new UnavailableError(`the line did not reach server "${s.name}": ${(err as Error).message}; it may not have been written`);
      }
      if (!result.success) {
        if (result.reason === "ContainerNotRunning" || result.reason === "ContainerMissing" || result.reason === "ConsoleClosed") throw new PreconditionError(`server "${s.name}": ${result.message}`);
        throw new UnavailableError(`writing to the console of server "${s.name}" failed on its host (${result.reason}): ${result.message}`);
      }
      await store.commit([
        ledger.op({ type: "console.command", project: s.project, serverId: s.id, hostId: s.hostId, actor: actorOf(caller), message: `console: ${req.line}`, payload: { line: req.line } }),
      ]);
      return create(SendConsoleCommandResponseSchema, {});
    },

    async createServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateServer");
      const actor = actorOf(caller);
      const project = projectFor(caller, req.project);
      // The spec was checked before the handler (validateRequests); only the defaults are filled here.
      let spec: ServerSpec;
      let hostId: string;
      if (req.template) {
        ({ spec, hostId } = await fromTemplate(caller, req.template, req.spec!, project));
      } else {
        // spec.template is output only: a spec written by hand records none.
        spec = mergeSecretEnv(normalizeSpec({ ...req.spec!, template: undefined }), undefined);
        // The friendly checks; the database's unique names and port reservations are the backstop of a race.
        if (await store.findServerByName(project, spec.name)) throw new ServerNameTakenError(project, spec.name);
        hostId = await pickHost(spec, project);
      }
      await checkPorts(hostId, spec, "", project);
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
        // A server with an install script runs it before its container is made (plan step 5b).
        lifecycle: spec.install ? { install: { state: "pending", attempt: 0, requestedAt: at } } : {},
        createdAt: at,
        updatedAt: at,
        deletedAt: null,
        version: 1,
      };
      await store.commit([
        { op: "server.insert", server: rec },
        ledger.op({
          type: "server.created",
          project,
          serverId: rec.id,
          hostId,
          actor,
          message: `server ${rec.name} created on ${hostId}${spec.template ? ` from template ${spec.template.templateId} version ${spec.template.version}` : ""}`,
        }),
      ]);
      await reconciler.reconcileNow(rec.id, `created by ${caller.name}`);
      return create(CreateServerResponseSchema, { server: serverToProto((await store.getServer(rec.id)) ?? rec) });
    },

    async getServer(req, ctx) {
      const server = serverToProto(await find(callerOf(ctx), req.id));
      await markOutdatedTemplates(store, [server]);
      return create(GetServerResponseSchema, { server });
    },

    async listServers(req, ctx) {
      const caller = callerOf(ctx);
      if (req.pageSize < 0) throw new InvalidArgumentError("page_size", "must not be negative");
      const limit = Math.min(req.pageSize || 100, MAX_PAGE);
      const before = positionOfPageToken(req.pageToken, "srv", "ListServers");
      // An all-projects admin sees every project unless it asks for one.
      const project = caller.project ?? (req.project.trim() || undefined);
      if (caller.project !== null) projectFor(caller, req.project);
      // The phase filter runs in the query, before the page is cut: filtering a cut page
      // answered an empty page without a next token while matching servers existed.
      const phases = [...new Set(req.phases)].map((p) => Phase[p] ?? "UNSPECIFIED");
      const filter = requestFilter("server", req.filter);
      if (filter) {
        // After scoping and the other filters (in the query), on the servers as this call returns them.
        const q = { ...(project !== undefined ? { project } : {}), hostId: req.hostId, includeDeleted: req.showDeleted, phases, labels: req.labels };
        const res = await filterPage<ServerRecord, ServerMessage>({
          read: (after, n) => store.listServers({ ...q, before: after ? { createdAt: after.createdAt, id: after.id } : before, limit: n }),
          convert: async (rows) => {
            const servers = rows.map(serverToProto);
            await markOutdatedTemplates(store, servers);
            return servers;
          },
          filter,
          run: new FilterRun(),
          pageSize: limit,
        });
        return create(ListServersResponseSchema, { servers: res.items, nextPageToken: pageTokenAfter(res.continueAfter, res.continueAfter !== undefined) });
      }
      const rows = await store.listServers({ ...(project !== undefined ? { project } : {}), hostId: req.hostId, includeDeleted: req.showDeleted, phases, labels: req.labels, before, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const servers = page.map(serverToProto);
      await markOutdatedTemplates(store, servers);
      return create(ListServersResponseSchema, { servers, nextPageToken: pageTokenAfter(page.at(-1), rows.length > limit) });
    },

    async startServer(req, ctx) {
      const server = await setDesired(ctx, req.id, DesiredState.RUNNING, "start_requested", {
        check: (s) => {
          notDeleted(s, "start");
          return checkData(s, req.allowEmptyData);
        },
      });
      return create(StartServerResponseSchema, { server: serverToProto(server) });
    },

    async stopServer(req, ctx) {
      if (req.timeoutSeconds > 3600) throw new InvalidArgumentError("timeout_seconds", "at most 3600");
      const server = await setDesired(ctx, req.id, DesiredState.STOPPED, "stop_requested", {
        lifecycle: (s) => ({ ...s.lifecycle, stopTimeoutSeconds: req.timeoutSeconds || undefined }),
      });
      return create(StopServerResponseSchema, { server: serverToProto(server) });
    },

    async pauseServer(req, ctx) {
      return create(PauseServerResponseSchema, { server: serverToProto(await setDesired(ctx, req.id, DesiredState.PAUSED, "pause_requested")) });
    },

    async resumeServer(req, ctx) {
      const server = await setDesired(ctx, req.id, DesiredState.RUNNING, "resume_requested", {
        check: (s) => {
          if (s.spec.desiredState !== DesiredState.PAUSED) throw new PreconditionError(`server "${s.name}" is not paused; use StartServer to start it`);
        },
      });
      return create(ResumeServerResponseSchema, { server: serverToProto(server) });
    },

    async restartServer(req, ctx) {
      // A restart also applies a newer spec: the agent recreates a container whose spec hash differs.
      const server = await setDesired(ctx, req.id, DesiredState.RUNNING, "restart_requested", {
        check: (s) => {
          notDeleted(s, "restart");
          return checkData(s, false);
        },
        lifecycle: (x) => ({ ...x.lifecycle, restartRequestedAt: now() }),
      });
      return create(RestartServerResponseSchema, { server: serverToProto(server) });
    },

    async rebuildServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "RebuildServer");
      const server = await act(ctx, req.id, "rebuild_requested", async (s, at) => {
        notDeleted(s, "rebuild");
        await checkData(s, false);
        return { lifecycle: { ...s.lifecycle, rebuildRequestedAt: at }, message: "recreate the container from the current spec, keeping data" };
      });
      return create(RebuildServerResponseSchema, { server: serverToProto(server) });
    },

    async updateServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "UpdateServer");
      const caller = callerOf(ctx);
      // Checked before the handler (validateRequests), like CreateServer's.
      const asGiven = normalizeSpec(req.spec);
      const server = await act(ctx, req.id, "updated", async (s, at) => {
        notDeleted(s, "update");
        // With a template: rendered again from its current version; without: spec.template stays what was recorded.
        const spec = req.template
          ? validateSpec((await renderForServer(store, caller, req.template, { base: asGiven, stored: s.spec, project: s.project, takenHostPorts: await takenPorts(s.hostId, s.id) })).spec, "spec")
          : { ...asGiven, template: s.spec.template };
        if (spec.name !== s.name) throw new InvalidArgumentError("spec.name", `renaming is not supported (server is "${s.name}")`);
        if (spec.hostId && spec.hostId !== s.hostId) {
          const host = (await store.getHost(s.hostId))?.name || s.hostId;
          throw new InvalidArgumentError("spec.host_id", `an update keeps a server on its host (it is on ${host}); leave host_id empty, and move it with TransferServer`);
        }
        await checkPorts(s.hostId, spec, s.id, s.project);
        // Limits raised: the host must have room for them (its own current limits not counted).
        const asked = requestOf({ spec });
        const had = requestOf(s);
        if (asked.cpus > had.cpus || asked.memoryBytes > had.memoryBytes) {
          const host = await store.getHost(s.hostId);
          if (host) await requireRoom(store, host, spec, [], s.id);
        }
        return {
          // "********" for a secret keeps its stored value (the caller only ever saw the mask).
          spec: { ...mergeSecretEnv(spec, s.spec), hostId: s.hostId },
          ...(req.applyNow ? { lifecycle: { ...s.lifecycle, rebuildRequestedAt: at } } : {}),
          message: `${req.applyNow ? "spec updated; applying now" : "spec updated; applies at the next restart or rebuild"}${req.template ? ` (rendered from template ${spec.template!.templateId} version ${spec.template!.version})` : ""}`,
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
      const server = await act(ctx, req.id, "restored", async (s) => {
        if (s.deletedAt === null) throw new PreconditionError(`server "${s.name}" is not deleted`);
        if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged`);
        if ((await store.findServerByName(s.project, s.name))?.id !== s.id) {
          throw new PreconditionError(`another server is now named "${s.name}"; purge or rename it first`);
        }
        // A deleted server holds no ports: another may have taken them meanwhile (refused here with free
        // ports to try, rather than by the store's reservation with a bare message).
        await checkPorts(s.hostId, s.spec, s.id, s.project);
        return { deletedAt: null, spec: { ...s.spec, desiredState: DesiredState.STOPPED }, message: "restored (stopped); start it to recreate the container" };
      });
      return create(RestoreServerResponseSchema, { server: serverToProto(server) });
    },

    async purgeServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "PurgeServer");
      const s = await find(caller, req.id);
      if (req.force && !presence.isConnected(s.hostId)) {
        // The host is away: drop the record now and say what may be left behind.
        await reconciler.dropRecord(
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

    async transferServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "TransferServer");
      const s = await find(caller, req.id);
      const r = await moves.transfer({ actor: actorOf(caller), name: caller.name }, s, req.host, { target: req.target, keepSourceHours: req.keepSourceHours, timeoutSeconds: req.timeoutSeconds });
      return create(TransferServerResponseSchema, { server: serverToProto(r.server), backupId: r.backupId });
    },

    async getInstallLog(req, ctx) {
      const s = await find(callerOf(ctx), req.id);
      const attempts = (await store.installLogs(s.id)).map((l) => ({
        attempt: l.attempt,
        startedTime: timestampFromMs(l.startedAt),
        finishedTime: timestampFromMs(l.finishedAt),
        exitCode: l.exitCode,
        timedOut: l.timedOut,
        log: l.log,
        truncated: l.truncated,
      }));
      return create(GetInstallLogResponseSchema, { attempts });
    },

    async reinstallServer(req, ctx) {
      requireRole(callerOf(ctx), "operator", "ReinstallServer");
      const server = await act(ctx, req.id, "reinstall_requested", (s, at) => {
        notDeleted(s, "reinstall");
        if (!s.spec.install) {
          throw new PreconditionError(`server "${s.name}" has no install script (spec.install); set one with UpdateServer (or render it from a template with one), then ReinstallServer`);
        }
        const inst = s.lifecycle.install;
        if (inst?.state === "running" || inst?.state === "pending") {
          throw new PreconditionError(`the install script of "${s.name}" is ${inst.state === "running" ? `running (attempt ${inst.attempt})` : "already waiting to run"}; wait for it to finish (status.install)`);
        }
        const active = ["running", "paused", "restarting"].includes(s.status.containerState);
        if (inst?.state !== "failed" && (active || s.spec.desiredState !== DesiredState.STOPPED)) {
          throw new PreconditionError(`server "${s.name}" must be stopped to run its install script again (it is ${active ? s.status.containerState : `meant to be ${DesiredState[s.spec.desiredState].toLowerCase()}`}): stop it with StopServer, then ReinstallServer, then start it`);
        }
        return {
          lifecycle: { ...s.lifecycle, install: { state: "pending", attempt: inst?.attempt ?? 0, requestedAt: at } },
          message: `run the install script again (attempt ${(inst?.attempt ?? 0) + 1}) before the server's container is started`,
        };
      });
      return create(ReinstallServerResponseSchema, { server: serverToProto(server) });
    },

    async cloneServer(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CloneServer");
      const src = await find(caller, req.source);
      const r = await moves.clone({ actor: actorOf(caller), name: caller.name }, src, { name: req.name, host: req.host, fromBackup: req.fromBackup, target: req.target, desiredState: req.desiredState });
      return create(CloneServerResponseSchema, { server: serverToProto(r.server), backupId: r.backupId });
    },
  };
}
