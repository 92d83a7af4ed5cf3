import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";

import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  AgentService,
  EnrollResponseSchema,
  ManagerMessageSchema,
  CommandKind,
  type AgentMessage,
  type CommandResult,
  type ContainerInfo,
  type DataDir,
  type Inventory,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";
import { InvalidArgumentError, UnauthenticatedError } from "../errors.js";
import { hashSecret, newId, newSecret, secretMatches } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub, AgentSession } from "../link/agent-hub.js";
import { AsyncQueue } from "../link/async-queue.js";
import type { Logger } from "../log.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import { type Store } from "../store/store.js";
import { type DataDirRecord, type DataRootEntry, type ExitCause, type HostRecord, type ServerRecord } from "../domain/records.js";
import { LABEL_MANAGER, LABEL_SERVER } from "../domain/labels.js";
import { commandName } from "../reconcile/plan.js";
import { ObservationOrder } from "../link/observation-order.js";
import { parseEnrollmentToken } from "../tls/enrollment-token.js";
import { dockerReachability, type ObservedHostFacts } from "./host-conditions.js";
import { PullProgressThrottle } from "./pull-progress.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import {
  addRefused,
  admitContainer,
  boundInventory,
  DEFAULT_HOST_LIMITS,
  slimContainer,
  type HostLimits,
  type InventoryContent,
  type RefusedCounts,
} from "./host-limits.js";
import { TokenBucket } from "../auth/limits.js";

export interface AgentServiceDeps {
  store: Store;
  hub: AgentHub;
  ledger: Ledger;
  reconciler: Reconciler;
  log: Logger;
  managerId: string;
  heartbeatIntervalSeconds: number;
  /** What one host may make the manager store and do (default DEFAULT_HOST_LIMITS). */
  limits?: HostLimits;
  /** Where the project networks of each inventory go (orphan detection); absent: dropped. */
  networks?: NetworkInventory;
  now?: () => number;
}

/** At most one `host.reports_refused` event per host per this long (the counts add up meanwhile). */
const REFUSED_EVENT_EVERY_MS = 10 * 60_000;
/** After messages were dropped for the rate, ask for a full inventory at most this often. */
const RATE_RESYNC_EVERY_MS = 30_000;
/** Yield to the event loop after this many messages from one stream (other agents and the API get their turn). */
const YIELD_EVERY = 64;

/** Per stream: the inventory being assembled from parts, and the message budget. */
interface LinkState {
  parts: { partOf: string; content: InventoryContent; serversOnHost: Set<string> } | undefined;
  budget: TokenBucket;
  lastRateResync: number;
}

/** The agent's credential as sent in `authorization: Bearer <host id>.<secret>`. */
export function parseAgentCredential(header: string | null): { hostId: string; secret: string } | undefined {
  const m = /^Bearer (host_[a-z2-7]+)\.([A-Za-z0-9_-]+)$/.exec(header ?? "");
  return m ? { hostId: m[1]!, secret: m[2]! } : undefined;
}

export function createAgentService(deps: AgentServiceDeps): ServiceImpl<typeof AgentService> {
  const { store, hub, ledger, reconciler, log } = deps;
  const now = deps.now ?? Date.now;
  const pulls = new PullProgressThrottle(2_000);
  const limits = deps.limits ?? DEFAULT_HOST_LIMITS;
  /** Refused reports per host since its last `host.reports_refused` event. */
  const refusedSince = new Map<string, { counts: RefusedCounts; lastEventAt: number }>();

  /**
   * Counts what a host sent and the manager did not store: a total per reason
   * on the hub (metrics), a warning log, and at most one host event per
   * REFUSED_EVENT_EVERY_MS saying how much and why.
   */
  function noteRefused(hostId: string, counts: RefusedCounts, at: number, hlog: Logger): void {
    const entries = Object.entries(counts).filter(([, n]) => n > 0) as [keyof RefusedCounts, number][];
    if (entries.length === 0) return;
    for (const [reason, n] of entries) hub.noteRefused(reason, n);
    const r = refusedSince.get(hostId) ?? { counts: {}, lastEventAt: Number.NEGATIVE_INFINITY };
    refusedSince.set(hostId, r);
    for (const [reason, n] of entries) addRefused(r.counts, reason, n);
    if (at - r.lastEventAt < REFUSED_EVENT_EVERY_MS) return;
    const summary = Object.entries(r.counts)
      .map(([reason, n]) => `${n} ${reason}`)
      .join(", ");
    r.counts = {};
    r.lastEventAt = at;
    hlog.warn({ refused: summary }, "host reports refused");
    ledger.append({
      type: "host.reports_refused",
      hostId,
      reason: "ReportsRefused",
      message: `the agent reported more than berth stores for one host, or ids it does not accept (${summary}); not stored. See docs/agent.md#limits`,
      actor: "agent",
    });
  }

  function authenticate(ctx: HandlerContext): HostRecord {
    const cred = parseAgentCredential(ctx.requestHeader.get("authorization"));
    if (!cred) throw new UnauthenticatedError("missing or malformed agent credential; enroll the agent with `berth-agent enroll`");
    const host = store.getHost(cred.hostId);
    if (!host || !secretMatches(cred.secret, host.secretHash)) {
      throw new UnauthenticatedError("unknown agent credential; re-enroll the agent with a new enrollment token");
    }
    if (host.removedAt !== null) {
      throw new UnauthenticatedError("this host was removed from berth; re-enroll the agent with a new enrollment token");
    }
    return host;
  }

  return {
    enroll(req) {
      if (!req.token) throw new InvalidArgumentError("token", "required; create one with HostService.CreateEnrollmentToken");
      // The CA fingerprint after the "." is for the agent; the secret before it is what was issued.
      const t = store.getEnrollmentToken(hashSecret(parseEnrollmentToken(req.token).secret));
      const at = now();
      if (!t) throw new UnauthenticatedError("unknown enrollment token; create a new one with HostService.CreateEnrollmentToken");
      if (t.usedAt !== null) throw new UnauthenticatedError("this enrollment token was already used; create a new one");
      if (t.expiresAt <= at) throw new UnauthenticatedError(`this enrollment token expired at ${new Date(t.expiresAt).toISOString()}; create a new one`);
      const hostId = newId("host");
      const secret = newSecret();
      const name = req.hostname.slice(0, 253) || hostId;
      store.transaction(() => {
        if (!store.useEnrollmentToken(t.id, hostId, at)) {
          throw new UnauthenticatedError("this enrollment token was already used; create a new one");
        }
        store.insertHost({ id: hostId, name, secretHash: hashSecret(secret), createdAt: at });
      });
      ledger.append({ type: "host.enrolled", hostId, message: `host ${name} enrolled`, actor: "agent", correlationId: t.id });
      log.info({ host: hostId, name }, "host enrolled");
      return create(EnrollResponseSchema, { hostId, secret, managerId: deps.managerId });
    },

    async *connect(requests: AsyncIterable<AgentMessage>, ctx: HandlerContext): AsyncIterable<ManagerMessage> {
      const host = authenticate(ctx);
      const out = new AsyncQueue<ManagerMessage>();
      // Set when the hub closes the stream (host removed, replaced): nothing it sends afterwards is stored.
      let closed = false;
      const state: LinkState = { parts: undefined, budget: new TokenBucket(limits.messagesPerSecond, limits.messageBurst, now()), lastRateResync: Number.NEGATIVE_INFINITY };
      const session: AgentSession = {
        hostId: host.id,
        ready: false,
        lastSeen: now(),
        send: (m) => out.push(m),
        // A revoked agent gets Unauthenticated, which makes it stop instead of reconnecting.
        close: (reason, revoked) => {
          closed = true;
          out.close(new ConnectError(reason, revoked ? Code.Unauthenticated : Code.Aborted));
        },
      };
      hub.attach(session);
      out.push(
        create(ManagerMessageSchema, {
          body: {
            case: "welcome",
            value: { managerId: deps.managerId, hostId: host.id, heartbeatIntervalSeconds: deps.heartbeatIntervalSeconds, time: timestampFromMs(now()) },
          },
        }),
      );
      const hlog = log.child({ host: host.id });
      const order = new ObservationOrder();
      const consume = (async () => {
        try {
          let handled = 0;
          for await (const msg of requests) {
            session.lastSeen = now();
            if (closed || !hub.isCurrent(session)) break;
            handleMessage(host, session, state, msg, hlog, order);
            // Messages already buffered would otherwise all be handled in one turn of the event loop
            // (an inventory part is up to thousands of items: a turn of its own).
            if (++handled % YIELD_EVERY === 0 || msg.body.case === "inventory") await new Promise((r) => setImmediate(r));
          }
          out.close();
        } catch (err) {
          out.close(err instanceof ConnectError ? err : undefined);
        }
      })();
      try {
        yield* out;
      } finally {
        hub.endLogs(session, "agent stream ended");
        if (hub.detach(session)) {
          store.setHostOffline(host.id);
          ledger.append({ type: "host.disconnected", hostId: host.id, message: "agent stream ended", actor: "agent" });
          hlog.info("agent disconnected");
          reconciler.enqueueHost(host.id, "host disconnected");
        }
        void consume;
      }
    },
  };

  /** The message fits this stream's rate budget (log chunks and command results always do). */
  function withinBudget(host: HostRecord, state: LinkState, msg: AgentMessage, at: number, hlog: Logger): boolean {
    const body = msg.body;
    if (body.case === "logChunk" || body.case === "commandResult") return true;
    const cost = body.case === "inventory" ? 1 + Math.floor((body.value.containers.length + body.value.unmanaged.length + body.value.dataDirs.length + body.value.otherDataDirs.length) / 100) : 1;
    if (state.budget.take(at, cost)) return true;
    noteRefused(host.id, { RateLimited: 1 }, at, hlog);
    // What was dropped is lost: a full inventory heals it once the agent slows down.
    if (body.case === "inventory") state.parts = undefined;
    if (at - state.lastRateResync >= RATE_RESYNC_EVERY_MS) {
      state.lastRateResync = at;
      hub.sendResync(host.id);
    }
    return false;
  }

  /**
   * One part of an inventory: kept (bounded) until the last one, then the
   * whole inventory is applied at once. An inventory in one message (no
   * `more`) is its own last part.
   */
  function collectInventory(host: HostRecord, state: LinkState, inv: Inventory, at: number, hlog: Logger): InventoryContent | undefined {
    const part: InventoryContent = { containers: inv.containers, unmanaged: inv.unmanaged, dataDirs: inv.dataDirs, otherDataDirs: inv.otherDataDirs };
    let parts = state.parts;
    if (parts && parts.partOf !== inv.partOf) parts = undefined;
    if (!parts && !inv.more) {
      state.parts = undefined;
      const bounded = boundInventory(part, new Set(store.serverIdsOnHost(host.id)), limits);
      noteRefused(host.id, bounded.refused, at, hlog);
      return bounded;
    }
    parts ??= { partOf: inv.partOf, content: { containers: [], unmanaged: [], dataDirs: [], otherDataDirs: [], foreignDataDirs: [] }, serversOnHost: new Set(store.serverIdsOnHost(host.id)) };
    // Bounded as it grows: a host cannot make the manager hold more than the limits allow.
    const c = parts.content;
    const bounded = boundInventory(
      {
        containers: [...c.containers, ...part.containers],
        unmanaged: [...c.unmanaged, ...part.unmanaged],
        dataDirs: [...c.dataDirs, ...part.dataDirs],
        otherDataDirs: [...c.otherDataDirs, ...part.otherDataDirs],
        foreignDataDirs: c.foreignDataDirs ?? [],
      },
      parts.serversOnHost,
      limits,
    );
    noteRefused(host.id, bounded.refused, at, hlog);
    parts.content = bounded;
    if (inv.more) {
      state.parts = parts;
      return undefined;
    }
    state.parts = undefined;
    return bounded;
  }

  /**
   * May this container (from an event or a command result) be stored? Counts a
   * refusal. Returns it with the server its label names, as read to decide
   * (undefined when unlabelled or unknown), so the caller need not read it again.
   */
  function admit(host: HostRecord, c: ContainerInfo, at: number, hlog: Logger): { container: ContainerInfo; server: ServerRecord | undefined } | undefined {
    const slim = slimContainer(c);
    if (!slim) {
      noteRefused(host.id, { ContainerTooLarge: 1 }, at, hlog);
      return undefined;
    }
    const sid = slim.labels[LABEL_SERVER] ?? "";
    const server = sid ? store.getServer(sid) : undefined;
    const reason = admitContainer(
      slim,
      {
        own: server?.hostId === host.id,
        alreadyStored: () => store.observedContainer(host.id, slim.id) !== undefined,
        counts: () => store.observedCounts(host.id),
      },
      limits,
    );
    if (!reason) return { container: slim, server };
    noteRefused(host.id, { [reason]: 1 }, at, hlog);
    return undefined;
  }

  function handleMessage(host: HostRecord, session: AgentSession, state: LinkState, msg: AgentMessage, hlog: Logger, order: ObservationOrder): void {
    const at = now();
    const body = msg.body;
    if (!withinBudget(host, state, msg, at, hlog)) return;
    switch (body.case) {
      case "hello": {
        const h = body.value;
        const facts: ObservedHostFacts = {
          hostname: h.hostname,
          agentVersion: h.agentVersion,
          dockerVersion: h.dockerVersion,
          dataRoot: h.dataRoot,
          cpuCount: h.cpuCount,
          memoryBytes: byteCount(h.memoryBytes),
          dataRootFreeBytes: byteCount(h.dataRootFreeBytes),
          dataRootTotalBytes: byteCount(h.dataRootTotalBytes),
          ...noteDockerReachable(host.id, h.dockerReachable, at, hlog),
        };
        store.setHostConnected(host.id, facts, at);
        hlog.info({ hostname: h.hostname, agentVersion: h.agentVersion, docker: h.dockerVersion }, "agent connected");
        return;
      }
      case "inventory": {
        const inv = collectInventory(host, state, body.value, at, hlog);
        if (!inv) return;
        // Project networks travel in the last part (this one), bounded by NetworkInventory.
        deps.networks?.replace(host.id, body.value.networks);
        // Unmanaged containers are stored too (no server id): OrphanService lists them.
        // Servers observed after this inventory was taken keep their newer observation.
        // Checks of server-id directories of no server here are kept too (bounded with the data-root
        // entries): AdoptOrphan answers with the data of an untracked container's directory at once.
        // The store forgets them once the host no longer lists them.
        const checks = [...inv.dataDirs, ...(inv.foreignDataDirs ?? [])].map((d) => dataDirRecord(host.id, d, at));
        const touched = store.replaceHostInventory(host.id, [...inv.containers, ...inv.unmanaged], checks, at, dataRootEntries(inv), order.newerThan(msg.seq));
        store.recordHeartbeat(host.id, at, noteDockerReachable(host.id, body.value.dockerReachable, at, hlog));
        const firstInventory = !session.ready;
        if (firstInventory) {
          session.ready = true;
          ledger.append({ type: "host.connected", hostId: host.id, message: `agent connected; ${inv.containers.length} containers`, actor: "agent" });
          // Resend commands that were pending or unacknowledged when the link dropped.
          for (const c of store.openCommandsForHost(host.id)) {
            if (hub.sendCommand(host.id, c.command)) store.markCommandSent(c.id, at);
          }
        }
        // Only servers the manager knows (a host can report any labelled id).
        for (const id of touched) if (store.getServer(id)) reconciler.enqueue(id, "inventory");
        // A new connection reconciles every server of the host (HostConnected changed for
        // all of them); a later inventory only those whose observation changed: the same
        // inputs give the same result, so reconciling the others would change nothing.
        if (firstInventory) reconciler.enqueueHost(host.id, "host connected");
        return;
      }
      case "containerEvent": {
        const ev = body.value;
        const reported = ev.container;
        if (!reported?.id) return;
        let c: ContainerInfo;
        let server: ServerRecord | undefined;
        if (ev.removed) {
          c = reported;
          const serverId = store.removeContainer(host.id, c.id);
          server = serverId ? store.getServer(serverId) : undefined;
        } else {
          const admitted = admit(host, reported, at, hlog);
          if (!admitted) return;
          // Stored under its label's server id: the server admit read is the one to reconcile.
          c = admitted.container;
          store.upsertContainer(host.id, c, at);
          server = admitted.server;
        }
        // Only servers the manager knows are reconciled (a container labelled with any id is not a reason to).
        if (!server) return;
        const serverId = server.id;
        order.note(serverId, msg.seq);
        // Only this manager's containers, on the server's own host, can drive its desired state
        // (a stale copy elsewhere, e.g. left on another host sharing the engine, must not).
        if (ev.action === "die" && ev.exitCause && c.labels[LABEL_MANAGER] === deps.managerId && server.hostId === host.id) {
          reconciler.noteExit(serverId, ev.exitCause as ExitCause, c.exitCode, at, c.finishedTime ? timestampMs(c.finishedTime) : 0);
        }
        reconciler.enqueue(serverId, `container ${ev.action}`);
        return;
      }
      case "dataStatus": {
        let unknown = 0;
        const onHost = new Set(store.serverIdsOnHost(host.id));
        for (const d of body.value.dirs) {
          // Only this host's servers: a check of any other id is not stored.
          if (!onHost.has(d.serverId)) {
            unknown++;
            continue;
          }
          store.upsertDataDir(dataDirRecord(host.id, d, at));
          reconciler.enqueue(d.serverId, "data check");
        }
        noteRefused(host.id, { UnknownServer: unknown }, at, hlog);
        return;
      }
      case "commandResult":
        handleResult(host, body.value, at, hlog, msg.seq, order);
        return;
      case "heartbeat": {
        const patch: ObservedHostFacts = {
          ...(body.value.dataRootFreeBytes > 0n ? { dataRootFreeBytes: byteCount(body.value.dataRootFreeBytes) } : {}),
          ...noteDockerReachable(host.id, body.value.dockerReachable, at, hlog),
        };
        store.recordHeartbeat(host.id, at, patch);
        return;
      }
      case "logChunk":
        hub.deliverLogChunk(session, body.value);
        return;
      case "pullProgress": {
        const p = body.value;
        const server = store.getServer(p.serverId);
        // Only servers placed on this host; at most one event per server per 2 s, plus the last.
        if (!server || server.hostId !== host.id || !pulls.shouldRecord(p.serverId, p.done, at)) return;
        ledger.append({
          type: "image.pull_progress",
          project: server.project,
          serverId: server.id,
          hostId: host.id,
          reason: p.done ? "PullFinished" : "Pulling",
          message: `${p.image}: ${p.status}`.slice(0, 500),
          actor: "agent",
          correlationId: p.commandId,
        });
        return;
      }
      default:
        return;
    }
  }

  /**
   * The facts patch for a Docker reachability report; records an event when
   * it changed (the host's DockerReachable condition flips with it).
   */
  function noteDockerReachable(hostId: string, reachable: boolean, at: number, hlog: Logger): ObservedHostFacts {
    const prev = (store.getHost(hostId)?.facts ?? {}) as ObservedHostFacts;
    const { patch, changed } = dockerReachability(prev, reachable, at);
    if (changed) {
      ledger.append({
        type: reachable ? "host.docker_reachable" : "host.docker_unreachable",
        hostId,
        reason: reachable ? "Reachable" : "Unreachable",
        message: reachable ? "the agent reaches its Docker engine again" : "the agent cannot reach its Docker engine",
        actor: "agent",
      });
      if (reachable) hlog.info("Docker engine reachable again");
      else hlog.warn("Docker engine unreachable on this host");
    }
    return patch;
  }

  function handleResult(host: HostRecord, r: CommandResult, at: number, hlog: Logger, seq: bigint, order: ObservationOrder): void {
    const cmd = store.getCommand(r.commandId);
    // OrphanService's one-off commands are not stored: their caller awaits the result.
    const awaited = hub.deliverResult(host.id, r);
    // An agent only reports on its own commands; anything else is ignored.
    if (!cmd || cmd.hostId !== host.id) {
      if (!awaited) hlog.warn({ command: r.commandId }, "result for an unknown command ignored");
      return;
    }
    const container = r.container?.id ? admit(host, r.container, at, hlog)?.container : undefined;
    store.transaction(() => {
      if (container) store.upsertContainer(host.id, container, at);
      if (r.data?.serverId === cmd.serverId) store.upsertDataDir(dataDirRecord(host.id, r.data, at));
      const fresh = store.finishCommand(cmd.id, r.success ? "succeeded" : "failed", at, r.reason, r.message);
      order.note(cmd.serverId, seq);
      if (fresh) {
        // A removal reports no container: its success is the observation that none is left.
        if (r.success && cmd.command.kind === CommandKind.ENSURE_REMOVED) store.removeServerContainers(host.id, cmd.serverId, cmd.command.adoptedContainerId);
        reconciler.noteCommandFinished(cmd.serverId, cmd.command, cmd.createdAt, r.success);
        const server = store.getServer(cmd.serverId);
        ledger.append({
          type: r.success ? "command.succeeded" : "command.failed",
          project: server?.project ?? "",
          serverId: cmd.serverId,
          hostId: host.id,
          reason: r.reason,
          message: r.message || commandName(cmd.command.kind),
          actor: "agent",
          correlationId: cmd.id,
        });
      }
    });
    hlog.info({ server: cmd.serverId, command: cmd.id, success: r.success, reason: r.reason, message: r.message }, "command result");
    reconciler.enqueue(cmd.serverId, r.success ? `${commandName(cmd.command.kind)} succeeded` : `${commandName(cmd.command.kind)} failed: ${r.reason}`);
  }
}

/** Every directory under the host's data root: the existing server-id ones (measured) and the others. */
function dataRootEntries(inv: InventoryContent): DataRootEntry[] {
  return [
    ...[...inv.dataDirs, ...(inv.foreignDataDirs ?? [])].filter((d) => d.exists).map((d) => ({ name: d.serverId, sizeBytes: byteCount(d.sizeBytes) })),
    ...inv.otherDataDirs.map((name) => ({ name, sizeBytes: 0 })),
  ];
}

function dataDirRecord(hostId: string, d: DataDir, at: number): DataDirRecord {
  return {
    hostId,
    serverId: d.serverId,
    present: d.exists,
    sizeBytes: byteCount(d.sizeBytes),
    checkedAt: at,
  };
}

/**
 * A byte count an agent reported, as a number the store and every response
 * can hold. A 64-bit value near the top of its range does not survive
 * `Number()` (2^63 - 1 rounds up to 2^63), and written back into an int64
 * field it made the server's stored status unreadable: every ListServers
 * answered Internal. Negative counts are 0; huge ones are capped.
 */
export function byteCount(v: bigint): number {
  if (v <= 0n) return 0;
  return v >= BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}
