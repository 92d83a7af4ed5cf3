import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";

import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  AgentService,
  EnrollResponseSchema,
  ManagerMessageSchema,
  CommandKind,
  type AgentMessage,
  type BackupJob,
  type Command,
  type CommandProgress,
  type CommandResult,
  type ContainerInfo,
  type DataDir,
  type Inventory,
  type InstallResult,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";
import { ConflictError, HostOwnershipLostError, InvalidArgumentError, UnauthenticatedError, UnavailableError } from "../errors.js";
import { fencedCommit, STALE_OWNER, type HostOwnership } from "../cluster/host-ownership.js";
import { hashSecret, newId, newSecret, secretMatches } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub, AgentSession } from "../link/agent-hub.js";
import { AsyncQueue } from "../link/async-queue.js";
import type { Logger } from "../log.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { CommitResult, Store, WriteOp } from "../store/store.js";
import { type CommandRecord, type DataDirRecord, type DataRootEntry, eventCommand, type EventInput, type ExitCause, type HostRecord, type ServerRecord } from "../domain/records.js";
import { LABEL_MANAGER, LABEL_ROLE, LABEL_SERVER, ROLE_INSTALL } from "../domain/labels.js";

/** The most of an install attempt's output kept (the agent keeps its last 64 KiB too). */
export const INSTALL_LOG_MAX_BYTES = 64 * 1024;
import { commandName } from "../reconcile/plan.js";
import { requestArchiveRemoval } from "./backup-removal.js";
import { ObservationOrder } from "../link/observation-order.js";
import { parseEnrollmentToken } from "../tls/enrollment-token.js";
import { dockerReachability, type ObservedHostFacts } from "./host-conditions.js";
import { PullProgressThrottle } from "./pull-progress.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import { turns } from "../turns.js";
import type { UsageFeed } from "../usage/usage-feed.js";
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
import { cutText } from "../text.js";

export interface AgentServiceDeps {
  /** The store contract: every message of a link is applied as one committed batch. */
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
  /**
   * Host ownership (several managers): the stream's host is taken when it is
   * accepted and released when it ends; its commands carry the epoch.
   */
  ownership?: Pick<HostOwnership, "take" | "release" | "fence" | "lost">;
  /** Where agents' usage reports go (UsageService); absent: dropped. */
  usage?: Pick<UsageFeed, "record" | "hostGone">;
}

/** At most one `host.reports_refused` event per host per this long (the counts add up meanwhile). */
const REFUSED_EVENT_EVERY_MS = 10 * 60_000;
/** After messages were dropped for the rate, ask for a full inventory at most this often. */
const RATE_RESYNC_EVERY_MS = 30_000;

/** Per stream: the inventory being assembled from parts, and the message budget. */
interface LinkState {
  parts: { partOf: string; content: InventoryContent; serversOnHost: Set<string> } | undefined;
  budget: TokenBucket;
  lastRateResync: number;
  /** Messages were dropped because the database was unavailable: heal once a batch commits again. */
  missed: boolean;
}

/** Which server a container belongs to, and where that server lives. */
type ServerPlacement = Pick<ServerRecord, "id" | "hostId">;

/** One agent stream as its message handlers see it. */
interface Link {
  host: HostRecord;
  session: AgentSession;
  state: LinkState;
  order: ObservationOrder;
  hlog: Logger;
  /**
   * Commits a batch of this stream's writes; undefined (nothing written) once
   * the hub closed the stream or a newer connection of the host replaced it:
   * nothing a closed stream sends is stored.
   */
  commit(ops: readonly WriteOp[]): Promise<CommitResult | undefined>;
}

/** The agent's credential as sent in `authorization: Bearer <host id>.<secret>`. */
export function parseAgentCredential(header: string | null): { hostId: string; secret: string } | undefined {
  const m = /^Bearer (host_[a-z2-7]+)\.([A-Za-z0-9_-]+)$/.exec(header ?? "");
  return m ? { hostId: m[1]!, secret: m[2]! } : undefined;
}

/**
 * The manager's side of the agent link: enrollment, and one Connect stream
 * per agent whose messages are applied to the store in the order they came.
 *
 * Ordering: a stream's messages are handled one at a time, and the next one
 * is not even read from the stream before the previous one's batch has
 * committed (ObservationOrder and inventories in parts depend on that).
 * Streams of different hosts run side by side. Not reading is also the
 * backpressure: an agent that sends faster than its batches commit fills the
 * HTTP/2 flow-control window and is held by the transport, so the manager
 * holds at most one message per stream (plus the transport's window).
 */
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
  async function noteRefused(link: Link, counts: RefusedCounts, at: number): Promise<void> {
    const hostId = link.host.id;
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
    link.hlog.warn({ refused: summary }, "host reports refused");
    await link.commit([
      ledger.op({
        type: "host.reports_refused",
        hostId,
        reason: "ReportsRefused",
        message: `the agent reported more than berth stores for one host, or ids it does not accept (${summary}); not stored. See docs/agent.md#limits`,
        actor: "agent",
      }),
    ]);
  }

  async function authenticate(ctx: HandlerContext): Promise<HostRecord> {
    const cred = parseAgentCredential(ctx.requestHeader.get("authorization"));
    if (!cred) throw new UnauthenticatedError("missing or malformed agent credential; enroll the agent with `berth-agent enroll`");
    const host = await store.getHost(cred.hostId);
    if (!host || !secretMatches(cred.secret, host.secretHash)) {
      throw new UnauthenticatedError("unknown agent credential; re-enroll the agent with a new enrollment token");
    }
    if (host.removedAt !== null) {
      throw new UnauthenticatedError("this host was removed from berth; re-enroll the agent with a new enrollment token");
    }
    return host;
  }

  return {
    async enroll(req) {
      if (!req.token) throw new InvalidArgumentError("token", "required; create one with HostService.CreateEnrollmentToken");
      // The CA fingerprint after the "." is for the agent; the secret before it is what was issued.
      const t = await store.getEnrollmentToken(hashSecret(parseEnrollmentToken(req.token).secret));
      const at = now();
      if (!t) throw new UnauthenticatedError("unknown enrollment token; create a new one with HostService.CreateEnrollmentToken");
      if (t.usedAt !== null) throw new UnauthenticatedError("this enrollment token was already used; create a new one");
      if (t.expiresAt <= at) throw new UnauthenticatedError(`this enrollment token expired at ${new Date(t.expiresAt).toISOString()}; create a new one`);
      const hostId = newId("host");
      const secret = newSecret();
      const name = req.hostname.slice(0, 253) || hostId;
      try {
        // Used and spent in one batch: two agents racing with one token get one host between them.
        await store.commit([
          { op: "enrollment.use", id: t.id, hostId, at },
          { op: "host.insert", id: hostId, name, secretHash: hashSecret(secret), createdAt: at },
          ledger.op({ type: "host.enrolled", hostId, message: `host ${name} enrolled`, actor: "agent", correlationId: t.id }),
        ]);
      } catch (err) {
        if (err instanceof ConflictError) throw new UnauthenticatedError("this enrollment token was already used; create a new one");
        throw err;
      }
      log.info({ host: hostId, name }, "host enrolled");
      return create(EnrollResponseSchema, { hostId, secret, managerId: deps.managerId });
    },

    async *connect(requests: AsyncIterable<AgentMessage>, ctx: HandlerContext): AsyncIterable<ManagerMessage> {
      // A connect storm opens hundreds of streams in one poll of the sockets: each one's
      // authentication and first messages wait for their slot of the turn like any message.
      await turns.slot();
      const host = await authenticate(ctx);
      const out = new AsyncQueue<ManagerMessage>();
      // Set when the hub closes the stream (host removed, replaced): nothing it sends afterwards is stored.
      let closed = false;
      const state: LinkState = { parts: undefined, budget: new TokenBucket(limits.messagesPerSecond, limits.messageBurst, now()), lastRateResync: Number.NEGATIVE_INFINITY, missed: false };
      // The agent chose this manager: it owns the host from now on (a take always wins).
      const ownerEpoch = deps.ownership ? await deps.ownership.take(host.id) : undefined;
      const session: AgentSession = {
        hostId: host.id,
        ready: false,
        ...(ownerEpoch !== undefined ? { ownerEpoch } : {}),
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
            value: {
              managerId: deps.managerId,
              hostId: host.id,
              heartbeatIntervalSeconds: deps.heartbeatIntervalSeconds,
              time: timestampFromMs(now()),
              ...(ownerEpoch !== undefined ? { ownerEpoch: BigInt(ownerEpoch) } : {}),
            },
          },
        }),
      );
      const hlog = log.child({ host: host.id });
      const link: Link = {
        host,
        session,
        state,
        order: new ObservationOrder(),
        hlog,
        // The check and the start of the commit are one synchronous step: no close slips in between.
        // Several managers: every batch is fenced by this manager's term on the host, so once another
        // manager took it (the agent moved there), nothing this stream still delivers is stored: the
        // message is dropped (fencedCommit has marked the host lost, which closes this stream).
        commit: (ops) => {
          if (closed || !hub.isCurrent(session)) return Promise.resolve(undefined);
          return fencedCommit(store, deps.ownership, host.id, now())(ops).catch((err: unknown) => {
            if (!(err instanceof HostOwnershipLostError)) throw err;
            return undefined;
          });
        },
      };
      // The response side ended (the agent went away): read no further message.
      let ended = false;
      // The message being handled; the next is read only once it settled.
      let current: Promise<void> = Promise.resolve();
      const consume = (async () => {
        try {
          for await (const msg of requests) {
            session.lastSeen = now();
            if (ended || closed || !hub.isCurrent(session)) break;
            session.busy = true;
            try {
              // The turn's budget is shared with every other stream and the reconciler. Without it a
              // connect storm handled the first inventories of hundreds of hosts in one turn (1.3 s,
              // docs/benchmarks.md).
              await turns.slot();
              if (ended || closed || !hub.isCurrent(session)) break;
              current = handleOrSkip(link, msg);
              await current;
            } finally {
              session.busy = false;
              session.lastSeen = now();
            }
          }
          out.close();
        } catch (err) {
          // Not the agent's fault (a failed write): the agent reconnects and sends a full inventory, which heals it.
          if (!(err instanceof ConnectError)) hlog.error({ err }, "could not apply an agent message; closing the stream");
          out.close(err instanceof ConnectError ? err : undefined);
        }
      })();
      try {
        yield* out;
      } finally {
        ended = true;
        // The last message's batch lands before the host is marked offline, never after it.
        await current.catch(() => {});
        hub.endLogs(session, "agent stream ended");
        let offline = false;
        if (hub.detach(session)) {
          deps.usage?.hostGone(host.id);
          try {
            // Fenced: when the agent moved to another manager, that one has it online; not offline here.
            // Not through fencedCommit: a refusal is not reported (ownership.lost) here, since the
            // stream is over and its term is released just below; a lost() racing that release
            // could renew a term that only lapsed.
            const fence = deps.ownership?.fence(host.id, now()) ?? [];
            await store.commit([...fence, { op: "host.offline", id: host.id }, ledger.op({ type: "host.disconnected", hostId: host.id, message: "agent stream ended", actor: "agent" })]);
            hlog.info("agent disconnected");
            offline = true;
          } catch (err) {
            if (err instanceof HostOwnershipLostError) hlog.info({ owner: err.current?.holder }, "agent stream ended; another manager owns the host now");
            // The host shows online until the next start's sweep or connection: say so.
            else hlog.error({ err }, "could not record the agent's disconnection");
          }
        }
        if (ownerEpoch !== undefined) await deps.ownership?.release(host.id, ownerEpoch);
        // Only once the term is released: a reconcile in between saw the host neither owned here
        // nor lapsed (its term still live in the store), skipped its servers, and they kept their
        // last phase instead of Unknown (seen once on PostgreSQL: Running for 30 s after the agent stopped).
        if (offline) await reconciler.enqueueHost(host.id, "host disconnected");
        void consume;
      }
    },
  };

  /**
   * Applies one message; while the database is unavailable the message is
   * dropped instead of ending the stream (an agent's stream outlives a
   * database outage: its connection, its ownership term, its session), and
   * once a later message's batch commits again, what was dropped is healed:
   * the agent is asked for a full inventory and its open commands are sent
   * again (the agent answers a command it already applied with the result
   * it kept).
   */
  async function handleOrSkip(link: Link, msg: AgentMessage): Promise<void> {
    const { state, hlog, host } = link;
    try {
      await handleMessage(link, msg);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      if (!state.missed) hlog.warn({ err: err.message }, "the database is unavailable: this agent's reports are dropped until it is back (its stream stays up; it is asked for a full inventory then)");
      state.missed = true;
      state.parts = undefined;
      return;
    }
    if (!state.missed || !link.session.ready) return;
    state.missed = false;
    hub.sendResync(host.id);
    const at = now();
    const sent = (await store.openCommandsForHost(host.id)).filter((c) => hub.sendCommand(host.id, resendable(c)));
    if (sent.length > 0) await link.commit(sent.map((c) => ({ op: "command.sent", id: c.id, at })));
    hlog.info({ resent: sent.length }, "the database is back: asked the agent for a full inventory and sent its open commands again");
  }

  /** The message fits this stream's rate budget (log chunks and command results always do). */
  async function withinBudget(link: Link, msg: AgentMessage, at: number): Promise<boolean> {
    const { state, host } = link;
    const body = msg.body;
    if (body.case === "logChunk" || body.case === "commandResult" || body.case === "fileResult") return true;
    const cost = body.case === "inventory" ? 1 + Math.floor((body.value.containers.length + body.value.unmanaged.length + body.value.dataDirs.length + body.value.otherDataDirs.length) / 100) : 1;
    if (state.budget.take(at, cost)) return true;
    // What was dropped is lost: a full inventory heals it once the agent slows down.
    if (body.case === "inventory") state.parts = undefined;
    if (at - state.lastRateResync >= RATE_RESYNC_EVERY_MS) {
      state.lastRateResync = at;
      hub.sendResync(host.id);
    }
    await noteRefused(link, { RateLimited: 1 }, at);
    return false;
  }

  /**
   * One part of an inventory: kept (bounded) until the last one, then the
   * whole inventory is applied at once. An inventory in one message (no
   * `more`) is its own last part.
   */
  async function collectInventory(link: Link, inv: Inventory, at: number): Promise<InventoryContent | undefined> {
    const { state, host } = link;
    const part: InventoryContent = { containers: inv.containers, unmanaged: inv.unmanaged, dataDirs: inv.dataDirs, otherDataDirs: inv.otherDataDirs };
    let parts = state.parts;
    if (parts && parts.partOf !== inv.partOf) parts = undefined;
    if (!parts && !inv.more) {
      state.parts = undefined;
      const bounded = boundInventory(part, new Set(await store.serverIdsOnHost(host.id)), limits);
      await noteRefused(link, bounded.refused, at);
      return bounded;
    }
    parts ??= { partOf: inv.partOf, content: { containers: [], unmanaged: [], dataDirs: [], otherDataDirs: [], foreignDataDirs: [] }, serversOnHost: new Set(await store.serverIdsOnHost(host.id)) };
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
    parts.content = bounded;
    state.parts = inv.more ? parts : undefined;
    await noteRefused(link, bounded.refused, at);
    return inv.more ? undefined : bounded;
  }

  /**
   * May this container (from an event or a command result) be stored? Counts a
   * refusal. Returns it with the server its label names, as read to decide
   * (undefined when unlabelled or unknown), so the caller need not read it again.
   */
  async function admit(link: Link, c: ContainerInfo, at: number): Promise<{ container: ContainerInfo; server: ServerPlacement | undefined } | undefined> {
    const hostId = link.host.id;
    const slim = slimContainer(c);
    if (!slim) {
      await noteRefused(link, { ContainerTooLarge: 1 }, at);
      return undefined;
    }
    const sid = slim.labels[LABEL_SERVER] ?? "";
    // Only where the server lives: the record itself is read (and decoded) by whoever needs it.
    const serverHost = sid ? await store.serverHostId(sid) : undefined;
    const server = serverHost === undefined ? undefined : { id: sid, hostId: serverHost };
    const own = serverHost === hostId;
    // Read only what admitContainer will ask for (it asks in this order).
    const alreadyStored = !own && (await store.observedContainer(hostId, slim.id)) !== undefined;
    const counts = own || alreadyStored ? { total: 0, other: 0 } : await store.observedCounts(hostId);
    const reason = admitContainer(slim, { own, alreadyStored: () => alreadyStored, counts: () => counts }, limits);
    if (!reason) return { container: slim, server };
    await noteRefused(link, { [reason]: 1 }, at);
    return undefined;
  }

  /** Applies one message of `link`; resolves once everything it writes has committed. */
  async function handleMessage(link: Link, msg: AgentMessage): Promise<void> {
    const { host, session, order, hlog } = link;
    const at = now();
    const body = msg.body;
    if (!(await withinBudget(link, msg, at))) return;
    switch (body.case) {
      case "hello": {
        const h = body.value;
        link.session.features = new Set(h.features.slice(0, 64).map((f) => cutText(f, 64)));
        const docker = await noteDockerReachable(link, h.dockerReachable, at);
        const facts: ObservedHostFacts = {
          hostname: h.hostname,
          agentVersion: h.agentVersion,
          dockerVersion: h.dockerVersion,
          dataRoot: h.dataRoot,
          cpuCount: h.cpuCount,
          memoryBytes: byteCount(h.memoryBytes),
          dataRootFreeBytes: byteCount(h.dataRootFreeBytes),
          dataRootTotalBytes: byteCount(h.dataRootTotalBytes),
          backupDirs: h.backupDirs.slice(0, 16).map((d) => cutText(d, 1024)),
          ...docker.patch,
        };
        if (!(await link.commit([{ op: "host.connected", id: host.id, facts, at }, ...docker.ops]))) return;
        docker.log();
        hlog.info({ hostname: h.hostname, agentVersion: h.agentVersion, docker: h.dockerVersion }, "agent connected");
        return;
      }
      case "inventory": {
        const inv = await collectInventory(link, body.value, at);
        if (!inv) return;
        // Project networks travel in the last part (this one), bounded by NetworkInventory.
        deps.networks?.replace(host.id, body.value.networks);
        const docker = await noteDockerReachable(link, body.value.dockerReachable, at);
        const firstInventory = !session.ready;
        // Unmanaged containers are stored too (no server id): OrphanService lists them.
        // Servers observed after this inventory was taken keep their newer observation.
        // Checks of server-id directories of no server here are kept too (bounded with the data-root
        // entries): AdoptOrphan answers with the data of an untracked container's directory at once.
        // The store forgets them once the host no longer lists them.
        const checks = [...inv.dataDirs, ...(inv.foreignDataDirs ?? [])].map((d) => dataDirRecord(host.id, d, at));
        const done = await link.commit([
          { op: "host.inventory", hostId: host.id, containers: [...inv.containers, ...inv.unmanaged], dataDirs: checks, dataRootEntries: dataRootEntries(inv), at, keep: [...order.newerThan(msg.seq)] },
          { op: "host.heartbeat", id: host.id, at, facts: docker.patch },
          ...docker.ops,
          ...(firstInventory ? [ledger.op({ type: "host.connected", hostId: host.id, message: `agent connected; ${inv.containers.length} containers`, actor: "agent" })] : []),
        ]);
        if (!done) return;
        docker.log();
        if (firstInventory) {
          // Ready before the open commands are read: a command the reconciler records meanwhile is sent
          // by it (and maybe by us too: commands are idempotent), never by nobody.
          session.ready = true;
          // Resend commands that were pending or unacknowledged when the link dropped.
          const sent = (await store.openCommandsForHost(host.id)).filter((c) => hub.sendCommand(host.id, resendable(c)));
          if (sent.length > 0) await link.commit(sent.map((c) => ({ op: "command.sent", id: c.id, at })));
        }
        // Only servers the manager knows (a host can report any labelled id).
        for (const id of done.touchedServers) if (await store.getServer(id)) await reconciler.enqueue(id, "inventory");
        // A new connection reconciles every server of the host (HostConnected changed for
        // all of them); a later inventory only those whose observation changed: the same
        // inputs give the same result, so reconciling the others would change nothing.
        if (firstInventory) await reconciler.enqueueHost(host.id, "host connected");
        return;
      }
      case "containerEvent": {
        const ev = body.value;
        const reported = ev.container;
        if (!reported?.id) return;
        let c: ContainerInfo;
        let server: ServerPlacement | undefined;
        if (ev.removed) {
          c = reported;
          const done = await link.commit([{ op: "container.remove", hostId: host.id, containerId: c.id }]);
          if (!done) return;
          // The server of the row removed, if there was one.
          const [serverId] = done.touchedServers;
          const serverHost = serverId ? await store.serverHostId(serverId) : undefined;
          server = serverId && serverHost !== undefined ? { id: serverId, hostId: serverHost } : undefined;
        } else {
          const admitted = await admit(link, reported, at);
          if (!admitted) return;
          // Stored under its label's server id: the server admit read is the one to reconcile.
          c = admitted.container;
          if (!(await link.commit([{ op: "container.upsert", hostId: host.id, container: c, at }]))) return;
          server = admitted.server;
        }
        // Only servers the manager knows are reconciled (a container labelled with any id is not a reason to).
        if (!server) return;
        const serverId = server.id;
        order.note(serverId, msg.seq);
        // Only this manager's containers, on the server's own host, can drive its desired state
        // (a stale copy elsewhere, e.g. left on another host sharing the engine, must not).
        // Not the exit of its install container (RUN_INSTALL's result says how that went).
        if (ev.action === "die" && ev.exitCause && c.labels[LABEL_MANAGER] === deps.managerId && c.labels[LABEL_ROLE] !== ROLE_INSTALL && server.hostId === host.id) {
          await reconciler.noteExit(serverId, ev.exitCause as ExitCause, c.exitCode, at, c.finishedTime ? timestampMs(c.finishedTime) : 0, c.oomKilled);
        }
        await reconciler.enqueue(serverId, `container ${ev.action}`);
        return;
      }
      case "dataStatus": {
        let unknown = 0;
        const onHost = new Set(await store.serverIdsOnHost(host.id));
        const checks: WriteOp[] = [];
        const checked: string[] = [];
        for (const d of body.value.dirs) {
          // Only this host's servers: a check of any other id is not stored.
          if (!onHost.has(d.serverId)) {
            unknown++;
            continue;
          }
          checks.push({ op: "dataDir.upsert", dataDir: dataDirRecord(host.id, d, at) });
          checked.push(d.serverId);
        }
        if (checks.length > 0 && !(await link.commit(checks))) return;
        for (const id of checked) await reconciler.enqueue(id, "data check");
        await noteRefused(link, { UnknownServer: unknown }, at);
        return;
      }
      case "commandResult":
        await handleResult(link, body.value, at, msg.seq);
        return;
      case "heartbeat": {
        const docker = await noteDockerReachable(link, body.value.dockerReachable, at);
        const patch: ObservedHostFacts = {
          ...(body.value.dataRootFreeBytes > 0n ? { dataRootFreeBytes: byteCount(body.value.dataRootFreeBytes) } : {}),
          ...docker.patch,
        };
        if (await link.commit([{ op: "host.heartbeat", id: host.id, at, facts: patch }, ...docker.ops])) docker.log();
        return;
      }
      case "logChunk":
        hub.deliverLogChunk(session, body.value);
        return;
      case "fileResult":
        hub.deliverFileResult(session, body.value);
        return;
      case "commandProgress": {
        await noteProgress(link, body.value, at);
        return;
      }
      case "usage": {
        if (!deps.usage) return;
        const placed = new Set(await store.serverIdsOnHost(host.id));
        const { unknown } = await deps.usage.record(host.id, body.value, placed);
        await noteRefused(link, { UnknownServer: unknown }, at);
        return;
      }
      case "pullProgress": {
        const p = body.value;
        const server = await store.getServer(p.serverId);
        // Only servers placed on this host; at most one event per server per 2 s, plus the last.
        if (!server || server.hostId !== host.id || !pulls.shouldRecord(p.serverId, p.done, at)) return;
        await link.commit([
          ledger.op({
            type: "image.pull_progress",
            project: server.project,
            serverId: server.id,
            hostId: host.id,
            reason: p.done ? "PullFinished" : "Pulling",
            message: cutText(`${p.image}: ${p.status}`, 500),
            actor: "agent",
            correlationId: p.commandId,
          }),
        ]);
        return;
      }
      default:
        return;
    }
  }

  /**
   * The facts patch for a Docker reachability report, and when it changed
   * (the host's DockerReachable condition flips with it) the event for the
   * caller's batch and the log line to write once that committed.
   */
  async function noteDockerReachable(link: Link, reachable: boolean, at: number): Promise<{ patch: ObservedHostFacts; ops: WriteOp[]; log(): void }> {
    const hostId = link.host.id;
    const prev = ((await store.getHost(hostId))?.facts ?? {}) as ObservedHostFacts;
    const { patch, changed } = dockerReachability(prev, reachable, at);
    if (!changed) return { patch, ops: [], log: () => {} };
    const event: EventInput = {
      type: reachable ? "host.docker_reachable" : "host.docker_unreachable",
      hostId,
      reason: reachable ? "Reachable" : "Unreachable",
      message: reachable ? "the agent reaches its Docker engine again" : "the agent cannot reach its Docker engine",
      actor: "agent",
    };
    return {
      patch,
      ops: [ledger.op(event)],
      log: () => (reachable ? link.hlog.info("Docker engine reachable again") : link.hlog.warn("Docker engine unreachable on this host")),
    };
  }

  /**
   * A backup's or restore's progress: kept on the server's data operation
   * (status.operation shows it) and on the backup. Written on the version
   * read: a report that meets a concurrent write is dropped, the next one
   * comes within a second.
   */
  async function noteProgress(link: Link, p: CommandProgress, at: number): Promise<void> {
    const cmd = await store.getCommand(p.commandId);
    if (!cmd || cmd.hostId !== link.host.id || (cmd.state !== "pending" && cmd.state !== "sent")) return;
    const s = await store.getServer(cmd.serverId);
    const op = s?.lifecycle.dataOp;
    if (!s || !op || cmd.command.backup?.backupId !== op.backupId) return;
    const progress = { stage: cutText(p.stage, 40), bytesDone: byteCount(p.bytesDone), bytesTotal: byteCount(p.bytesTotal), files: byteCount(p.files), at };
    const ops: WriteOp[] = [{ op: "server.lifecycle", id: s.id, lifecycle: { ...s.lifecycle, dataOp: { ...op, progress } }, expectVersion: s.version }];
    if (op.kind === "backup" || op.transfer?.stage === "backup") ops.push({ op: "backup.update", id: op.backupId, set: { bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal }, ifState: ["running"] });
    try {
      if (!(await link.commit(ops))) return;
    } catch (err) {
      if (err instanceof ConflictError) return;
      throw err;
    }
    reconciler.enqueue(s.id, "data operation progress");
  }

  /**
   * The install log row of a RUN_INSTALL result (kept out of the server
   * record; GetInstallLog reads it): the attempt the server's lifecycle gave
   * this command, the log cut to its last INSTALL_LOG_MAX_BYTES whatever the
   * agent sent.
   */
  async function installLogOp(cmd: CommandRecord, i: InstallResult, server: ServerRecord, at: number): Promise<WriteOp> {
    const inst = server.lifecycle.install;
    const attempt = inst?.commandId === cmd.id ? inst.attempt : ((await store.installLogs(server.id))[0]?.attempt ?? 0) + 1;
    const cut = i.log.length > INSTALL_LOG_MAX_BYTES;
    return {
      op: "installLog.record",
      log: {
        serverId: server.id,
        attempt,
        commandId: cmd.id,
        startedAt: i.startedTime ? timestampMs(i.startedTime) : cmd.createdAt,
        finishedAt: i.finishedTime ? timestampMs(i.finishedTime) : at,
        exitCode: i.exitCode,
        timedOut: i.timedOut,
        truncated: i.truncated || cut,
        log: cut ? i.log.subarray(i.log.length - INSTALL_LOG_MAX_BYTES) : i.log,
      },
    };
  }

  /** Removes an archive no backup owns any more (best effort: logged when it cannot). */
  function removeLateArchive(hostId: string, job: BackupJob, serverId: string): void {
    requestArchiveRemoval(hub, hostId, job, serverId, now()).then(
      (r) => {
        if (!r.success) log.warn({ host: hostId, backup: job.backupId, key: job.key, reason: r.reason, message: r.message }, "could not remove what a backup left in its target after it failed or finished too late");
      },
      (err: unknown) => log.warn({ host: hostId, backup: job.backupId, key: job.key, err: String(err) }, "could not remove what a backup left in its target after it failed or finished too late"),
    );
  }

  /** What a backup's or restore's result changes besides its command: the backup, and the ledger. */
  function dataResultOps(cmd: CommandRecord, r: CommandResult, server: ServerRecord | undefined, at: number): WriteOp[] {
    const job = cmd.command.backup;
    if (!job || (cmd.command.kind !== CommandKind.BACKUP_DATA && cmd.command.kind !== CommandKind.RESTORE_DATA)) return [];
    const base = { project: server?.project ?? "", serverId: cmd.serverId, hostId: cmd.hostId, actor: "agent", correlationId: job.backupId };
    if (cmd.command.kind === CommandKind.RESTORE_DATA) {
      return [
        ledger.op(
          r.success
            ? { ...base, type: "backup.restored", reason: "Restored", message: server?.lifecycle.dataOp?.transfer || server?.lifecycle.dataOp?.fresh ? `restored backup ${job.backupId} into a new data directory on this host` : `restored backup ${job.backupId}; the replaced data is kept as .berth-previous/${cmd.command.dataDir} under the data root until the server runs again` }
            : { ...base, type: "backup.restore_failed", reason: r.reason || "RestoreFailed", message: `restore of backup ${job.backupId} failed, the data is as it was: ${r.message}` },
        ),
      ];
    }
    const a = r.archive;
    if (r.success && a) {
      const rawBytes = byteCount(a.rawBytes);
      return [
        {
          op: "backup.update",
          id: job.backupId,
          set: {
            state: "succeeded",
            reason: "",
            message: a.skipped > 0n ? `${a.skipped} sockets, FIFOs or devices were not archived` : "",
            sha256: cutText(a.sha256, 64),
            archiveBytes: byteCount(a.archiveBytes),
            rawBytes,
            files: byteCount(a.files),
            bytesDone: rawBytes,
            bytesTotal: rawBytes,
            finishedAt: at,
          },
          ifState: ["pending", "running"],
        },
        ledger.op({ ...base, type: "backup.succeeded", reason: "Succeeded", message: `backup ${job.backupId}: ${byteCount(a.files)} files, ${rawBytes} bytes, ${byteCount(a.archiveBytes)} bytes stored (sha256 ${cutText(a.sha256, 64)})` }),
      ];
    }
    const reason = r.success ? "NoArchive" : r.reason || "BackupFailed";
    const message = r.success ? "the agent reported no archive" : r.message;
    return [
      { op: "backup.update", id: job.backupId, set: { state: "failed", reason, message, finishedAt: at }, ifState: ["pending", "running"] },
      ledger.op({ ...base, type: "backup.failed", reason, message: `backup ${job.backupId}: ${message}` }),
    ];
  }

  async function handleResult(link: Link, r: CommandResult, at: number, seq: bigint): Promise<void> {
    const { host, hlog, order } = link;
    const cmd = await store.getCommand(r.commandId);
    // OrphanService's one-off commands are not stored: their caller awaits the result.
    const awaited = hub.deliverResult(host.id, r);
    // An agent only reports on its own commands; anything else is ignored.
    if (!cmd || cmd.hostId !== host.id) {
      if (!awaited) hlog.warn({ command: r.commandId }, "result for an unknown command ignored");
      return;
    }
    // Refused because a newer owner took the host (agent executor.ts): not an outcome of the
    // command, which stays open for the owner to resend under its epoch.
    if (!r.success && r.reason === STALE_OWNER) {
      hlog.warn({ command: cmd.id, message: r.message }, "the agent refused a command: another manager owns the host now");
      return;
    }
    const container = r.container?.id ? (await admit(link, r.container, at))?.container : undefined;
    // What the result observed is stored whether or not the command was still open.
    const observed: WriteOp[] = [];
    if (container) observed.push({ op: "container.upsert", hostId: host.id, container, at });
    if (r.data?.serverId === cmd.serverId) observed.push({ op: "dataDir.upsert", dataDir: dataDirRecord(host.id, r.data, at) });
    const server = await store.getServer(cmd.serverId);
    const finish: WriteOp[] = [...observed, { op: "command.finish", id: cmd.id, state: r.success ? "succeeded" : "failed", at, reason: r.reason, message: r.message }];
    // A removal reports no container: its success is the observation that none is left.
    if (r.success && cmd.command.kind === CommandKind.ENSURE_REMOVED) finish.push({ op: "container.removeServer", hostId: host.id, serverId: cmd.serverId, adoptedContainerId: cmd.command.adoptedContainerId });
    finish.push(
      ledger.op({
        type: r.success ? "command.succeeded" : "command.failed",
        project: server?.project ?? "",
        serverId: cmd.serverId,
        hostId: host.id,
        reason: r.reason,
        message: r.message || commandName(cmd.command.kind),
        actor: "agent",
        correlationId: cmd.id,
        command: eventCommand(cmd),
      }),
    );
    finish.push(...dataResultOps(cmd, r, server ?? undefined, at));
    if (cmd.command.kind === CommandKind.RUN_INSTALL && r.install && server) finish.push(await installLogOp(cmd, r.install, server, at));
    try {
      if (!(await link.commit(finish))) return;
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
      // A backup that finished after the manager gave up on it (its deadline): the archive the
      // agent wrote belongs to no backup any more, so it goes.
      if (r.success && cmd.command.kind === CommandKind.BACKUP_DATA && cmd.command.backup) removeLateArchive(host.id, cmd.command.backup, cmd.serverId);
      // The command was finished already: a result replayed after a reconnect (or the deadline
      // expired it first). Its observation is stored; the command, its event and effects are not again.
      if (observed.length > 0 && !(await link.commit(observed))) return;
    }
    // An S3 upload the agent lost when it restarted may be left as an incomplete multipart upload:
    // the new agent process aborts it (REMOVE_BACKUP also aborts pending uploads of the key).
    const job = cmd.command.backup;
    if (!r.success && r.reason === "AgentRestarted" && cmd.command.kind === CommandKind.BACKUP_DATA && job?.location?.kind.case === "s3") removeLateArchive(host.id, job, cmd.serverId);
    // What the success satisfies (restart and rebuild requests) the reconcile queued below folds
    // into its own batch (reconciler.ts, noteCommandFinished), before it can issue another command.
    order.note(cmd.serverId, seq);
    hlog.info({ server: cmd.serverId, command: cmd.id, success: r.success, reason: r.reason, message: r.message }, "command result");
    await reconciler.enqueue(cmd.serverId, r.success ? `${commandName(cmd.command.kind)} succeeded` : `${commandName(cmd.command.kind)} failed: ${r.reason}`);
  }
}

/** Commands that must not start over silently when the agent that had them is gone (a backup, a restore). */
const ATTACH_ONLY_KINDS: ReadonlySet<CommandKind> = new Set([CommandKind.BACKUP_DATA, CommandKind.RESTORE_DATA]);

/**
 * An open command as it is sent again after the link came back: a backup or
 * restore already sent is marked attach_only, so a restarted agent (which
 * lost it) fails it with AgentRestarted instead of starting it over.
 */
export function resendable(c: Pick<CommandRecord, "command" | "sentAt">): Command {
  return c.sentAt !== null && ATTACH_ONLY_KINDS.has(c.command.kind) ? { ...c.command, attachOnly: true } : c.command;
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
    ...(d.sizeUnknown ? { sizeUnknown: true } : {}),
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

