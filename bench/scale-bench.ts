/**
 * One real manager process under thousands of simulated agents (the real
 * agent code over SimRuntime, in one or two separate processes, one gRPC
 * connection each over loopback), in one sequence on one database:
 *
 *   seed N hosts × M servers → connect storm → event churn → mass stop → manager restart
 *
 * - Connect storm: every agent starts at once with an empty (simulated)
 *   engine; the manager must create and start (or just create, for servers
 *   declared stopped) every server. Time until every host is online and
 *   every server is in its desired phase, as seen on WatchServers.
 * - Event churn: `die` events at a fixed rate on the containers of stopped
 *   servers, each with a new exit code: every event changes the server's
 *   status (its message and ContainerRunning condition) without the
 *   reconciler issuing a command, so exactly the path agent → link → store →
 *   reconcile → WatchServers is measured. Latency from the simulated engine
 *   emitting the event to its WatchServers delivery; dropped = events whose
 *   exit code never showed (nor a later one of the same server).
 * - Mass stop: StopServer on K running servers through the API (256 calls in
 *   flight), until all are STOPPED on WatchServers.
 * - Restart: the manager is stopped (SIGTERM) and started again on the same
 *   database and port; the agents reconnect with their own backoff. Time to
 *   serve again, and to converge: every host online, every server in its
 *   desired phase, the reconcile queue empty.
 *
 * The store (`store`): SQLite with one manager (the default), or PostgreSQL
 * with one or several managers on one database. With several, each agent
 * dials one of them first (agents spread round-robin) and fails over to the
 * others, as `berth-agent --manager URL1,URL2` does; the mass stop's API
 * calls alternate between the managers; WatchServers and WatchEvents are
 * read from the first one (any manager sees every change); the restart stops
 * every manager and starts them all again; /metrics counters are summed over
 * the managers (ledger events: the largest, every manager hears them all),
 * RSS and event-loop delay are the worst manager's.
 *
 * Every phase also reports the managers' event-loop delay (max and p99, from
 * berth_event_loop_delay_seconds, docs/metrics.md) and peak RSS, and the
 * results JSON gets a per-second series (`series`: each manager's last-second
 * event-loop max and p99 and its RSS, tagged with the phase) for charts.
 */
import { fork, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { histogramDelta, LOOP_METRICS_QUERY, parseLoopMetrics, quantileUpperBound, secondsAbove, type LoopHistogram, type LoopReading } from "./lib/loop-stats.js";
import { listenDrops, loadAverage, machineBusyMs, ProcWatch, readProc, type UsageWindow } from "./lib/proc-stats.js";
import { REPO_ROOT, freePort, startManager, type ManagerProc } from "./lib/processes.js";
import { provisionStore, type ProvisionedStore, type StoreConfig } from "./lib/stores.js";
import type { Report } from "./lib/report.js";
import { mapLimit, sleep, summarize, wallMs } from "./lib/stats.js";
import { HostWatch, ServerWatch } from "./lib/watch.js";
import type { ChurnMessage, ChurnRecord, FleetReply, StartMessage } from "./sim/fleet.js";
import { seedDatabase, type SeededHost } from "./sim/seed.js";

export interface ScaleSizes {
  /**
   * "existing": every host already runs its servers' containers (a fleet
   * reconnecting: after a manager restart, a failover, a network partition);
   * each server needs one reconcile. "empty": no container exists yet; the
   * manager has every container created (and started) through commands.
   */
  storm: "existing" | "empty";
  /** How long the storm and the restart may take before what was reached is recorded instead. */
  phaseTimeoutS: number;
  agents: number;
  serversPerAgent: number;
  churnRate: number;
  churnSeconds: number;
  stopCount: number;
  fleetProcs: number;
  /** Every n-th server of a host is declared stopped (the churn targets). */
  stoppedEvery: number;
}

export function scaleSizes(full: boolean, o: Partial<Record<Exclude<keyof ScaleSizes, "storm">, number | undefined>> & { storm?: ScaleSizes["storm"] | undefined }): ScaleSizes {
  return {
    storm: o.storm ?? "existing",
    phaseTimeoutS: o.phaseTimeoutS ?? (full ? 420 : 150),
    agents: o.agents ?? (full ? 5000 : 500),
    serversPerAgent: o.serversPerAgent ?? 20,
    churnRate: o.churnRate ?? (full ? 5000 : 1000),
    churnSeconds: o.churnSeconds ?? 30,
    stopCount: o.stopCount ?? (full ? 10_000 : 2_000),
    fleetProcs: o.fleetProcs ?? (full ? 2 : 1),
    stoppedEvery: o.stoppedEvery ?? 4,
  };
}

const FLEET_MAIN = join(REPO_ROOT, "bench/sim/fleet.ts");
/** The agents' production defaults. */
const INVENTORY_INTERVAL_MS = 30_000;
const HEARTBEAT_INTERVAL_MS = 5_000;

/** A process of simulated agents and its request/reply channel. */
class Fleet {
  readonly watch: ProcWatch;
  private readonly waiting = new Map<string, { resolve: (r: FleetReply) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    readonly hosts: SeededHost[],
  ) {
    this.watch = new ProcWatch(child.pid!);
    child.on("message", (m: FleetReply) => {
      if (m.op === "error") {
        for (const w of this.waiting.values()) w.reject(new Error(`fleet ${child.pid}: ${m.error}`));
        this.waiting.clear();
        return;
      }
      const w = this.waiting.get(m.op);
      this.waiting.delete(m.op);
      w?.resolve(m);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    void this.exited.then(() => {
      for (const w of this.waiting.values()) w.reject(new Error(`fleet ${child.pid} exited`));
    });
  }

  request<T extends FleetReply["op"]>(msg: StartMessage | ChurnMessage, replyOp: T): Promise<Extract<FleetReply, { op: T }>> {
    return new Promise((resolve, reject) => {
      this.waiting.set(replyOp, { resolve: resolve as (r: FleetReply) => void, reject });
      this.child.send(msg);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.send({ op: "stop" });
    const t = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await this.exited;
    clearTimeout(t);
  }
}

export interface ScaleRunOptions extends ScaleSizes {
  /** The store and how many managers share it. */
  store: StoreConfig;
  /** The suite name its figures are filed under (default "scale"). */
  suite?: string;
  /** Put before target names and notes, so the targets of several configurations tell apart. */
  label?: string;
  profile: boolean;
  keep: boolean;
  log: (s: string) => void;
}

export async function runScaleBench(report: Report, opts: ScaleRunOptions): Promise<void> {
  const SUITE = opts.suite ?? "scale";
  const tag = opts.label ? `[${opts.label}] ` : "";
  const target: Report["target"] = (name, ...rest) => report.target(`${tag}${name}`, ...rest);
  const note = (text: string) => report.note(`${tag}${text}`);
  const { agents, serversPerAgent } = opts;
  const total = agents * serversPerAgent;
  const size = `${agents.toLocaleString("en")}×${serversPerAgent}${opts.storm === "empty" ? " (empty hosts)" : ""}`;
  const dir = await mkdtemp(join(tmpdir(), "berth-bench-scale-"));
  const profDir = join(dir, "profiles");
  // BENCH_MANAGER_NODE_ARGS: more node flags for the managers, e.g. "--trace-gc" (printed into manager.log).
  const nodeArgs = [...(opts.profile ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []), ...(process.env.BENCH_MANAGER_NODE_ARGS ?? "").split(" ").filter(Boolean)];
  const fleets: Fleet[] = [];
  let store: ProvisionedStore | undefined;
  let managers: ManagerProc[] = [];
  let watch: ServerWatch | undefined;
  let hostWatch: HostWatch | undefined;
  /** Calls failed: the directory (the managers' logs) is kept to say why. */
  let keepForFailures = false;
  const sampler = new ManagerSampler(() => managers);
  let hwmBytes = 0;
  const noteHwm = () => {
    for (const m of managers) {
      const r = readProc(m.pid);
      if (r) hwmBytes = Math.max(hwmBytes, r.hwmBytes);
    }
  };
  try {
    // --- setup ---------------------------------------------------------------------------
    let t = performance.now();
    store = await provisionStore(opts.store, dir);
    const hosts = await seedDatabase({ storeUrl: store.url, agents, serversPerAgent, stoppedEvery: opts.stoppedEvery });
    opts.log(`seeded ${agents} hosts and ${total} servers in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    Object.assign(report.sizes, { "scale storm": opts.storm, "scale agents": agents, "scale servers per agent": serversPerAgent, "scale servers": total, "scale agent processes": opts.fleetProcs });
    if (opts.store.engine !== "sqlite") Object.assign(report.sizes, { [`${tag}managers`]: opts.store.managers });
    const ports: number[] = [];
    for (let k = 0; k < opts.store.managers; k++) ports.push(await freePort());
    const managerOptions = (k: number) => ({ dir, ...store!.manager, port: ports[k]!, nodeArgs, ...(opts.store.managers > 1 ? { logName: `manager-${k + 1}.log` } : {}) });
    // One after the other: the first start on an empty database creates the admin token
    // (printed once) and the secret key file the others then read.
    for (let k = 0; k < opts.store.managers; k++) {
      managers.push(await startManager({ ...managerOptions(k), ...(k > 0 ? { adminToken: managers[0]!.adminToken } : {}) }));
    }
    const adminToken = managers[0]!.adminToken;
    const first = managers[0]!;
    sampler.start();
    watch = new ServerWatch(first.servers);
    await watch.snapshotDone;
    hostWatch = new HostWatch(first.events, first.hosts);
    await hostWatch.ready;
    for (let k = 0; k < opts.fleetProcs; k++) {
      const part = hosts.slice(Math.floor((k * agents) / opts.fleetProcs), Math.floor(((k + 1) * agents) / opts.fleetProcs));
      const fd = openSync(join(dir, `fleet-${k}.out`), "a");
      const child = fork(FLEET_MAIN, [], { execArgv: ["--import", "tsx", "--max-old-space-size=8192"], stdio: ["ignore", fd, fd, "ipc"], cwd: REPO_ROOT });
      closeSync(fd);
      fleets.push(new Fleet(child, part));
    }
    /**
     * A phase's event-loop delay and RSS, the worst manager's. Max and p99 from
     * the histogram of per-second worst delays (bucket bounds, exact against the
     * 100 ms and 20 ms targets, which are bucket bounds); the exact max as read
     * every second by the sampler beside it.
     */
    const reportLoop = (phase: string, loop0: (LoopReading | undefined)[], loop1: (LoopReading | undefined)[], ends: UsageWindow[]) => {
      const deltas = loop1.flatMap((r, k) => (r ? [histogramDelta(loop0[k]?.histogram, r.histogram)] : []));
      const rssPeakMB = Math.max(...ends.map((e) => e.rssPeakMB));
      report.figure(SUITE, `${phase}: manager RSS peak (sampled every 250 ms)`, "MB", [rssPeakMB]);
      if (!deltas.length) {
        note(`${phase}: no manager answered /metrics?name=berth_event_loop_delay_seconds; event-loop delay not measured`);
        return;
      }
      const worst = (f: (d: LoopHistogram) => number) => Math.max(...deltas.map(f));
      const maxBound = worst((d) => quantileUpperBound(d, 1));
      const p99Bound = worst((d) => quantileUpperBound(d, 0.99));
      const over100 = worst((d) => secondsAbove(d, 0.1));
      const seconds = worst((d) => d.count);
      const sampledMax = sampler.maxMs(phase);
      report.figure(
        SUITE,
        `${phase}: manager event-loop delay max`,
        "ms",
        [sampledMax],
        `the largest per-second max read every second; histogram: worst second ≤ ${fmtBound(maxBound)}, ${over100} of ${seconds} s above 100 ms`,
      );
      report.figure(SUITE, `${phase}: manager event-loop delay p99 (of per-second worst delays, bucket bound)`, "ms", [p99Bound * 1000]);
      target(
        `manager event-loop delay during ${phase}`,
        "max ≤ 100 ms, p99 ≤ 20 ms",
        `max ${Number.isFinite(sampledMax) ? `${sampledMax.toFixed(0)} ms` : "-"} (${over100} s above 100 ms), p99 ≤ ${fmtBound(p99Bound)}`,
        // A phase shorter than the manager's first second has nothing to judge.
        seconds > 0 ? over100 === 0 && p99Bound <= 0.02 : null,
        "p99 of each second's worst delay, an upper bound on the p99 of all delay samples; delays include the monitor's 10 ms timer",
      );
    };

    const usage = (phase: string, run: () => Promise<void>) => async () => {
      const ms = managers;
      const { counters: before, loops: loop0 } = await scrapeEach(ms);
      sampler.phase = phase;
      const pids = [...ms.map((m) => m.pid), ...fleets.map((f) => f.child.pid!), process.pid];
      const windows = pids.map((pid) => new ProcWatch(pid).begin());
      const machine0 = machineBusyMs();
      const load0 = loadAverage();
      const drops0 = listenDrops();
      try {
        await run();
      } finally {
        const ends = windows.map((w) => w.end());
        const machineS = (machineBusyMs() - machine0) / 1000;
        const load1 = loadAverage();
        const drops1 = listenDrops();
        const { counters: after, loops: loop1 } = await scrapeEach(ms);
        sampler.phase = `after ${phase}`;
        ms.forEach((_, k) => report.use(SUITE, phase, ms.length > 1 ? `manager ${k + 1}/${ms.length}` : "manager", ends[k]!));
        fleets.forEach((_, k) => report.use(SUITE, phase, `agents ${k + 1}/${fleets.length}`, ends[ms.length + k]!));
        report.use(SUITE, phase, "benchmark (clients)", ends[ends.length - 1]!);
        // The machine may be shared: what everything else used meanwhile.
        const wall = ends[0]!.wallS;
        const otherS = machineS - ends.reduce((a, e) => a + (Number.isFinite(e.cpuS) ? e.cpuS : 0), 0);
        report.use(SUITE, phase, `other processes (load avg ${load0.toFixed(1)}→${load1.toFixed(1)})`, {
          wallS: wall,
          cpuS: otherS,
          cpuPercent: (otherS / wall) * 100,
          rssPeakMB: Number.NaN,
          rssEndMB: Number.NaN,
        });
        // A restarted manager's counters start from zero. Several managers: see scrapeAll.
        if (after) {
          const base = before && after.reconciles >= before.reconciles ? before : { reconciles: 0, reconcileSeconds: 0, events: 0 };
          const n = after.reconciles - base.reconciles;
          report.figure(SUITE, `${phase}: reconciles (manager /metrics)`, "count", [n]);
          report.figure(SUITE, `${phase}: mean reconcile duration`, "ms", [n ? ((after.reconcileSeconds - base.reconcileSeconds) / n) * 1000 : Number.NaN]);
          report.figure(SUITE, `${phase}: ledger events written`, "count", [after.events - base.events]);
        }
        report.figure(SUITE, `${phase}: SYNs dropped by full listen queues (machine-wide)`, "count", [drops1.drops - drops0.drops]);
        reportLoop(phase, loop0, loop1, ends.slice(0, ms.length));
        noteHwm();
      }
    };

    // --- connect storm ----------------------------------------------------------------------
    const w1 = watch;
    const hw1 = hostWatch;
    const urls = managers.map((m) => m.url);
    /** Agent i dials manager i mod N first, then the others in order (its fail-over list). */
    const managerUrlsOf = (i: number) => urls.map((_, k) => urls[(i + k) % urls.length]!);
    await usage("connect storm", async () => {
      opts.log(`connect storm: ${size} ...`);
      const stormTimeout = opts.phaseTimeoutS * 1000;
      const t0 = wallMs();
      const online = settle(hw1.untilOnline(agents, stormTimeout), t0);
      const converged = settle(w1.until(`${total} servers in their desired phase`, () => w1.converged === total, stormTimeout), t0);
      let agentIndex = 0;
      const started = await Promise.all(
        fleets.map((f, k) =>
          f.request(
            {
              op: "start",
              hosts: f.hosts.map((h) => ({
                hostId: h.hostId,
                secret: h.secret,
                managerUrls: managerUrlsOf(agentIndex++),
                ...(opts.storm === "existing"
                  ? { existing: h.servers.map((x) => ({ serverId: x.id, ...x.container, running: x.desired === DesiredState.RUNNING })) }
                  : {}),
              })),
              inventoryIntervalMs: INVENTORY_INTERVAL_MS,
              heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
              logPath: join(dir, `fleet-${k}.log`),
            },
            "started",
          ),
        ),
      );
      const [tOnline, tConverged] = await Promise.all([online, converged]);
      report.figure(SUITE, `connect storm ${size}: agents started (in their processes)`, "s", started.map((x) => x.ms / 1000));
      const progress = `${hw1.online.size} of ${agents} hosts online, ${w1.converged} of ${total} servers in their desired phase`;
      if (tOnline !== undefined) report.figure(SUITE, `connect storm ${size}: every host online`, "s", [tOnline / 1000]);
      if (tConverged !== undefined) report.figure(SUITE, `connect storm ${size}: every server in its desired phase`, "s", [tConverged / 1000]);
      const quickNote = agents < 5000 ? "quick size; the target is stated for 5,000×20" : undefined;
      if (tOnline === undefined || tConverged === undefined) {
        report.figure(SUITE, `connect storm ${size}: servers in their desired phase after ${opts.phaseTimeoutS} s`, "servers", [w1.converged]);
        report.figure(SUITE, `connect storm ${size}: hosts online after ${opts.phaseTimeoutS} s`, "hosts", [hw1.online.size]);
        target(`connect storm ${size} converged`, "≤ 60 s (stated for 5,000×20)", `not within ${opts.phaseTimeoutS} s: ${progress}`, false, quickNote);
        opts.log(`connect storm: NOT converged within ${opts.phaseTimeoutS} s: ${progress}; going on with what there is`);
        return;
      }
      const worst = Math.max(tOnline, tConverged) / 1000;
      target(`connect storm ${size} converged`, "≤ 60 s (stated for 5,000×20)", `${worst.toFixed(1)} s`, worst <= 60, quickNote);
      opts.log(`connect storm: hosts online ${(tOnline / 1000).toFixed(1)} s, converged ${(tConverged / 1000).toFixed(1)} s`);
    })();

    // --- event churn ------------------------------------------------------------------------
    // Deliveries are followed until the restart: an overloaded manager delivers late, and
    // only what never arrived counts as dropped.
    const delivered = new Map<string, number>();
    const latestCode = new Map<string, number>();
    let churnSent: { serverId: string; code: number; at: number }[] = [];
    let churnEndedAt = 0;
    const offChurn = w1.onChange((s, at) => {
      const m = /exited with code (\d+)/.exec(s.message);
      if (!m) return;
      const code = Number(m[1]);
      const key = `${s.id}:${code}`;
      if (!delivered.has(key)) delivered.set(key, at);
      if (code > (latestCode.get(s.id) ?? 0)) latestCode.set(s.id, code);
    });
    const tally = () => {
      const latencies: number[] = [];
      let pending = 0;
      let coalesced = 0;
      for (const e of churnSent) {
        const got = delivered.get(`${e.serverId}:${e.code}`);
        if (got !== undefined) latencies.push(got - e.at);
        else if ((latestCode.get(e.serverId) ?? 0) > e.code) coalesced++;
        else pending++;
      }
      return { latencies, pending, coalesced };
    };
    const rate = opts.churnRate;
    await usage("event churn", async () => {
      opts.log(`event churn: ${rate}/s for ${opts.churnSeconds} s ...`);
      // A few seconds of calm first: the storm's last inventories and results settle.
      await sleep(3_000);
      const targetsOf = (f: Fleet) => f.hosts.flatMap((h) => h.servers.filter((x) => x.desired === DesiredState.STOPPED).map((x) => ({ hostId: h.hostId, serverId: x.id })));
      const all = fleets.map(targetsOf);
      const count = all.reduce((a, b) => a + b.length, 0);
      const replies = await Promise.all(
        fleets.map((f, k) => f.request({ op: "churn", rate: (rate * all[k]!.length) / count, durationMs: opts.churnSeconds * 1000, targets: all[k]! }, "churned")),
      );
      churnEndedAt = wallMs();
      churnSent = replies.flatMap((r, k) => (r.records as ChurnRecord[]).map(([i, code, at]) => ({ serverId: all[k]![i]!.serverId, code, at })));
      // Let the last events arrive (bounded).
      for (let waited = 0; waited < 10_000 && tally().pending > 0; waited += 250) await sleep(250);
      const { latencies, pending } = tally();
      report.sizes["churn targets (stopped servers)"] = count;
      report.figure(
        SUITE,
        `event churn ${rate}/s: events sent`,
        "events",
        [churnSent.length],
        `${(churnSent.length / opts.churnSeconds).toFixed(0)}/s achieved; emitter timer lag max ${Math.max(...replies.map((r) => r.lagMs)).toFixed(0)} ms`,
      );
      report.figure(SUITE, `event churn ${rate}/s: delivered within 10 s of the churn's end`, "events", [latencies.length]);
      report.figure(SUITE, `event churn ${rate}/s: not yet delivered 10 s after the churn's end`, "events", [pending]);
      const s = summarize(latencies);
      opts.log(`event churn: ${churnSent.length} sent; within 10 s of the end ${latencies.length} delivered (p50 ${s.median.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms), ${pending} not yet`);
    })();

    // An overloaded manager still delivers the backlog: wait for it (bounded) before the
    // mass stop, so that phase measures the stop and not the churn's leftovers.
    {
      const t0 = wallMs();
      while (tally().pending > 0 && wallMs() - t0 < opts.phaseTimeoutS * 1000) await sleep(500);
      const left = tally().pending;
      report.figure(SUITE, `event churn ${rate}/s: backlog delivered, s after the churn's end`, "s", [(wallMs() - churnEndedAt) / 1000], left ? `${left} still missing when the wait ended` : undefined);
    }

    /** Final churn figures: every delivery so far, late ones included. */
    const churnResults = () => {
      offChurn();
      const { latencies, pending, coalesced } = tally();
      const afterS = (wallMs() - churnEndedAt) / 1000;
      report.figure(SUITE, `event churn ${rate}/s: latency engine event → WatchServers`, "ms", latencies, `every delivery up to ${afterS.toFixed(0)} s after the churn's end`);
      report.figure(SUITE, `event churn ${rate}/s: dropped (never delivered, ${afterS.toFixed(0)} s after the churn's end)`, "events", [pending], undefined, {
        compareAs: `event churn ${rate}/s: dropped (never delivered by the restart)`,
      });
      report.figure(SUITE, `event churn ${rate}/s: coalesced (a newer state of the same server delivered instead)`, "events", [coalesced]);
      const s = summarize(latencies);
      target(`event churn ${rate}/s latency p99`, "≤ 500 ms (stated for 5,000/s)", `${s.p99.toFixed(0)} ms (p50 ${s.median.toFixed(0)} ms)`, s.p99 <= 500, rate < 5000 ? "quick rate; the target is stated for 5,000/s" : undefined);
      target(`event churn ${rate}/s dropped`, "0", String(pending), pending === 0);
    };

    // --- mass stop --------------------------------------------------------------------------
    await usage("mass stop", async () => {
      const running = [...w1.servers.values()].filter((s) => s.desired === DesiredState.RUNNING && s.phase === Phase.RUNNING);
      const n = Math.min(opts.stopCount, running.length);
      const step = running.length / n;
      const ids = Array.from({ length: n }, (_, i) => running[Math.floor(i * step)]!.id);
      opts.log(`mass stop: StopServer ×${n}${managers.length > 1 ? ` (alternating between ${managers.length} managers)` : ""} ...`);
      const callers = managers.map((m) => m.servers);
      let call = 0;
      const pending = new Set(ids);
      const off = w1.onChange((s) => {
        if (s.phase === Phase.STOPPED) pending.delete(s.id);
      });
      const t0 = wallMs();
      const allStopped = settle(w1.until(`${n} servers STOPPED`, () => pending.size === 0, opts.phaseTimeoutS * 1000), t0);
      const callMs: number[] = [];
      let failedCalls = 0;
      /** Each distinct error a call got, with how many calls got it. */
      const failures = new Map<string, number>();
      await mapLimit(ids, 256, async (id) => {
        const c0 = wallMs();
        try {
          // Bounded like the phase: an overloaded manager must not hold the run past it.
          await callers[call++ % callers.length]!.stopServer({ id }, { timeoutMs: opts.phaseTimeoutS * 1000 });
        } catch (e) {
          failedCalls++;
          const what = e instanceof Error ? e.message : String(e);
          failures.set(what, (failures.get(what) ?? 0) + 1);
        }
        callMs.push(wallMs() - c0);
      });
      for (const [what, count] of failures) opts.log(`mass stop: ${count} StopServer call(s) failed: ${what}`);
      if (failures.size > 0) keepForFailures = true;
      const tApi = wallMs() - t0;
      const tAll = await allStopped;
      off();
      report.sizes["mass stop servers"] = n;
      report.figure(SUITE, `mass stop ${n}: every StopServer answered`, "s", [tApi / 1000], failedCalls ? `${failedCalls} calls failed: ${[...failures.keys()].join("; ")}` : undefined);
      report.figure(SUITE, `mass stop ${n}: StopServer call latency (256 in flight)`, "ms", callMs);
      if (tAll === undefined) {
        report.figure(SUITE, `mass stop ${n}: servers STOPPED after ${opts.phaseTimeoutS} s`, "servers", [n - pending.size]);
        target(`mass stop ${n}`, "≥ 1,000 ops/s", `${n - pending.size} of ${n} STOPPED after ${opts.phaseTimeoutS} s`, false);
        opts.log(`mass stop: NOT done within ${opts.phaseTimeoutS} s: ${n - pending.size} of ${n} STOPPED`);
        return;
      }
      const opsPerS = n / (tAll / 1000);
      report.figure(SUITE, `mass stop ${n}: every server STOPPED`, "s", [tAll / 1000]);
      report.figure(SUITE, `mass stop ${n}: throughput to STOPPED`, "ops/s", [opsPerS]);
      target(`mass stop ${n}`, "≥ 1,000 ops/s", `${opsPerS.toFixed(0)} ops/s`, opsPerS >= 1000);
      opts.log(`mass stop: API ${(tApi / 1000).toFixed(1)} s, all stopped ${(tAll / 1000).toFixed(1)} s → ${opsPerS.toFixed(0)} ops/s`);
    })();

    churnResults();

    // --- restart ----------------------------------------------------------------------------
    watch.close();
    hostWatch.close();
    noteHwm();
    const firstHwm = hwmBytes;
    opts.log(`restart: stopping the manager${managers.length > 1 ? `s (all ${managers.length})` : ""} (${total} servers in its database) ...`);
    t = performance.now();
    await Promise.all(managers.map((m) => m.stop(120_000)));
    const shutdownS = (performance.now() - t) / 1000;
    managers = [];
    const spawnAt = performance.now();
    // All at once, as after a power cut of the whole control plane; the slowest sets the figure.
    managers = await Promise.all(ports.map((_, k) => startManager({ ...managerOptions(k), adminToken })));
    const m2 = managers[0]!;
    const restarted = managers;
    const readyS = Math.max(...restarted.map((m) => m.readyMs)) / 1000;
    await usage("restart", async () => {
      for (;;) {
        try {
          await m2.servers.listServers({ pageSize: 1 });
          break;
        } catch {
          await sleep(10);
        }
      }
      const servingS = (performance.now() - spawnAt) / 1000;
      opts.log(`restart: serving after ${servingS.toFixed(1)} s; waiting for convergence ...`);
      const w2 = new ServerWatch(m2.servers);
      watch = w2;
      await w2.snapshotDone;
      const hw2 = new HostWatch(m2.events, m2.hosts);
      hostWatch = hw2;
      await hw2.ready;
      const timeout = opts.phaseTimeoutS * 1000;
      const t0 = wallMs() - (performance.now() - spawnAt);
      const online = await settle(hw2.untilOnline(agents, timeout), t0);
      const done = online !== undefined && (await settle(w2.until(`${total} servers in their desired phase`, () => w2.converged === total, timeout), t0)) !== undefined;
      if (!done) {
        const progress = `${hw2.online.size} of ${agents} hosts online, ${w2.converged} of ${total} servers in their desired phase`;
        report.figure(SUITE, `restart ${total}: spawn → first ListServers answered`, "s", [servingS]);
        report.figure(SUITE, `restart ${total}: servers in their desired phase ${opts.phaseTimeoutS} s after serving`, "servers", [w2.converged]);
        note(`restart: not converged within ${opts.phaseTimeoutS} s of serving: ${progress}`);
        opts.log(`restart: NOT converged: ${progress}`);
        return;
      }
      const onlineS = online / 1000;
      // Every host online and the queue empty: every server was reconciled with its host connected.
      for (;;) {
        if ((await scrapeAll(restarted)).queueDepth === 0) break;
        await sleep(100);
      }
      const convergedS = (performance.now() - spawnAt) / 1000;
      const rss = Math.max(...restarted.map((m) => readProc(m.pid)?.rssBytes ?? Number.NaN));
      report.figure(SUITE, `restart ${total}: manager shutdown (SIGTERM → exit)`, "s", [shutdownS]);
      report.figure(SUITE, `restart ${total}: spawn → ready line`, "s", [readyS]);
      report.figure(SUITE, `restart ${total}: spawn → first ListServers answered`, "s", [servingS]);
      report.figure(SUITE, `restart ${total}: spawn → every host online again`, "s", [onlineS]);
      report.figure(SUITE, `restart ${total}: spawn → converged (all desired, queue empty)`, "s", [convergedS]);
      report.figure(SUITE, `restart ${total}: manager RSS when converged`, "MB", [rss / 2 ** 20]);
      opts.log(`restart: ready ${readyS.toFixed(1)} s, serving ${servingS.toFixed(1)} s, hosts online ${onlineS.toFixed(1)} s, converged ${convergedS.toFixed(1)} s`);
    })();
    noteHwm();
    const peakMB = Math.max(firstHwm, hwmBytes) / 2 ** 20;
    report.figure(SUITE, `manager peak RSS (VmHWM) with ${total} servers`, "MB", [peakMB]);
    target(
      `manager RSS with ${total.toLocaleString("en")} servers`,
      "≤ 1.5 GB (stated for 100,000)",
      `${peakMB.toFixed(0)} MB peak`,
      peakMB <= 1536,
      total < 100_000 ? "quick size; the target is stated for 100,000 servers" : undefined,
    );
    if (opts.profile) note(`manager CPU profiles: ${profDir} (${safeList(profDir).join(", ")})`);
  } finally {
    sampler.stop();
    report.series.push({
      suite: SUITE,
      name: `${tag}managers every second`,
      columns: ["unix ms", "phase", "manager", "event-loop max ms (last second)", "event-loop p99 ms (last second)", "seconds observed (histogram count)", "RSS MB", "heap used MB"],
      rows: sampler.rows,
    });
    watch?.close();
    hostWatch?.close();
    await Promise.all(fleets.map((f) => f.stop()));
    await Promise.all(managers.map((m) => m.stop(120_000)));
    if (!opts.keep && !opts.profile && !keepForFailures) {
      await store?.release();
      await rm(dir, { recursive: true, force: true });
    } else note(`scale suite files kept in ${dir}${keepForFailures ? " (calls failed: the managers' logs say why)" : ""}${store && opts.store.engine !== "sqlite" ? `; its PostgreSQL database: ${new URL(store.url).pathname.slice(1)}` : ""}`);
  }
}

/** ms from `t0` (wall clock) until `p` resolves; undefined if it rejects (a timeout). */
function settle(p: Promise<unknown>, t0: number): Promise<number | undefined> {
  return p.then(
    () => wallMs() - t0,
    () => undefined,
  );
}

/** Counters from the manager's /metrics that explain where its time went. */
interface ManagerCounters {
  queueDepth: number;
  reconciles: number;
  reconcileSeconds: number;
  events: number;
}

/**
 * The counters of every manager: queue and reconciles summed (each manager
 * reconciles the hosts it owns); events the largest, since every manager's
 * ledger hears every manager's events (berth_events_written_total counts
 * what a manager published, its own and the others').
 */
async function scrapeAll(managers: ManagerProc[]): Promise<ManagerCounters> {
  return sumCounters(await Promise.all(managers.map(async (m) => countersOf(await scrapeText(m.port)))));
}

function sumCounters(each: ManagerCounters[]): ManagerCounters {
  return each.reduce((a, b) => ({
    queueDepth: a.queueDepth + b.queueDepth,
    reconciles: a.reconciles + b.reconciles,
    reconcileSeconds: a.reconcileSeconds + b.reconcileSeconds,
    events: Math.max(a.events, b.events),
  }));
}

/**
 * One /metrics read of each manager at a phase's edge: the counters of all
 * (scrapeAll; undefined unless every manager answered) and each manager's
 * event-loop figures (undefined for one that did not answer).
 */
async function scrapeEach(managers: ManagerProc[]): Promise<{ counters: ManagerCounters | undefined; loops: (LoopReading | undefined)[] }> {
  const texts = await Promise.all(managers.map((m) => scrapeText(m.port).catch(() => undefined)));
  let counters: ManagerCounters | undefined;
  try {
    counters = texts.every((t) => t !== undefined) ? sumCounters(texts.map((t) => countersOf(t!))) : undefined;
  } catch {
    counters = undefined;
  }
  return { counters, loops: texts.map((t) => (t === undefined ? undefined : parseLoopMetrics(t))) };
}

/** A manager's whole /metrics text. Bounded: an overloaded manager may not answer at all. */
async function scrapeText(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(20_000) })).text();
}

function countersOf(text: string): ManagerCounters {
  const sum = (re: RegExp) => {
    let total = 0;
    for (const m of text.matchAll(re)) total += Number(m[1]);
    return total;
  };
  const depth = /^berth_reconcile_queue_depth (\d+)/m.exec(text);
  if (!depth) throw new Error("the manager's /metrics has no berth_reconcile_queue_depth");
  return {
    queueDepth: Number(depth[1]),
    reconciles: sum(/^berth_reconcile_duration_seconds_count\{[^}]*\} (\S+)/gm),
    reconcileSeconds: sum(/^berth_reconcile_duration_seconds_sum\{[^}]*\} (\S+)/gm),
    events: sum(/^berth_events_written_total\{[^}]*\} (\S+)/gm),
  };
}

/** A manager's event-loop histogram and last-second gauges (the cheap read: never the fleet gauges). */
async function readLoop(port: number): Promise<LoopReading | undefined> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics?${LOOP_METRICS_QUERY}`, { signal: AbortSignal.timeout(20_000) });
  return parseLoopMetrics(await res.text());
}

function fmtBound(s: number): string {
  return Number.isNaN(s) ? "-" : Number.isFinite(s) ? `${(s * 1000).toFixed(0)} ms` : "> 5 s";
}

/**
 * Every second: each manager's RSS (/proc) and its last complete second's
 * event-loop max and p99 (a cheap /metrics?name=… read, never the fleet
 * gauges), tagged with the phase. A manager still answering the previous
 * read (a stalled loop) gets a row with RSS only.
 */
class ManagerSampler {
  readonly rows: (number | string | null)[][] = [];
  phase = "setup";
  private timer: NodeJS.Timeout | undefined;
  private readonly reading = new Set<number>();

  constructor(private readonly managers: () => ManagerProc[]) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The largest last-second max read during `phase`, ms (NaN if none was read). */
  maxMs(phase: string): number {
    let max = Number.NaN;
    for (const r of this.rows) if (r[1] === phase && typeof r[3] === "number") max = Number.isNaN(max) ? r[3] : Math.max(max, r[3]);
    return max;
  }

  private tick(): void {
    const at = Date.now();
    const phase = this.phase;
    this.managers().forEach((m, k) => {
      const rssMB = (readProc(m.pid)?.rssBytes ?? Number.NaN) / 2 ** 20;
      const row = (r: LoopReading | undefined) => {
        const ms = (s: number | undefined) => (s === undefined ? null : s * 1000);
        const heapMB = r?.heapUsedBytes === undefined ? null : r.heapUsedBytes / 2 ** 20;
        this.rows.push([at, phase, k + 1, ms(r?.lastMaxS), ms(r?.lastP99S), r?.histogram.count ?? null, Number.isFinite(rssMB) ? rssMB : null, heapMB]);
      };
      if (this.reading.has(m.pid)) return row(undefined);
      this.reading.add(m.pid);
      void readLoop(m.port)
        .catch(() => undefined)
        .then(row)
        .finally(() => this.reading.delete(m.pid));
    });
  }
}

function safeList(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}
