/**
 * What the agents connected to this manager report about usage: the latest
 * sample of each running server and each host, their histories
 * (UsageHistory), and the WatchUsage subscribers.
 *
 * Samples and the 1 h history are this manager's agents' only (a sample per
 * server every 10 s would be most of the store's writes at fleet scale). The
 * 5-minute buckets go to the store (usage_buckets) once they close: flush()
 * runs a few seconds after every 5-minute boundary and writes every key's
 * closed buckets in one batch (usage.write), which also prunes buckets older
 * than a day and a margin. history() answers from memory and the store
 * (merge.ts), so the 24 h window survives a restart and every manager of a
 * database serves every host's; the 1 h window falls back to 5-minute buckets
 * where this manager has no samples.
 *
 * Bounded: a history per server and host that reported (28 KiB each),
 * dropped when the server is purged or the host removed, or after a day
 * without a sample; at most MAX_CONTAINERS samples taken from one report.
 * A subscriber holds at most one pending sample per server and host (a slow
 * reader gets the latest, not a backlog).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { UsageReport } from "@berth/proto/berth/v1/agent_pb.js";
import { HostUsageSchema, ServerUsageSchema, UsageSampleSchema, type HostUsage, type ServerUsage, type UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import type { Committed, Store, UsageBucketRecord, UsageSubjectKind } from "../store/store.js";
import { COARSE_STEP_MS, UsageHistory, type UsagePoint, type UsageSample as HistorySample, type UsageWindow } from "./history.js";
import { fillHour, mergeBuckets } from "./merge.js";

/** Container samples taken from one report at most (far above a host's servers). */
export const MAX_CONTAINERS = 5000;
/** A history without a sample for this long is dropped (past the day window). */
const IDLE_DROP_MS = 25 * 3_600_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** Stored buckets are pruned once they started this long before the day window (a margin for clocks and late flushes). */
export const STORE_KEEP_MS = DAY_MS + HOUR_MS;
/** The flush runs this long after each 5-minute boundary (the buckets that ended at it are closed by then). */
export const FLUSH_DELAY_MS = 5_000;

export interface UsageUpdate {
  servers: ServerUsage[];
  hosts: HostUsage[];
  /** Servers no longer measured: stopped, moved to another host, or their host went away. */
  goneServerIds: string[];
}

interface Latest {
  hostId: string;
  project: string;
  usage: ServerUsage;
}

export interface UsageFeedOptions {
  /** A server's project (for scoping watchers), asked once per server; undefined: unknown (its samples are left out). */
  projectOf(serverId: string): Promise<string | undefined>;
  /** Where the 5-minute buckets are kept (flush, history); without, the histories are this manager's memory only. */
  store?: Pick<Store, "commit" | "usageBuckets">;
  /** A flush failed (the buckets stay and go with the next one). */
  onFlushError?: (err: unknown) => void;
  now?: () => number;
}

/** A history as GetUsage answers it: `coarse` when the 1 h window holds 5-minute buckets (no samples here for part or all of it). */
export interface UsageHistoryAnswer {
  points: UsageSample[];
  coarse: boolean;
}

/** What a watcher may see: every project (null) or one. */
export type UsageScope = { project: string | null; hosts: boolean };

export class UsageFeed {
  private readonly serverHistory: UsageHistory;
  private readonly hostHistory: UsageHistory;
  private readonly servers = new Map<string, Latest>();
  private readonly hosts = new Map<string, HostUsage>();
  /** The servers each host reported running in its last report. */
  private readonly onHost = new Map<string, Set<string>>();
  private readonly projects = new Map<string, string>();
  private readonly watchers = new Set<(u: UsageUpdate) => void>();
  private readonly now: () => number;
  private lastSweep = 0;
  private flushing: Promise<unknown> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: UsageFeedOptions) {
    this.now = opts.now ?? Date.now;
    this.serverHistory = new UsageHistory({ now: this.now });
    this.hostHistory = new UsageHistory({ now: this.now });
  }

  /**
   * One agent report. `placed`: the servers whose record places them on this
   * host (a sample of any other is not kept: an agent speaks for its own
   * servers only). Returns how many samples were refused that way.
   */
  async record(hostId: string, report: UsageReport, placed: ReadonlySet<string>): Promise<{ unknown: number }> {
    const at = this.now();
    let unknown = 0;
    const update: UsageUpdate = { servers: [], hosts: [], goneServerIds: [] };
    if (report.host) {
      const sample = stamp(report.host, at);
      const usage = create(HostUsageSchema, { hostId, sample });
      this.hosts.set(hostId, usage);
      this.hostHistory.add(hostId, historySample(sample, at));
      update.hosts.push(usage);
    }
    const now = new Set<string>();
    for (const c of report.containers.slice(0, MAX_CONTAINERS)) {
      if (!placed.has(c.serverId) || !c.sample || now.has(c.serverId)) {
        unknown++;
        continue;
      }
      let project = this.projects.get(c.serverId);
      if (project === undefined) {
        project = await this.opts.projectOf(c.serverId);
        if (project === undefined) {
          unknown++;
          continue;
        }
        this.projects.set(c.serverId, project);
      }
      now.add(c.serverId);
      const sample = stamp(c.sample, at);
      const usage = create(ServerUsageSchema, { serverId: c.serverId, hostId, sample });
      this.servers.set(c.serverId, { hostId, project, usage });
      this.serverHistory.add(c.serverId, historySample(sample, at));
      update.servers.push(usage);
    }
    unknown += Math.max(0, report.containers.length - MAX_CONTAINERS);
    for (const id of this.onHost.get(hostId) ?? []) if (!now.has(id)) this.forgetLatest(id, hostId, update);
    this.onHost.set(hostId, now);
    this.publish(update);
    if (at - this.lastSweep > 600_000) this.sweep(at);
    return { unknown };
  }

  /** The host's agent stream ended: nothing of it is current any more (the histories stay). */
  hostGone(hostId: string): void {
    const update: UsageUpdate = { servers: [], hosts: [], goneServerIds: [] };
    for (const id of this.onHost.get(hostId) ?? []) this.forgetLatest(id, hostId, update);
    this.onHost.delete(hostId);
    this.hosts.delete(hostId);
    this.publish(update);
  }

  /** Follows the store's commits: a purged server's or a removed host's usage goes. */
  onCommit(c: Committed): void {
    for (const e of c.events) {
      if (e.type === "server.purged" && e.serverId) this.dropServer(e.serverId);
      else if (e.type === "host.removed" && e.hostId) {
        this.hostGone(e.hostId);
        this.hostHistory.drop(e.hostId);
      }
    }
  }

  latestServer(serverId: string): ServerUsage | undefined {
    return this.servers.get(serverId)?.usage;
  }

  latestHost(hostId: string): HostUsage | undefined {
    return this.hosts.get(hostId);
  }

  /**
   * The history of a server or a host over `window`, as wire samples (oldest
   * first): the day's 5-minute buckets from the store and memory (merge.ts);
   * the hour's samples held here, preceded by the buckets of the part of the
   * hour this manager has no samples for.
   */
  async history(kind: UsageSubjectKind, id: string, window: UsageWindow): Promise<UsageHistoryAnswer> {
    const h = kind === "server" ? this.serverHistory : this.hostHistory;
    const now = this.now();
    const after = now - (window === "1h" ? HOUR_MS : DAY_MS);
    const stored = this.opts.store ? await this.opts.store.usageBuckets(kind, id, after, now) : [];
    // Memory after the store: a bucket being flushed is marked written before its write
    // commits (flush), so a row the read saw is never counted from memory too.
    const buckets = mergeBuckets(stored, h.buckets(id, after));
    if (window === "24h") return { points: buckets.map((p) => pointSample(p, kind, true)), coarse: false };
    const { points, buckets: n } = fillHour(h.window(id, "1h"), buckets);
    return { points: points.map((p, i) => pointSample(p, kind, i < n)), coarse: n > 0 };
  }

  /**
   * Writes every key's closed buckets not yet in the store (with `open`, the
   * buckets still filling too: at shutdown) in one batch, and prunes stored
   * buckets past STORE_KEEP_MS (no batch when there is no bucket to write);
   * a flush already running is waited for, not doubled. What was written is
   * never written again; on failure it stays for the next flush. Returns how
   * many buckets went.
   */
  async flush(opts: { open?: boolean } = {}): Promise<number> {
    const store = this.opts.store;
    if (!store) return 0;
    while (this.flushing) await this.flushing.catch(() => {});
    const now = this.now();
    // Marked written now, before the write commits: history() then never counts a bucket
    // from memory and from the store both (a failed write restores the marks).
    const taken: { history: UsageHistory; key: string; before: number }[] = [];
    const rows: UsageBucketRecord[] = [];
    for (const [kind, history] of [["server", this.serverHistory], ["host", this.hostHistory]] as const) {
      for (const u of history.unflushed(now, opts)) {
        taken.push({ history, key: u.key, before: history.markFlushed(u.key, u.upTo) });
        for (const b of u.buckets) rows.push({ kind, subjectId: u.key, samples: b.samples, ...b.point });
      }
    }
    // Nothing to write, nothing to prune: this manager wrote no bucket since its last flush.
    if (rows.length === 0) return 0;
    const write = store.commit([{ op: "usage.write", buckets: rows, pruneBefore: now - STORE_KEEP_MS, pruneLimit: Math.max(1000, 2 * rows.length) }]);
    this.flushing = write;
    try {
      await write;
    } catch (err) {
      for (const t of taken) t.history.restoreFlushed(t.key, t.before);
      throw err;
    } finally {
      this.flushing = undefined;
    }
    return rows.length;
  }

  /** Flushes a few seconds after every 5-minute boundary until stop(). */
  start(): void {
    if (this.timer || !this.opts.store) return;
    const schedule = () => {
      const now = this.now();
      const next = (Math.floor(now / COARSE_STEP_MS) + 1) * COARSE_STEP_MS + FLUSH_DELAY_MS;
      this.timer = setTimeout(() => {
        this.flush().catch((err: unknown) => this.opts.onFlushError?.(err)).finally(() => {
          if (this.timer) schedule();
        });
      }, next - now);
      this.timer.unref();
    };
    schedule();
  }

  /** Stops the timer and writes what is held, open buckets included (a restart's 24 h window then misses nothing measured here). */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.opts.store) await this.flush({ open: true }).catch((err: unknown) => this.opts.onFlushError?.(err));
  }

  /** Every current sample the scope may see (a watcher's first message). */
  snapshot(scope: UsageScope): UsageUpdate {
    const servers: ServerUsage[] = [];
    for (const l of this.servers.values()) if (scope.project === null || l.project === scope.project) servers.push(l.usage);
    return { servers, hosts: scope.hosts ? [...this.hosts.values()] : [], goneServerIds: [] };
  }

  /** Calls `fn` with each update, cut to `scope`; returns the unsubscribe. */
  watch(scope: UsageScope, fn: (u: UsageUpdate) => void): () => void {
    const listener = (u: UsageUpdate) => {
      const cut: UsageUpdate = {
        servers: scope.project === null ? u.servers : u.servers.filter((s) => this.projects.get(s.serverId) === scope.project),
        hosts: scope.hosts ? u.hosts : [],
        goneServerIds: scope.project === null ? u.goneServerIds : u.goneServerIds.filter((id) => this.projects.get(id) === scope.project),
      };
      if (cut.servers.length + cut.hosts.length + cut.goneServerIds.length > 0) fn(cut);
    };
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  /** For /metrics: every host's latest sample. */
  hostSamples(): Iterable<HostUsage> {
    return this.hosts.values();
  }

  /** For /metrics (behind a flag): every running server's latest sample with its project. */
  serverSamples(): Iterable<{ project: string; usage: ServerUsage }> {
    return this.servers.values();
  }

  /** Histories held (servers, hosts): what bounds this feed's memory. */
  get sizes(): { servers: number; hosts: number } {
    return { servers: this.serverHistory.size, hosts: this.hostHistory.size };
  }

  private forgetLatest(serverId: string, hostId: string, update: UsageUpdate): void {
    const l = this.servers.get(serverId);
    // Moved to another host meanwhile: that host's report is the current one.
    if (!l || l.hostId !== hostId) return;
    this.servers.delete(serverId);
    update.goneServerIds.push(serverId);
  }

  private dropServer(serverId: string): void {
    const l = this.servers.get(serverId);
    if (l) {
      this.servers.delete(serverId);
      this.onHost.get(l.hostId)?.delete(serverId);
      this.publish({ servers: [], hosts: [], goneServerIds: [serverId] });
    }
    this.serverHistory.drop(serverId);
    this.projects.delete(serverId);
  }

  private sweep(at: number): void {
    this.lastSweep = at;
    for (const id of this.serverHistory.idleKeys(at - IDLE_DROP_MS)) if (!this.servers.has(id)) this.dropServer(id);
    for (const id of this.hostHistory.idleKeys(at - IDLE_DROP_MS)) if (!this.hosts.has(id)) this.hostHistory.drop(id);
  }

  private publish(u: UsageUpdate): void {
    if (u.servers.length + u.hosts.length + u.goneServerIds.length === 0) return;
    for (const w of this.watchers) w(u);
  }
}

const NON_NEGATIVE = (n: number | undefined): number | undefined => (n === undefined || !Number.isFinite(n) || n < 0 ? undefined : n);

/**
 * The agent's sample as the manager keeps it: stamped with the manager's
 * receive time (an agent's clock may be off; samples are taken moments
 * before they are sent), with figures that are not finite non-negative
 * numbers left out, and the history-only field cleared.
 */
function stamp(s: UsageSample, at: number): UsageSample {
  const out = create(UsageSampleSchema, { time: timestampFromMs(at) });
  out.cpuPercent = NON_NEGATIVE(s.cpuPercent);
  out.memoryBytes = s.memoryBytes;
  out.memoryLimitBytes = s.memoryLimitBytes;
  out.netRxBytesPerSecond = NON_NEGATIVE(s.netRxBytesPerSecond);
  out.netTxBytesPerSecond = NON_NEGATIVE(s.netTxBytesPerSecond);
  out.ioReadBytesPerSecond = NON_NEGATIVE(s.ioReadBytesPerSecond);
  out.ioWriteBytesPerSecond = NON_NEGATIVE(s.ioWriteBytesPerSecond);
  out.pids = s.pids;
  out.pidsLimit = s.pidsLimit;
  out.load1 = NON_NEGATIVE(s.load1);
  out.load5 = NON_NEGATIVE(s.load5);
  out.load15 = NON_NEGATIVE(s.load15);
  out.cpus = s.cpus;
  out.diskTotalBytes = s.diskTotalBytes;
  out.diskFreeBytes = s.diskFreeBytes;
  return out;
}

/**
 * A history sample: CPU and memory are needed (a container's first sample
 * has no CPU rate yet: the history starts with its second); rates that could
 * not be measured count as 0.
 */
function historySample(s: UsageSample, at: number): HistorySample {
  return {
    at,
    cpuPercent: s.cpuPercent ?? Number.NaN,
    memoryBytes: s.memoryBytes === undefined ? Number.NaN : Number(s.memoryBytes),
    ...(s.memoryLimitBytes !== undefined ? { memoryLimitBytes: Number(s.memoryLimitBytes) } : {}),
    netRxBps: s.netRxBytesPerSecond ?? 0,
    netTxBps: s.netTxBytesPerSecond ?? 0,
    ioReadBps: s.ioReadBytesPerSecond ?? 0,
    ioWriteBps: s.ioWriteBytesPerSecond ?? 0,
    pids: s.pids ?? 0,
  };
}

/** A history point on the wire (`bucket`: a 5-minute bucket, with its peak); a host's have no network, IO or pids figures. */
function pointSample(p: UsagePoint, kind: UsageSubjectKind, bucket: boolean): UsageSample {
  const s = create(UsageSampleSchema, { time: timestampFromMs(p.at), cpuPercent: p.cpuPercent, memoryBytes: BigInt(Math.round(p.memoryBytes)) });
  if (p.memoryLimitBytes !== undefined) s.memoryLimitBytes = BigInt(Math.round(p.memoryLimitBytes));
  if (bucket) s.memoryMaxBytes = BigInt(Math.round(p.memoryMaxBytes));
  if (kind === "server") {
    s.netRxBytesPerSecond = p.netRxBps;
    s.netTxBytesPerSecond = p.netTxBps;
    s.ioReadBytesPerSecond = p.ioReadBps;
    s.ioWriteBytesPerSecond = p.ioWriteBps;
    s.pids = Math.round(p.pids);
  }
  return s;
}
