import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { cpus, hostname, totalmem } from "node:os";
import type { Logger } from "pino";
import { AgentMessageSchema, CommandKind, ContainerInfoSchema, type ContainerInfo, type DataDir, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import type { DataRoot } from "./data/data-root.js";
import type { BackupDirs } from "./data/backup-dir.js";
import { BackupJobs, type JobProgress } from "./data/backup-jobs.js";
import { DirSizes } from "./data/dir-sizes.js";
import { dataDir, Executor, type PullReport } from "./executor.js";
import { exitCauseOf, signalNumber, type KillSeen } from "./exit-cause.js";
import { diffContainers } from "./inventory-diff.js";
import { KeyedQueue } from "./keyed-queue.js";
import { Backoff } from "./link/backoff.js";
import { ManagerLink } from "./link/manager-link.js";
import { reportable, splitInventory } from "./link/report-size.js";
import { LogStreams } from "./log-streams.js";
import { ReadyWatches } from "./ready-watch.js";
import { FileRequests } from "./files/file-requests.js";
import type { ContainerRuntime, RuntimeEvent } from "./runtime/container-runtime.js";
import { messageOf } from "./runtime/docker-runtime.js";
import { LockedRuntime } from "./runtime/locked-runtime.js";
import { UsageSampler, type RunningContainer } from "./usage/sampler.js";

export const AGENT_VERSION = "0.1.0";

export interface AgentOptions {
  /** The managers to dial, in order; the link fails over between them (link/failover.ts). */
  managerUrls: readonly string[];
  /** The host's credential; `caPem` is the manager CA pinned at enrollment (https only). */
  credential: { hostId: string; secret: string; caPem?: string };
  runtime: ContainerRuntime;
  dataRoot: DataRoot;
  /** Where backup archives may be written (--backup-dir); without, backups and restores fail with Unsupported. */
  backupDirs?: BackupDirs;
  log: Logger;
  /** Full inventory period, to heal anything an event stream missed. */
  inventoryIntervalMs?: number;
  /** Heartbeat (and engine probe) period until a manager's Welcome names its own (default 5 s). */
  heartbeatIntervalMs?: number;
  /** The longest wait between rounds of reconnect attempts (default 30 s; link/manager-link.ts). */
  reconnectMaxMs?: number;
  /** How long the engine may take to answer the reachability probe (every heartbeat). */
  dockerProbeTimeoutMs?: number;
  /** Free bytes on the data root that file uploads, copies and extractions never use (default 256 MiB). */
  fileReserveBytes?: number;
  /** How often the host's and the running containers' usage is sampled and sent (default 10 s; 0: never). */
  usageIntervalMs?: number;
  /** A changed data directory is measured again at most this often (default SIZE_MIN_REMEASURE_MS, 60 s). */
  dataSizeMinIntervalMs?: number;
}

/** Unmanaged containers reported per inventory at most (bounds the message on crowded hosts). */
const MAX_UNMANAGED = 1000;
/** Project networks in one inventory (the manager keeps as many per host). */
const MAX_NETWORKS = 256;

/** How long an inventory waits for new runs' output to be scanned for their ready patterns. */
const READY_SCAN_WAIT_MS = 3_000;

/** At most one pull-progress message per server per this many ms (plus the last one). */
const PULL_REPORT_EVERY_MS = 1000;

type Body = NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>;

/**
 * The host daemon: reports what the engine and the data root hold, streams
 * Docker events as deltas, and applies the manager's commands.
 */
export class Agent {
  private readonly link: ManagerLink;
  private readonly executor: Executor;
  private readonly jobs: BackupJobs | undefined;
  /** The engine, one operation per container at a time (kill bypasses). */
  private readonly runtime: ContainerRuntime;
  private readonly logStreams: LogStreams;
  /** Running containers with a ready pattern, watched until a line matches (ContainerInfo.ready_time). */
  private readonly ready: ReadyWatches;
  /** Measures the data directories in the background; the inventory reports their last known sizes. */
  private readonly sizes: DirSizes;
  /** FileService's operations on data directories (uploads are sessions here). */
  private readonly files: FileRequests;
  private readonly usage: UsageSampler;
  private usageRunning = false;
  private readonly abort = new AbortController();
  private dockerReachable = false;
  private dockerVersion = "";
  /** Aborts the current Docker events subscription (it is then re-made and followed by a resync). */
  private eventsAbort: AbortController | undefined;
  private probing = false;
  private dockerWarned = false;
  private inventoryRunning: Promise<void> | undefined;
  private inventoryAgain = false;
  /** What the agent believes each container looks like: the last inventory plus events since. */
  private readonly believed = new Map<string, ContainerInfo>();
  /**
   * Containers touched by Docker events while an inventory is being built (null
   * when none is): their listed state may be older than an event already sent,
   * so they are inspected again before the inventory goes out.
   */
  private touchedDuringInventory: Set<string> | null = null;
  /** Ids seen destroyed (ids are never reused): never report them again. */
  private readonly destroyed = new Map<string, number>();
  private readonly pullReportedAt = new Map<string, number>();
  private timers: NodeJS.Timeout[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatMs = 0;
  /** Docker events in line per container. */
  private readonly events = new KeyedQueue();
  /** Recent kill/stop requests per container, with their signals: a die right after a stop request was someone's stop. */
  private readonly killedAt = new Map<string, KillSeen[]>();
  private revoked: ((message: string) => void) | undefined;
  /** Observation order (AgentMessage.seq): taken when an observation starts, so older ones get lower numbers. */
  private seq = 0n;
  /** From the manager's Welcome: whose containers these are, and how far its clock is from ours. */
  private managerId: string | undefined;
  private managerClockOffsetMs = 0;
  private inventorySeq = 0;
  readonly done: Promise<{ revoked: boolean; message: string }>;

  constructor(private readonly opts: AgentOptions) {
    this.runtime = new LockedRuntime(opts.runtime, {
      onEscalate: (id) => opts.log.warn({ container: id }, "stop did not finish past its timeout; killing the container"),
    });
    const managerNow = () => Date.now() + this.managerClockOffsetMs;
    this.jobs = opts.backupDirs ? new BackupJobs(opts.dataRoot, opts.backupDirs, (p) => this.reportProgress(p), managerNow) : undefined;
    this.executor = new Executor(
      this.runtime,
      opts.dataRoot,
      opts.log.child({ part: "executor" }),
      (p) => this.reportPull(p),
      { managerId: () => this.managerId, now: managerNow },
      this.jobs,
    );
    this.sizes = new DirSizes(opts.dataRoot, opts.log.child({ part: "sizes" }), opts.dataSizeMinIntervalMs !== undefined ? { minRemeasureMs: opts.dataSizeMinIntervalMs } : {});
    this.files = new FileRequests({ dataRoot: opts.dataRoot, log: opts.log.child({ part: "files" }), ...(opts.fileReserveBytes !== undefined ? { reserveBytes: opts.fileReserveBytes } : {}) });
    this.usage = new UsageSampler({
      dataRoot: opts.dataRoot.root,
      running: () => this.runningContainers(),
      initPid: (id) => this.runtime.initPid?.(id) ?? Promise.resolve(undefined),
    });
    this.logStreams = new LogStreams(
      this.runtime,
      (chunk) => this.link.sendPaced(create(AgentMessageSchema, { body: { case: "logChunk", value: chunk } })),
      opts.log.child({ part: "logs" }),
      this.files,
    );
    this.ready = new ReadyWatches(this.runtime, (id) => this.onReadyMatched(id), opts.log.child({ part: "ready" }));
    this.link = new ManagerLink(
      opts.managerUrls,
      opts.credential,
      {
        onOpen: () => void this.sendHelloAndInventory(),
        onMessage: (m) => this.onManagerMessage(m),
        // Nobody reads the logs any more; the manager ended its callers' streams.
        onClose: () => this.logStreams.closeAll(),
        onRevoked: (message) => this.revoked?.(message),
      },
      opts.log.child({ part: "link" }),
      opts.reconnectMaxMs !== undefined ? { reconnectMaxMs: opts.reconnectMaxMs } : {},
    );
    this.done = new Promise((resolve) => {
      this.revoked = (message) => {
        // Resolve before stop(): stopping aborts, and the abort listener would resolve as "stopped".
        resolve({ revoked: true, message });
        this.stop();
      };
      this.abort.signal.addEventListener("abort", () => resolve({ revoked: false, message: "stopped" }));
    });
  }

  async start(): Promise<void> {
    for (const warning of await this.opts.dataRoot.init()) this.opts.log.warn({ dataRoot: this.opts.dataRoot.root }, warning);
    // No backup or restore runs yet: whatever one left half-written goes (the manager hears AgentRestarted).
    const swept = await this.jobs?.sweep().catch((err: unknown) => {
      this.opts.log.warn({ err: messageOf(err) }, "could not remove what an interrupted backup or restore left");
      return 0;
    });
    if (swept) this.opts.log.info({ files: swept }, "removed partial backup archives an interrupted backup left");
    // No copy or extraction runs yet: what one left in the work directory goes.
    await this.files.sweep().catch((err: unknown) => this.opts.log.warn({ err: messageOf(err) }, "could not remove what an interrupted file copy or extraction left"));
    await this.refreshDocker();
    void this.watchEvents();
    this.link.start();
    this.sizes.start();
    this.every(this.opts.inventoryIntervalMs ?? 30_000, () => void this.sendInventory({ periodic: true }));
    this.beatEvery(this.opts.heartbeatIntervalMs ?? 5_000);
    const usageMs = this.opts.usageIntervalMs ?? 10_000;
    if (usageMs > 0) this.every(usageMs, () => void this.sendUsage());
  }

  /** The running berth containers, as the last inventory and the events since tell. */
  private runningContainers(): RunningContainer[] {
    const out: RunningContainer[] = [];
    for (const c of this.believed.values()) {
      const serverId = c.labels["berth.server"];
      if (c.state !== "running" || !serverId) continue;
      out.push({ id: c.id, serverId, startedMs: c.startedTime ? timestampMs(c.startedTime) : 0 });
    }
    return out;
  }

  /** One round of the usage sampler, sent; skipped while not connected or while the previous round still runs. */
  private async sendUsage(): Promise<void> {
    if (this.usageRunning || !this.link.connected) return;
    this.usageRunning = true;
    try {
      const report = await this.usage.sample();
      this.send({ case: "usage", value: report });
    } catch (err) {
      this.opts.log.warn({ err: messageOf(err) }, "usage sampling failed");
    } finally {
      this.usageRunning = false;
    }
  }

  /**
   * Heartbeats (each with an engine probe) every `ms`. The manager's Welcome
   * names the interval it expects (its silence timeout is a few of them), so
   * each Welcome may re-arm the timer.
   */
  private beatEvery(ms: number): void {
    if (ms === this.heartbeatMs || this.abort.signal.aborted) return;
    this.heartbeatMs = ms;
    if (this.heartbeatTimer) {
      clearInterval(this.heartbeatTimer);
      this.timers = this.timers.filter((t) => t !== this.heartbeatTimer);
    }
    this.heartbeatTimer = setInterval(() => {
      void this.sendHeartbeat();
      void this.probeDocker();
    }, ms);
    this.timers.push(this.heartbeatTimer);
  }

  stop(): void {
    this.files.closeAll();
    this.ready.stopAll();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (!this.abort.signal.aborted) this.abort.abort();
    void this.sizes.stop();
    this.link.stop();
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    this.timers.push(t);
  }

  /** `seq`: reserved when the observation began (inventory, event); a fresh one otherwise. */
  private send(body: Body, seq = this.nextSeq()): void {
    this.link.send(create(AgentMessageSchema, { body, seq }));
  }

  private nextSeq(): bigint {
    return ++this.seq;
  }

  private async refreshDocker(): Promise<void> {
    try {
      this.dockerVersion = await this.runtime.version(this.opts.dockerProbeTimeoutMs ?? 5_000);
      this.dockerReachable = true;
      this.dockerWarned = false;
    } catch (err) {
      this.dockerReachable = false;
      // Once per outage, not on every probe.
      if (!this.dockerWarned) this.opts.log.warn({ err: messageOf(err) }, "Docker engine unreachable");
      this.dockerWarned = true;
    }
  }

  /**
   * Asks the engine for its version on every heartbeat tick, bounded by a
   * short timeout: the only way to notice an engine that is hung (the events
   * stream of a hung engine just stays silent). Losing it restarts the events
   * subscription; getting it back resyncs.
   */
  private async probeDocker(): Promise<void> {
    if (this.probing || this.abort.signal.aborted) return;
    this.probing = true;
    try {
      const was = this.dockerReachable;
      await this.refreshDocker();
      if (was && !this.dockerReachable) {
        this.sendHeartbeatNow();
        // The stream may look alive while the engine is gone; make it resubscribe (and resync then).
        this.eventsAbort?.abort();
      } else if (!was && this.dockerReachable) {
        this.opts.log.info({ docker: this.dockerVersion }, "Docker engine reachable again; resyncing");
        this.sendHeartbeatNow();
        this.resync();
      }
    } finally {
      this.probing = false;
    }
  }

  /**
   * Is the engine shutting down? dockerd closes its socket before it stops
   * its containers, and their events still arrive on the already-open event
   * stream: a fresh connection being refused tells it apart from an
   * operator's `docker stop`, without delaying the report of the latter.
   */
  private async engineShuttingDown(): Promise<boolean> {
    return !(await this.runtime.acceptsConnections(1_000));
  }

  /** A full inventory now, with errors logged (never an unhandled rejection). */
  private resync(): void {
    this.sendInventory().catch((err: unknown) => this.opts.log.warn({ err: messageOf(err) }, "inventory failed"));
  }

  /** Pull progress to the manager, at most about once a second per server, always the last report. */
  private reportPull(p: PullReport): void {
    const now = Date.now();
    const last = this.pullReportedAt.get(p.serverId) ?? 0;
    if (!p.done && now - last < PULL_REPORT_EVERY_MS) return;
    if (p.done) this.pullReportedAt.delete(p.serverId);
    else this.pullReportedAt.set(p.serverId, now);
    this.opts.log.info({ server: p.serverId, image: p.image, status: p.status, done: p.done }, "image pull");
    this.send({ case: "pullProgress", value: p });
  }

  /** A backup's or restore's progress (BackupJobs throttles it to about one per second per job). */
  private reportProgress(p: JobProgress): void {
    this.send({
      case: "commandProgress",
      value: { commandId: p.commandId, serverId: p.serverId, stage: p.stage, bytesDone: BigInt(p.bytesDone), bytesTotal: BigInt(p.bytesTotal), files: BigInt(p.files) },
    });
  }

  private async sendHelloAndInventory(): Promise<void> {
    const disk = await this.opts.dataRoot.diskSpace();
    this.send({
      case: "hello",
      value: {
        hostname: hostname(),
        agentVersion: AGENT_VERSION,
        dockerVersion: this.dockerVersion,
        dataRoot: this.opts.dataRoot.root,
        cpuCount: cpus().length,
        memoryBytes: BigInt(totalmem()),
        dataRootFreeBytes: BigInt(disk.freeBytes),
        dataRootTotalBytes: BigInt(disk.totalBytes),
        dockerReachable: this.dockerReachable,
        backupDirs: [...(this.jobs?.roots ?? [])],
        features: ["files", ...((this.opts.usageIntervalMs ?? 10_000) > 0 ? ["usage"] : [])],
      },
    });
    await this.sendInventory();
  }

  /**
   * A complete picture: the manager replaces what it knew about this host
   * with it. Calls while one is being built coalesce into one more run.
   */
  private sendInventory(opts: { periodic?: boolean } = {}): Promise<void> {
    if (this.inventoryRunning) {
      this.inventoryAgain = true;
      return this.inventoryRunning;
    }
    const run = this.buildAndSendInventory(opts.periodic === true)
      .catch((err: unknown) => this.opts.log.warn({ err: messageOf(err) }, "inventory failed"))
      .finally(() => {
        this.inventoryRunning = undefined;
        if (this.inventoryAgain) {
          this.inventoryAgain = false;
          void this.sendInventory();
        }
      });
    this.inventoryRunning = run;
    return run;
  }

  private async buildAndSendInventory(periodic: boolean): Promise<void> {
    if (!this.link.connected) return;
    // Taken before listing: anything sent while this inventory is built is newer than it.
    const seq = this.nextSeq();
    let containers: ContainerInfo[];
    const touched = new Set<string>();
    this.touchedDuringInventory = touched;
    try {
      containers = await this.runtime.list();
      // The list is a snapshot that may predate events already sent: an inventory
      // arriving after a container's "destroy" must not bring it back, nor an old
      // state overwrite a newer one.
      containers = containers.filter((c) => !this.destroyed.has(c.id));
      for (const id of touched) {
        const fresh = this.destroyed.has(id) ? undefined : await this.runtime.inspect(id);
        containers = containers.filter((c) => c.id !== id);
        if (fresh && fresh.labels["berth.server"]) containers.push(fresh);
      }
      if (!this.dockerReachable) {
        this.dockerReachable = true;
        this.sendHeartbeatNow();
      }
    } catch (err) {
      if (this.dockerReachable) {
        this.dockerReachable = false;
        this.sendHeartbeatNow();
      }
      this.opts.log.warn({ err: messageOf(err) }, "inventory skipped: Docker engine unreachable");
      return;
    } finally {
      this.touchedDuringInventory = null;
    }
    if (periodic) {
      const missed = diffContainers(this.believed.values(), containers);
      if (missed.length > 0) {
        this.opts.log.warn({ changes: missed }, `the periodic inventory found ${missed.length} change(s) the Docker event stream did not report; the manager gets them now`);
      }
    }
    this.believed.clear();
    for (const c of containers) this.believed.set(c.id, c);
    // A run first seen now (the agent restarted while it ran) has its output so far scanned for its
    // ready pattern before the inventory goes out, so a ready server does not show Starting meanwhile.
    await this.observeReady(containers);
    containers = containers.map((c) => this.ready.annotate(reportable(c)));
    const dirs = await this.opts.dataRoot.list();
    const ids = new Set<string>(dirs.filter((d) => this.opts.dataRoot.isServerId(d)));
    for (const c of containers) {
      const sid = c.labels["berth.server"];
      if (sid && this.opts.dataRoot.isServerId(sid)) ids.add(sid);
    }
    // Containers without berth labels, for the manager's orphan list: one listing call, no inspects.
    const unmanaged = await (this.runtime.listUnmanaged?.(MAX_UNMANAGED) ?? Promise.resolve({ containers: [], omitted: 0 })).catch((err: unknown) => {
      this.opts.log.warn({ err: messageOf(err) }, "could not list unmanaged containers; reporting none");
      return { containers: [], omitted: 0 };
    });
    // Project networks, for the manager's orphan list: bounded like the unmanaged containers.
    const networks = await this.runtime.listNetworks(MAX_NETWORKS).catch((err: unknown) => {
      this.opts.log.warn({ err: messageOf(err) }, "could not list project networks; reporting none");
      return { networks: [], omitted: 0 };
    });
    const dataDirs: DataDir[] = [];
    for (const id of ids) {
      try {
        // One stat per directory and its last measured size: walking every directory
        // every 30 s was up to 100,000 lstat calls each (DirSizes measures them instead).
        dataDirs.push(dataDir(await this.opts.dataRoot.checkCached(id)));
      } catch (err) {
        // Left out: the manager keeps its last check; commands on it fail with the same message.
        this.opts.log.warn({ server: id, err: messageOf(err) }, "data directory refused; not reported");
      }
    }
    // In parts far below the manager's message cap: an inventory of any size goes through.
    const parts = splitInventory(
      {
        containers,
        dataDirs,
        dockerReachable: true,
        otherDataDirs: dirs.filter((d) => !this.opts.dataRoot.isServerId(d)),
        unmanaged: unmanaged.containers.map(reportable),
        unmanagedOmitted: unmanaged.omitted,
      },
      `inv-${++this.inventorySeq}`,
    );
    // In the last part, which the manager applies the whole inventory with.
    Object.assign(parts[parts.length - 1]!, { networks: networks.networks, networksOmitted: networks.omitted });
    for (const value of parts) this.send({ case: "inventory", value }, seq);
  }

  private sendHeartbeatNow(): void {
    this.send({ case: "heartbeat", value: { time: timestampNow(), dockerReachable: this.dockerReachable } });
  }

  private async sendHeartbeat(): Promise<void> {
    const disk = await this.opts.dataRoot.diskSpace();
    this.send({
      case: "heartbeat",
      value: { time: timestampNow(), dataRootFreeBytes: BigInt(disk.freeBytes), dockerReachable: this.dockerReachable },
    });
  }

  private onManagerMessage(msg: ManagerMessage): void {
    switch (msg.body.case) {
      case "welcome": {
        const w = msg.body.value;
        this.managerId = w.managerId || undefined;
        // Commands of managers that took the host before this one are refused from now on.
        this.executor.observeOwnerEpoch(w.ownerEpoch);
        if (w.heartbeatIntervalSeconds > 0) this.beatEvery(w.heartbeatIntervalSeconds * 1000);
        // Command deadlines are the manager's clock; judge them by it (within a round trip).
        this.managerClockOffsetMs = w.time ? timestampMs(w.time) - Date.now() : 0;
        if (Math.abs(this.managerClockOffsetMs) > 5_000) {
          this.opts.log.warn({ offsetMs: this.managerClockOffsetMs }, "this host's clock differs from the manager's by more than 5 s; command deadlines are judged by the manager's");
        }
        return;
      }
      case "resync":
        this.resync();
        return;
      case "logRequest":
        this.logStreams.start(msg.body.value);
        return;
      case "logCancel":
        this.logStreams.cancel(msg.body.value.requestId);
        return;
      case "logCredit":
        this.logStreams.credit(msg.body.value.requestId, msg.body.value.bytes);
        return;
      case "fileRequest": {
        const req = msg.body.value;
        void this.files.handle(req).then((result) => {
          if (req.op.case !== "list" && req.op.case !== "stat" && result.result?.case !== "error") this.sizes.markDirty(req.serverId);
          this.send({ case: "fileResult", value: result });
        });
        return;
      }
      case "command": {
        const cmd = msg.body.value;
        void this.executor.execute(cmd).then((result) => {
          // Whatever it did, its container may write differently from now on.
          if (cmd.serverId) this.sizes.markDirty(cmd.serverId);
          // Only AdoptOrphan's inspect needs the environment and command; every other result is an observation.
          if (result.container && cmd.kind !== CommandKind.INSPECT_CONTAINER) result = { ...result, container: this.ready.annotate(reportable(result.container)) };
          this.send({ case: "commandResult", value: result });
        });
        return;
      }
      default:
        return;
    }
  }

  /** Subscribes to Docker events forever; after any break, resubscribes and sends a full inventory. */
  private async watchEvents(): Promise<void> {
    const backoff = new Backoff(250, 10_000);
    const signal = this.abort.signal;
    let broken = false;
    while (!signal.aborted) {
      // One controller per subscription: the engine probe aborts it to force a resubscribe.
      const sub = new AbortController();
      const onStop = () => sub.abort();
      signal.addEventListener("abort", onStop, { once: true });
      this.eventsAbort = sub;
      try {
        const { closed } = await this.runtime.subscribe((e) => this.onRuntimeEvent(e), sub.signal);
        if (broken) {
          this.opts.log.info("Docker events stream re-established; resyncing");
          await this.refreshDocker();
          this.resync();
          this.sendHeartbeatNow();
        }
        backoff.reset();
        broken = false;
        await closed;
        if (!signal.aborted) throw new Error("subscription aborted after the engine stopped answering");
      } catch (err) {
        if (signal.aborted) return;
        if (!broken) {
          this.opts.log.warn({ err: String(err) }, "Docker events stream broken; resubscribing");
          this.dockerReachable = false;
          this.sendHeartbeatNow();
        }
        broken = true;
        await new Promise((r) => setTimeout(r, backoff.next()));
      } finally {
        signal.removeEventListener("abort", onStop);
      }
    }
  }

  /** Per container, events are handled in order (an inspect must not overtake a later one). */
  private onRuntimeEvent(e: RuntimeEvent): void {
    // Nobody awaits an event's report: a failure is logged here (the queue goes on to the next event).
    void this.events.run(e.containerId, () => this.reportEvent(e)).catch((err: unknown) => {
      this.opts.log.warn({ container: e.containerId, err: String(err) }, "could not report container event");
    });
  }

  /**
   * Why a container died: berth stopped or removed it (the executor says so),
   * someone else did (a kill/stop event came just before), or it exited by itself.
   */
  private exitCause(e: RuntimeEvent): string {
    if (e.action !== "die") return "";
    const killed = this.killedAt.get(e.containerId);
    this.killedAt.delete(e.containerId);
    if (this.executor.takeExpectedExit(e.containerId)) return "stopped_by_berth";
    // Only a stop signal (or the signal the process died of) makes it someone's stop: a
    // `docker kill -s HUP` reload followed by a crash is a crash, restarted per policy.
    const code = Number(e.labels.exitCode ?? "x");
    return exitCauseOf(killed ?? [], Number.isInteger(code) ? code : undefined, Date.now());
  }

  /**
   * A "die" reported from the event itself, without an inspect: Docker holds
   * the container until it has finished the stop (unmounts, network
   * teardown), so an inspect at the "die" waits 50–100 ms for that, which was
   * most of berth's drift-detection delay (docs/benchmarks.md). The event
   * carries the exit code; everything else is what the agent already knew.
   * The inspected state follows with the "stop" event of a `docker stop`, a
   * command's result, or the next inventory. Undefined (inspect instead) for
   * a container the agent has not seen, an event without an exit code, or
   * exit code 137 (SIGKILL): only the inspect says whether the kernel killed
   * it for exceeding its memory limit (OOMKilled), which the manager records
   * with the exit (a `docker kill` pays the wait too).
   */
  private exitedFromEvent(e: RuntimeEvent): ContainerInfo | undefined {
    const known = this.believed.get(e.containerId);
    const code = Number(e.labels.exitCode ?? "x");
    if (e.action !== "die" || !known || !Number.isInteger(code) || code === 137) return undefined;
    const info = clone(ContainerInfoSchema, known);
    info.state = "exited";
    info.exitCode = code;
    info.finishedTime = timestampFromMs(e.timeMs || Date.now());
    return info;
  }

  /**
   * Starts (or keeps) the ready watches of these containers and waits, a few
   * seconds at most, for the output each new run had so far to be scanned.
   */
  private async observeReady(containers: readonly ContainerInfo[]): Promise<void> {
    const scans = containers.map((c) => this.ready.observe(c));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(scans), new Promise<void>((r) => (timer = setTimeout(r, READY_SCAN_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /**
   * A container's line matched its ready pattern: the manager hears it as a
   * "ready" container event carrying ready_time, in line with the
   * container's other events.
   */
  private onReadyMatched(containerId: string): void {
    void this.events
      .run(containerId, async () => {
        const seq = this.nextSeq();
        const info = await this.runtime.inspect(containerId);
        if (!info || this.destroyed.has(containerId)) return;
        this.believed.set(info.id, info);
        this.send({ case: "containerEvent", value: { action: "ready", exitCause: "", removed: false, time: timestampNow(), container: this.ready.annotate(reportable(info)) } }, seq);
      })
      .catch((err: unknown) => this.opts.log.warn({ container: containerId, err: String(err) }, "could not report the container's readiness"));
  }

  private async reportEvent(e: RuntimeEvent): Promise<void> {
    const seq = this.nextSeq();
    this.touchedDuringInventory?.add(e.containerId);
    if (e.action === "kill" || e.action === "stop") {
      const seen = { at: Date.now(), signal: e.action === "kill" ? signalNumber(e.labels.signal) : undefined };
      this.killedAt.set(e.containerId, [...(this.killedAt.get(e.containerId) ?? []).slice(-7), seen]);
    }
    const sid = e.labels["berth.server"];
    if (sid && (e.action === "die" || e.action === "stop" || e.action === "destroy")) this.sizes.markDirty(sid);
    if (e.action === "destroy") {
      this.killedAt.delete(e.containerId);
      this.executor.forgetExpectedExit(e.containerId);
      const now = Date.now();
      this.destroyed.set(e.containerId, now);
      for (const [id, at] of this.destroyed) if (now - at > 3_600_000) this.destroyed.delete(id);
    }
    // A kill is only a request: the container may already read as exited, but the
    // manager must learn that together with why (the "die" that follows carries the
    // cause), or it would restart a container someone just stopped on purpose.
    if (e.action === "kill") return;
    let exitCause = this.exitCause(e);
    const info = e.action === "destroy" ? undefined : (this.exitedFromEvent(e) ?? (await this.runtime.inspect(e.containerId)));
    // A stopping dockerd stops its containers exactly like `docker stop` (kill, die) while it
    // still answers for a moment: that is not an operator's stop, and must not be adopted as one.
    if (exitCause === "stopped_externally" && (await this.engineShuttingDown())) {
      this.opts.log.info({ container: e.containerId }, "container stopped by its Docker engine shutting down; reporting the exit without a cause");
      exitCause = "";
    }
    const removed = info === undefined;
    if (info) this.believed.set(info.id, info);
    else this.believed.delete(e.containerId);
    // A start begins a watch for the ready pattern (not awaited: its first lines come later anyway);
    // a stop ends it, and the next start waits for a new match.
    if (info) void this.ready.observe(info);
    else this.ready.forget(e.containerId);
    this.send({
      case: "containerEvent",
      value: {
        action: e.action,
        exitCause,
        removed,
        time: timestampFromMs(e.timeMs || Date.now()),
        container: info ? this.ready.annotate(reportable(info)) : create(ContainerInfoSchema, { id: e.containerId, labels: e.labels, state: "removed" }),
      },
    }, seq);
  }
}
