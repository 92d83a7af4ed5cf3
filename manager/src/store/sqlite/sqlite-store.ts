/**
 * The store contract (store/contract.ts) on SQLite: the embedded default.
 *
 * better-sqlite3 is synchronous, so every read resolves at once and a batch
 * runs as one immediate transaction inside `commit`. The SQL itself lives in
 * the table classes (Store, EventTables, AlertTables, TokenTables over one
 * connection); this class is the only way the rest of the manager reaches them.
 */
import { ConflictError, HostOwnershipLostError, NotFoundError } from "../../errors.js";
import type { EventRecord, ServerRecord } from "../../domain/records.js";
import { appendedEvent } from "../rows.js";
import type { AlertTables } from "./alert-tables.js";
import { hostLeaseName, type IdPage, type Committed, type CommitResult, type Store as StoreContract, type WriteOp } from "../store.js";
import { serverFromRow, storable, type ServerRow } from "../rows.js";
import type { EventTables } from "./event-tables.js";
import type { SqliteTables as Tables } from "./tables.js";
import type { TokenTables } from "./token-tables.js";
import type { ClusterTables } from "./cluster-tables.js";

type CommitListener = (c: Committed) => void;

/** What one batch did so far (filled while it runs, reported once it committed). */
interface Effects {
  versions: Map<string, number>;
  events: EventRecord[];
  touched: Set<string>;
  /** Servers whose record the batch wrote (not merely named by an event). */
  serverIds: Set<string>;
  /** Servers the batch purged, with where they lived (their tombstones). */
  purged: Map<string, { project: string; hostId: string }>;
  hostIds: Set<string>;
  leaseEpochs: Map<string, number>;
  /** Tokens inserted or revoked (Committed.tokenIds). */
  tokenIds: Set<string>;
  droppedDeliveries: { id: string; urlKey: string }[];
}

/** At most this many batches share one transaction (commit). */
const GROUP_MAX_BATCHES = 500;
/** A group stops taking batches after this much work (ms), so the event loop never waits long. */
const GROUP_BUDGET_MS = 15;

interface PendingBatch {
  batch: readonly WriteOp[];
  resolve: (r: CommitResult) => void;
  reject: (err: unknown) => void;
}

/**
 * Decoded server records kept (getServer): a stop reads the same record five
 * or six times, and decoding its JSON was a tenth of the manager's CPU under
 * load. Least recently used ones go first; 20,000 records are about 60 MB.
 */
const SERVER_CACHE_MAX = 20_000;

/** Under test, cached records are frozen: code that changes a record it read (instead of a copy) fails there. */
const FREEZE_CACHED = process.env.VITEST !== undefined;

function deepFreeze<T>(o: T): T {
  if (o === null || typeof o !== "object" || Object.isFrozen(o) || ArrayBuffer.isView(o)) return o;
  Object.freeze(o);
  for (const v of Object.values(o as object)) deepFreeze(v);
  return o;
}

/** The servers a batch may write (each op that names one): their cached records go, whether the batch commits or not. */
function serverIdsOf(batch: readonly WriteOp[], into: Set<string>): void {
  for (const o of batch) {
    if (o.op === "server.insert") into.add(o.server.id);
    else if (o.op.startsWith("server.") && "id" in o) into.add(o.id);
  }
}

/** A batch's failure ended the whole group's transaction (SQLite rolled it back). */
class GroupAbortedError extends Error {
  constructor(override readonly cause: unknown) {
    super("the group's transaction was rolled back");
  }
}

function resultOf(fx: Effects): CommitResult {
  return { versions: fx.versions, events: fx.events, touchedServers: fx.touched, hostIds: fx.hostIds, leaseEpochs: fx.leaseEpochs, ...(fx.droppedDeliveries.length > 0 ? { droppedDeliveries: fx.droppedDeliveries } : {}) };
}

export class SqliteStore implements StoreContract {
  readonly engine = "sqlite" as const;
  readonly #listeners = new Set<CommitListener>();
  /** Batches waiting for the next group (commit). */
  #pending: PendingBatch[] = [];
  #flushScheduled = false;
  #closed = false;
  #groups = 0;
  /** Decoded records by id, least recently used first (SERVER_CACHE_MAX). Only reads outside a write fill it; every write of a server empties its entry. */
  readonly #servers = new Map<string, ServerRecord>();
  #grouped = 0;

  constructor(
    readonly description: string,
    private readonly tables: Tables,
    private readonly events: EventTables,
    private readonly alerts: AlertTables,
    private readonly tokens: TokenTables,
    private readonly onListenerError: (err: unknown) => void = () => {},
    /** Webhook deliveries and presence counts (open.ts passes them; without, those operations throw). */
    private readonly cluster?: ClusterTables,
  ) {}

  #cluster(): ClusterTables {
    if (!this.cluster) throw new Error("this SqliteStore was made without ClusterTables; open it with openStore()");
    return this.cluster;
  }

  // ---------------------------------------------------------------- writes

  /**
   * Group commit: a batch waits for the end of the event-loop turn, and the
   * batches of one turn are written in one transaction, each in its own
   * savepoint (a batch whose precondition fails is rolled back alone and
   * rejects; the others commit). Each COMMIT writes every page it touched to
   * the WAL, and one per batch was the manager's largest cost under load
   * (docs/benchmarks.md, issue 17): a turn's batches now share one. A group
   * stops after GROUP_MAX_BATCHES batches or GROUP_BUDGET_MS of work so a
   * long queue never stalls the loop; the rest go in the next turn. Listeners
   * hear the batches in commit order, each before its promise resolves.
   */
  commit(batch: readonly WriteOp[]): Promise<CommitResult> {
    if (this.#closed) return Promise.reject(new Error("the store is closed"));
    return new Promise<CommitResult>((resolve, reject) => {
      this.#pending.push({ batch, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#flushScheduled || this.#pending.length === 0) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Writes the next group of pending batches (see commit). */
  #flush(): void {
    if (this.#pending.length === 0) return;
    const started = performance.now();
    const group: { p: PendingBatch; fx?: Effects; err?: unknown }[] = [];
    const written = new Set<string>();
    try {
      this.tables.transaction(() => {
        while (this.#pending.length > 0 && (group.length === 0 || (group.length < GROUP_MAX_BATCHES && performance.now() - started < GROUP_BUDGET_MS))) {
          const p = this.#pending.shift()!;
          const entry: (typeof group)[number] = { p };
          group.push(entry);
          serverIdsOf(p.batch, written);
          try {
            // Nested: a savepoint, rolled back alone when the batch throws.
            entry.fx = this.tables.transaction(() => this.#applyBatch(p.batch));
          } catch (err) {
            entry.err = err;
            // Some failures (a full disk, I/O) end the whole transaction: nothing of the group stands.
            if (!this.tables.inTransaction()) throw new GroupAbortedError(err);
          }
        }
      });
    } catch (err) {
      for (const id of written) this.#servers.delete(id);
      const cause = err instanceof GroupAbortedError ? err.cause : err;
      for (const e of group) e.p.reject(e.err ?? cause);
      this.#schedule();
      return;
    }
    for (const id of written) this.#servers.delete(id);
    this.#groups++;
    this.#grouped += group.length;
    for (const e of group) {
      if (!e.fx) {
        e.p.reject(e.err);
        continue;
      }
      this.#announce(e.fx);
      e.p.resolve(resultOf(e.fx));
    }
    this.#schedule();
  }

  /** How many groups were written and how many batches they held (group commit, /metrics). */
  groupCommitStats(): { groups: number; batches: number } {
    return { groups: this.#groups, batches: this.#grouped };
  }

  /** Applies one batch (inside a transaction): what it did. */
  #applyBatch(batch: readonly WriteOp[]): Effects {
    // Text as PostgreSQL can hold it too (rows.ts storableText): one read-back on every engine.
    const ops = storable(batch);
    const fx: Effects = { versions: new Map(), events: [], touched: new Set(), serverIds: new Set(), purged: new Map(), hostIds: new Set(), leaseEpochs: new Map(), tokenIds: new Set(), droppedDeliveries: [] };
    for (const o of ops) if (o.op !== "event.append") this.#apply(o, fx);
    // Before the events, as PostgreSQL stamps them under the ledger lock.
    if (fx.serverIds.size > 0) this.tables.stampServerChanges(fx.serverIds, fx.purged);
    // Events last: they explain the changes above, and on PostgreSQL they are appended under the ledger lock.
    for (const o of ops) if (o.op === "event.append") this.#apply(o, fx);
    return fx;
  }

  /** Tells the listeners about a committed batch. */
  #announce(fx: Effects): void {
    if (fx.events.length === 0 && fx.serverIds.size === 0 && fx.hostIds.size === 0 && fx.tokenIds.size === 0) return;
    const committed: Committed = { events: fx.events, serverIds: fx.serverIds, hostIds: fx.hostIds, ...(fx.tokenIds.size > 0 ? { tokenIds: fx.tokenIds } : {}) };
    for (const l of this.#listeners) {
      try {
        l(committed);
      } catch (err) {
        // A listener's failure must not fail a write that is already committed.
        this.onListenerError(err);
      }
    }
  }

  onCommit(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #apply(o: WriteOp, fx: Effects): void {
    const t = this.tables;
    const version = (id: string, v: number | undefined) => {
      if (v === undefined) throw new NotFoundError("server", id);
      fx.versions.set(id, v);
      fx.serverIds.add(id);
    };
    switch (o.op) {
      case "server.insert":
        t.insertServer(o.server);
        fx.versions.set(o.server.id, o.server.version ?? 1);
        fx.serverIds.add(o.server.id);
        return;
      case "server.spec":
        return version(o.id, t.updateServerSpec({ id: o.id, spec: o.spec, generation: o.generation, hostId: o.hostId, deletedAt: o.deletedAt, updatedAt: o.updatedAt }, o.expectVersion));
      case "server.status":
        return version(o.id, t.updateServerStatus(o.id, o.status, o.dataInitialized, o.expectVersion));
      case "server.lifecycle":
        return version(o.id, t.updateLifecycle(o.id, o.lifecycle, o.expectVersion));
      case "server.resetDataInitialized":
        return version(o.id, t.resetDataInitialized(o.id, o.expectVersion));
      case "server.check": {
        const s = t.getServer(o.id);
        if (!s) throw new NotFoundError("server", o.id);
        if (s.version !== o.expectVersion) throw new ConflictError(`server ${s.name} was changed meanwhile (version ${s.version}, expected ${o.expectVersion}): read it again and retry`);
        return;
      }
      case "server.delete": {
        const gone = t.deleteServerRecord(o.id);
        if (!gone) throw new NotFoundError("server", o.id);
        fx.purged.set(o.id, gone);
        fx.serverIds.add(o.id);
        return;
      }
      case "command.insert":
        t.insertCommand({ command: o.command, hostId: o.hostId, createdAt: o.createdAt, deadlineAt: o.deadlineAt });
        return;
      case "command.sent":
        t.markCommandSent(o.id, o.at);
        return;
      case "command.finish":
        if (!t.finishCommand(o.id, o.state, o.at, o.reason, o.message)) throw new ConflictError(`command ${o.id} is no longer open`);
        return;
      case "container.upsert": {
        const sid = t.upsertContainer(o.hostId, o.container, o.at);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.remove": {
        const sid = t.removeContainer(o.hostId, o.containerId);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.removeServer":
        t.removeServerContainers(o.hostId, o.serverId, o.adoptedContainerId);
        fx.touched.add(o.serverId);
        fx.hostIds.add(o.hostId);
        return;
      case "host.inventory":
        for (const id of t.replaceHostInventory(o.hostId, o.containers, o.dataDirs, o.at, o.dataRootEntries, new Set(o.keep ?? []))) fx.touched.add(id);
        fx.hostIds.add(o.hostId);
        return;
      case "dataDir.upsert":
        t.upsertDataDir(o.dataDir);
        fx.touched.add(o.dataDir.serverId);
        return;
      case "dataRootEntry.remove":
        t.removeDataRootEntry(o.hostId, o.name);
        fx.hostIds.add(o.hostId);
        return;
      case "host.insert":
        t.insertHost(o);
        fx.hostIds.add(o.id);
        return;
      case "host.connected":
        t.setHostConnected(o.id, o.facts, o.at);
        fx.hostIds.add(o.id);
        return;
      case "host.heartbeat":
        t.recordHeartbeat(o.id, o.at, o.facts);
        fx.hostIds.add(o.id);
        return;
      case "host.offline":
        t.setHostOffline(o.id);
        fx.hostIds.add(o.id);
        return;
      case "host.offlineUnowned":
        for (const id of t.markUnownedHostsOffline(o.at)) fx.hostIds.add(id);
        return;
      case "host.remove":
        if (!this.tokens.removeHost(o.id, o.at)) throw new NotFoundError("host", o.id, "list hosts with HostService.ListHosts");
        t.deleteHostRows(o.id);
        fx.hostIds.add(o.id);
        return;
      case "enrollment.insert":
        t.insertEnrollmentToken(o);
        return;
      case "enrollment.use":
        if (!t.useEnrollmentToken(o.id, o.hostId, o.at)) throw new ConflictError("this enrollment token was already used; create a new one");
        return;
      case "alert.insert":
        this.alerts.insert(o.alert);
        return;
      case "alert.touch":
        this.alerts.touch(o.id, o.lastSeen, o.message);
        return;
      case "alert.resolve":
        if (!this.alerts.resolve(o.id, o.at)) throw new ConflictError(`alert ${o.id} is no longer firing`);
        return;
      case "alert.acknowledge":
        this.alerts.acknowledge(o.id, o.by, o.at);
        return;
      case "alert.mute":
        this.alerts.mute(o.id, o.until);
        return;
      case "token.insert":
        this.tokens.insert(o.token, o.secretHash);
        fx.tokenIds.add(o.token.id);
        return;
      case "token.revoke":
        if (!this.tokens.revoke(o.id, o.at)) throw new NotFoundError("token", o.id);
        fx.tokenIds.add(o.id);
        return;
      case "token.touch":
        this.tokens.touch(o.id, o.at);
        return;
      case "project.ensure":
        this.tokens.ensureProject(o.name, o.at);
        return;
      case "lease.acquire":
        t.acquireLease(o.name, o.holder, o.ttlMs, o.at);
        return;
      case "lease.release":
        t.releaseLease(o.name, o.holder);
        return;
      case "host.take": {
        const name = hostLeaseName(o.hostId);
        fx.leaseEpochs.set(name, t.takeLease(name, o.holder, o.ttlMs, o.at));
        fx.hostIds.add(o.hostId);
        return;
      }
      case "host.renew":
        // Not a change anyone follows (a renewal every few seconds per host): no hostIds.
        if (!t.renewLeaseTerm(hostLeaseName(o.hostId), o.holder, o.epoch, o.ttlMs, o.at)) throw ownershipLost(t, o);
        return;
      case "host.release":
        t.endLeaseTerm(hostLeaseName(o.hostId), o.holder, o.epoch);
        fx.hostIds.add(o.hostId);
        return;
      case "host.checkOwner": {
        const cur = t.getLease(hostLeaseName(o.hostId));
        if (!cur || cur.holder !== o.holder || cur.epoch !== o.epoch || cur.expiresAt <= o.at) throw ownershipLost(t, o);
        return;
      }
      case "webhook.enqueue":
        fx.droppedDeliveries.push(...this.#cluster().enqueue(o.delivery, o.maxPending));
        return;
      case "webhook.retry":
        this.#cluster().retry(o.id, o.urlKey, o.attempt, o.nextAttemptAt, o.lastError);
        return;
      case "webhook.done":
        this.#cluster().done(o.id, o.urlKey, o.attempt);
        return;
      case "lease.pruneExpired":
        this.#cluster().pruneExpiredLeases(o.prefix, o.before);
        return;
      case "meta.set":
        t.setMeta(o.key, o.value);
        return;
      case "event.append": {
        fx.events.push(appendedEvent(t.appendEvent(o.event, o.at), o.at, o.event));
        return;
      }
      default: {
        const never: never = o;
        throw new Error(`unknown write operation ${JSON.stringify(never)}`);
      }
    }
  }

  // ---------------------------------------------------------------- reads

  async clusterId() { return this.tables.managerId(); }
  async getMeta(key: string) { return this.tables.getMeta(key); }
  async getLease(name: string) { return this.tables.getLease(name); }
  async liveHostOwners(at: number) { return this.tables.liveHostOwners(at); }
  async countLiveLeases(prefix: string, at: number) { return this.#cluster().countLiveLeases(prefix, at); }
  async dueWebhookDeliveries(at: number, limit: number) { return this.#cluster().due(at, limit); }
  async nextWebhookDeliveryAt() { return this.#cluster().nextAt(); }
  async countWebhookDeliveries() { return this.#cluster().count(); }
  async probeWrite(value: string, lockWaitMs: number) { this.tables.probeWrite(value, lockWaitMs); }
  async close() {
    // What was committed before the close is written, not lost.
    while (this.#pending.length > 0) this.#flush();
    this.#closed = true;
    this.tables.close();
  }

  async getServer(id: string) {
    const hit = this.#servers.get(id);
    if (hit) {
      // Most recently used last.
      this.#servers.delete(id);
      this.#servers.set(id, hit);
      return hit;
    }
    const s = this.tables.getServer(id);
    return s && this.#keep(s);
  }

  /** Keeps a record just read outside any write (getServer, serverChangesSince) as the latest decoded one. */
  #keep(s: ServerRecord): ServerRecord {
    this.#servers.delete(s.id);
    this.#servers.set(s.id, FREEZE_CACHED ? deepFreeze(s) : s);
    if (this.#servers.size > SERVER_CACHE_MAX) this.#servers.delete(this.#servers.keys().next().value!);
    return s;
  }
  async serverHostId(id: string) { return this.tables.serverHostId(id); }
  async findServerByName(project: string, name: string) { return this.tables.findServerByName(project, name); }
  async listServers(f?: Parameters<Tables["listServers"]>[0]) { return this.tables.listServers(f, this.#decode); }
  async serverIdsOnHost(hostId: string) { return this.tables.serverIdsOnHost(hostId); }
  async serverChangeHead() { return this.tables.serverChangeHead(); }
  async serverChangesSince(after: number, limit: number) {
    // The change feed reads what was just written, and the reconciler reads the same records next.
    return this.tables.serverChangesSince(after, limit, this.#decode);
  }

  /** A row read outside any write as its record: the kept one when it is of the row's version, else decoded and kept. */
  readonly #decode = (r: ServerRow): ServerRecord => {
    const hit = this.#servers.get(r.id);
    return hit && hit.version === Number(r.version) ? hit : this.#keep(serverFromRow(r));
  };
  async allServerIds() { return this.tables.allServerIds(); }
  async countServersByHost() { return this.tables.countServersByHost(); }
  async serverPlacements(page?: IdPage) { return this.tables.serverPlacements(page); }
  async serverFacts(page?: IdPage) { return this.alerts.serverFacts(page); }

  async getHost(id: string) { return this.tables.getHost(id); }
  async listHosts() { return this.tables.listHosts(); }
  async getEnrollmentToken(tokenHash: string) { return this.tables.getEnrollmentToken(tokenHash); }

  async containersForServer(hostId: string, serverId: string) { return this.tables.containersForServer(hostId, serverId); }
  async observedContainer(hostId: string, containerId: string) { return this.tables.observedContainer(hostId, containerId); }
  async listOrphanCandidates(managerId: string, includeUnlabelled: boolean) { return this.tables.listOrphanCandidates(managerId, includeUnlabelled); }
  async observedCounts(hostId: string) { return this.tables.observedCounts(hostId); }
  async getDataDir(hostId: string, serverId: string) { return this.tables.getDataDir(hostId, serverId); }
  async listDataRootEntries(hostId?: string) { return this.tables.listDataRootEntries(hostId); }

  async getCommand(id: string) { return this.tables.getCommand(id); }
  async openCommandForServer(serverId: string) { return this.tables.openCommandForServer(serverId); }
  async lastFinishedCommand(serverId: string) { return this.tables.lastFinishedCommand(serverId); }
  async openCommandsForHost(hostId: string) { return this.tables.openCommandsForHost(hostId); }
  async serverIdsWithOpenCommands() { return this.tables.serverIdsWithOpenCommands(); }

  async listNewestFirst(q: Parameters<EventTables["listNewestFirst"]>[0]) { return this.events.listNewestFirst(q); }
  async readForward(q: Parameters<EventTables["readForward"]>[0]) { return this.events.readForward(q); }
  async lastEventId() { return this.events.lastId(); }
  async firstEventId() { return this.events.firstId(); }

  async getAlert(id: string) { return this.alerts.get(id); }
  async listFiringAlerts() { return this.alerts.listFiring(); }
  async listAlerts(f: Parameters<AlertTables["list"]>[0]) { return this.alerts.list(f); }
  async latestMute(rule: string, subject: string) { return this.alerts.latestMute(rule, subject); }

  async countTokens() { return this.tokens.count(); }
  async findTokenBySecretHash(secretHash: string) { return this.tokens.findBySecretHash(secretHash); }
  async getToken(id: string) { return this.tokens.get(id); }
  async listTokens(f?: { project?: string }) { return this.tokens.list(f); }

  async pruneEventsOlderThan(cutoff: number, limit: number) { return this.events.pruneOlderThan(cutoff, limit); }
  async pruneEventsBeyondCount(keep: number, limit: number) { return this.events.pruneBeyondCount(keep, limit); }
  async pruneFinishedCommands(before: number, limit: number) { return this.tables.pruneFinishedCommands(before, limit); }
  async pruneEnrollmentTokens(before: number, limit: number) { return this.tables.pruneEnrollmentTokens(before, limit); }
  async pruneResolvedAlerts(cutoff: number, limit: number) { return this.alerts.pruneResolved(cutoff, limit); }
}

/** store.ts host.renew / host.checkOwner refused: says who holds the host now. */
function ownershipLost(t: Tables, o: { hostId: string; holder: string; epoch: number }): HostOwnershipLostError {
  const cur = t.getLease(hostLeaseName(o.hostId));
  return new HostOwnershipLostError(o.hostId, o.holder, o.epoch, cur && { holder: cur.holder, epoch: cur.epoch, expiresAt: cur.expiresAt });
}
