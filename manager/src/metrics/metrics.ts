/**
 * The manager's Prometheus metrics (prom-client), on its own registry so
 * several managers in one process (unit tests) do not share counters.
 *
 * Counters and histograms are fed as things happen (ledger events, RPCs,
 * reconciles, write probes); gauges about the fleet (hosts, servers, alerts)
 * are read from the store when Prometheus scrapes, so they are never stale
 * and cost nothing between scrapes. Names and meanings: docs/metrics.md.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { HostUsage, ServerUsage, UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EventInput } from "../domain/records.js";
import { commandName } from "../reconcile/plan.js";
import { EventLoopDelay, type EventLoopDelayOptions } from "./event-loop.js";

/** What the scrape-time gauges read (from the store, so asynchronously). Narrow on purpose: tests pass plain functions. */
export interface MetricsSources {
  /** Hosts not removed, and whether each has a live agent stream. */
  hosts(): Promise<{ online: boolean }[]>;
  /** Live (not deleted) servers counted by project and phase name ("RUNNING", "DATA_LOST"…). */
  serverCounts(): Promise<{ project: string; phase: string; count: number }[]>;
  /** Firing alerts. */
  firingAlerts(): Promise<{ rule: string; severity: string }[]>;
  /** Keys waiting in the reconcile queue. */
  queueDepth(): number;
  /** This manager holds the leader lease (cluster/leader.ts). */
  isLeader?(): boolean;
  /** Reports agents sent that the manager refused (host limits), by reason, since start (AgentHub.refusedReports). */
  refusedReports?(): ReadonlyMap<string, number>;
  /** The latest usage of each host whose agent is connected here (UsageFeed). */
  hostUsage?(): Iterable<HostUsage>;
  /** The latest usage of each running server on those hosts; only with --metrics-server-usage (one series per server and figure). */
  serverUsage?(): Iterable<{ project: string; usage: ServerUsage }>;
  now?: () => number;
}

const COMMAND_OUTCOMES: Record<string, string> = {
  "command.succeeded": "succeeded",
  "command.failed": "failed",
  "command.expired": "expired",
};

/** "NotFound" → "not_found": the Connect protocol's code names. */
function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export class ManagerMetrics {
  readonly registry = new Registry();
  private readonly now: () => number;
  readonly reconcileDuration: Histogram<"outcome">;
  readonly commandsIssued: Counter<"kind">;
  readonly commandsFinished: Counter<"kind" | "outcome">;
  readonly commandDuration: Histogram<"kind" | "outcome">;
  readonly eventsWritten: Counter<"type">;
  readonly alertsFired: Counter<"rule">;
  readonly rpcs: Counter<"method" | "code">;
  readonly streamsOpen: Gauge<"method">;
  readonly dbWriteDuration: Histogram;
  readonly dbWritable: Gauge;
  readonly dbProbeFailures: Counter;
  /** berth_event_loop_delay_*: measures once started (Observability.start), stops with the manager. */
  readonly eventLoop: EventLoopDelay;

  constructor(
    sources: MetricsSources,
    version: string,
    options: { eventLoop?: EventLoopDelayOptions } = {},
  ) {
    this.now = sources.now ?? Date.now;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: "berth_build_info", help: "Always 1; the manager's version as a label.", labelNames: ["version"], registers }).set({ version }, 1);

    new Gauge({
      name: "berth_hosts",
      help: "Enrolled hosts (not removed) by state: online (agent stream up, inventory received) or offline.",
      labelNames: ["state"],
      registers,
      async collect() {
        let online = 0;
        let offline = 0;
        for (const h of await sources.hosts()) {
          if (h.online) online++;
          else offline++;
        }
        this.set({ state: "online" }, online);
        this.set({ state: "offline" }, offline);
      },
    });
    new Gauge({
      name: "berth_servers",
      help: "Servers (not soft-deleted) by project and phase.",
      labelNames: ["project", "phase"],
      registers,
      async collect() {
        // Counted by the database: reading every server into the manager for a scrape took a
        // few hundred milliseconds of its CPU at 10,000 servers (docs/benchmarks.md).
        const counts = await sources.serverCounts();
        this.reset();
        for (const c of counts) this.set({ project: c.project, phase: c.phase }, c.count);
      },
    });
    new Gauge({
      name: "berth_alerts_firing",
      help: "Firing alerts by rule and severity.",
      labelNames: ["rule", "severity"],
      registers,
      async collect() {
        const firing = await sources.firingAlerts();
        this.reset();
        const counts = new Map<string, number>();
        for (const a of firing) counts.set(`${a.rule}\u0000${a.severity}`, (counts.get(`${a.rule}\u0000${a.severity}`) ?? 0) + 1);
        for (const [key, n] of counts) {
          const [rule, severity] = key.split("\u0000") as [string, string];
          this.set({ rule, severity }, n);
        }
      },
    });
    new Counter({
      name: "berth_agent_reports_refused_total",
      help: "What agents reported and the manager did not store (per-host limits, invalid ids, rate), by reason (docs/agent.md#limits).",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of sources.refusedReports?.() ?? []) this.inc({ reason }, n);
      },
    });
    if (sources.isLeader) {
      const isLeader = sources.isLeader;
      new Gauge({
        name: "berth_leader",
        help: "1 while this manager holds the leader lease (runs alerts, webhooks and retention), else 0.",
        registers,
        collect() {
          this.set(isLeader() ? 1 : 0);
        },
      });
    }
    if (sources.hostUsage) {
      const hostUsage = sources.hostUsage;
      const figure = (name: string, help: string, pick: (s: UsageSample) => number | bigint | undefined) =>
        new Gauge({
          name,
          help,
          labelNames: ["host"],
          registers,
          collect() {
            this.reset();
            for (const h of hostUsage()) {
              const v = h.sample ? pick(h.sample) : undefined;
              if (v !== undefined) this.set({ host: h.hostId }, Number(v));
            }
          },
        });
      figure("berth_host_cpu_percent", "CPU busy on the host, of all its CPUs together (0-100), as its agent last sampled (every 10 s).", (s) => s.cpuPercent);
      figure("berth_host_memory_used_bytes", "Host memory in use (total less available).", (s) => s.memoryBytes);
      figure("berth_host_memory_total_bytes", "Host memory in total.", (s) => s.memoryLimitBytes);
      figure("berth_host_load1", "The host's 1-minute load average.", (s) => s.load1);
      figure("berth_host_data_root_free_bytes", "Free bytes on the filesystem of the host's data root.", (s) => s.diskFreeBytes);
    }
    if (sources.serverUsage) {
      const serverUsage = sources.serverUsage;
      const figure = (name: string, help: string, pick: (s: UsageSample) => number | bigint | undefined) =>
        new Gauge({
          name,
          help,
          labelNames: ["server", "project", "host"],
          registers,
          collect() {
            this.reset();
            for (const { project, usage } of serverUsage()) {
              const v = usage.sample ? pick(usage.sample) : undefined;
              if (v !== undefined) this.set({ server: usage.serverId, project, host: usage.hostId }, Number(v));
            }
          },
        });
      figure("berth_server_cpu_percent", "A running server's CPU, of one core (200: two busy cores), as last sampled (--metrics-server-usage).", (s) => s.cpuPercent);
      figure("berth_server_memory_bytes", "A running server's memory in use, without the inactive file cache (--metrics-server-usage).", (s) => s.memoryBytes);
      figure("berth_server_memory_limit_bytes", "A running server's memory limit, when it has one (--metrics-server-usage).", (s) => s.memoryLimitBytes);
      figure("berth_server_pids", "Processes and threads of a running server (--metrics-server-usage).", (s) => s.pids);
    }
    new Gauge({
      name: "berth_reconcile_queue_depth",
      help: "Servers waiting in the reconcile queue.",
      registers,
      collect() {
        this.set(sources.queueDepth());
      },
    });

    this.reconcileDuration = new Histogram({
      name: "berth_reconcile_duration_seconds",
      help: "Time of one reconcile of one server (read store, plan, write, send), by outcome (ok, error).",
      labelNames: ["outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.commandsIssued = new Counter({ name: "berth_commands_issued_total", help: "Commands sent to agents, by kind.", labelNames: ["kind"], registers });
    this.commandsFinished = new Counter({
      name: "berth_commands_finished_total",
      help: "Commands finished, by kind and outcome (succeeded, failed, expired: no result before its deadline).",
      labelNames: ["kind", "outcome"],
      registers,
    });
    this.commandDuration = new Histogram({
      name: "berth_command_duration_seconds",
      help: "Time from issuing a command to its result (or expiry), by kind and outcome.",
      labelNames: ["kind", "outcome"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    });
    this.eventsWritten = new Counter({ name: "berth_events_written_total", help: "Ledger events written, by type (docs/events.md).", labelNames: ["type"], registers });
    this.alertsFired = new Counter({ name: "berth_alerts_fired_total", help: "Alerts that started firing, by rule.", labelNames: ["rule"], registers });
    this.rpcs = new Counter({
      name: "berth_rpc_requests_total",
      help: "RPCs handled, by method (service/method) and code (ok, not_found, permission_denied, …); a stream counts when it ends.",
      labelNames: ["method", "code"],
      registers,
    });
    this.streamsOpen = new Gauge({
      name: "berth_streams_open",
      help: "Open streaming RPCs by method: WatchServers and WatchEvents subscribers, TailLogs readers, agent links (AgentService/Connect).",
      labelNames: ["method"],
      registers,
    });
    this.dbWriteDuration = new Histogram({
      name: "berth_sqlite_write_duration_seconds",
      help: "Time of the periodic write probe: BEGIN IMMEDIATE, a one-row upsert, COMMIT.",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.dbWritable = new Gauge({ name: "berth_database_writable", help: "1 when the last write probe succeeded, else 0.", registers });
    this.dbProbeFailures = new Counter({ name: "berth_database_write_failures_total", help: "Write probes that failed (locked, read-only, disk full, I/O error).", registers });
    this.eventLoop = new EventLoopDelay(this.registry, options.eventLoop);
  }

  /**
   * A ledger listener: counts events, commands and fired alerts. A command
   * event is labelled and timed by the command its writer put on it
   * (EventInput.command, not stored): reading each one back cost about 4% of
   * the manager's CPU in a connect storm (docs/benchmarks.md). Its duration
   * runs to the moment the event is heard.
   */
  readonly onEvent = (_id: number, e: Readonly<EventInput>, remote = false): void => {
    // Another manager's event is counted by that manager (summed over managers, each counts once).
    if (remote) return;
    this.eventsWritten.inc({ type: e.type });
    if (e.type === "alert.fired" && e.reason) this.alertsFired.inc({ rule: e.reason });
    // Without its command (a writer that did not say) the event is counted above only.
    if (!e.type.startsWith("command.") || !e.command) return;
    const kind = commandName(e.command.kind);
    if (e.type === "command.issued") {
      this.commandsIssued.inc({ kind });
      return;
    }
    const outcome = COMMAND_OUTCOMES[e.type];
    if (!outcome) return;
    const labels = { kind, outcome };
    this.commandsFinished.inc(labels);
    this.commandDuration.observe(labels, Math.max(0, this.now() - e.command.createdAt) / 1000);
  };

  /** For ReconcilerDeps.observeReconcile. */
  readonly observeReconcile = (ms: number, ok: boolean): void => {
    this.reconcileDuration.observe({ outcome: ok ? "ok" : "error" }, ms / 1000);
  };

  /** A write probe's outcome. */
  observeWriteProbe(ok: boolean, seconds: number): void {
    this.dbWritable.set(ok ? 1 : 0);
    if (ok) this.dbWriteDuration.observe(seconds);
    else this.dbProbeFailures.inc();
  }

  /**
   * Counts every RPC by method and code and tracks open streams. Outermost,
   * so it sees the codes clients see.
   */
  readonly interceptor: Interceptor = (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    let res;
    try {
      res = await next(req);
    } catch (err) {
      this.rpcs.inc({ method, code: codeName(ConnectError.from(err).code) });
      throw err;
    }
    if (!res.stream) {
      this.rpcs.inc({ method, code: "ok" });
      return res;
    }
    return { ...res, message: this.#tracked(method, res.message, req.signal) };
  };

  /** `source`, counted in berth_streams_open while it is being read and in berth_rpc_requests_total once it ends. */
  #tracked<T>(method: string, source: AsyncIterable<T>, signal: AbortSignal): AsyncIterable<T> {
    const metrics = this;
    return {
      [Symbol.asyncIterator]() {
        const it = source[Symbol.asyncIterator]();
        metrics.streamsOpen.inc({ method });
        let open = true;
        const finish = (code: string) => {
          if (!open) return;
          open = false;
          metrics.streamsOpen.dec({ method });
          // A watch ends quietly when its client goes away: that is a cancel, not an ok.
          metrics.rpcs.inc({ method, code: code === "ok" && signal.aborted ? "canceled" : code });
        };
        return {
          async next() {
            try {
              const r = await it.next();
              if (r.done) finish("ok");
              return r;
            } catch (err) {
              finish(codeName(ConnectError.from(err).code));
              throw err;
            }
          },
          async return(value?: unknown) {
            // The caller stopped reading: the client went away or cancelled.
            finish("canceled");
            return it.return ? it.return(value) : { done: true as const, value: value as T };
          },
        };
      },
    };
  }

  /**
   * The text Prometheus scrapes. With `names`, only those metrics (unknown
   * names are skipped): a cheap read of, say, the event-loop figures every
   * second without the fleet gauges' store reads.
   */
  async render(names?: readonly string[]): Promise<{ contentType: string; body: string }> {
    if (!names?.length) return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    const parts: string[] = [];
    for (const name of new Set(names)) if (this.registry.getSingleMetric(name)) parts.push(await this.registry.getSingleMetricAsString(name));
    return { contentType: this.registry.contentType, body: parts.map((p) => `${p}\n`).join("") };
  }
}
