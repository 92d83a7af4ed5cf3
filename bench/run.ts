/**
 * `npm run bench` (quick, under 3 minutes) and `npm run bench -- --full`:
 * berth against raw Docker on one host, the cost of sampling 100 containers'
 * usage, then one manager under thousands of simulated agents; with --full (or --only data) also backup and transfer
 * throughput of a 1 GiB tree (data-bench.ts). Prints tables and writes bench/results/<timestamp>.json,
 * and the scale suite's charts (bench/charts.ts) into <timestamp>-charts/.
 * `--stores sqlite,postgres,postgres-2` runs the scale suite once per store
 * configuration and adds a side-by-side table of its figures.
 * Targets are goals, printed as PASS/FAIL: a missed target does not fail the
 * run; an error in a suite does (exit code 1), after the other suites ran.
 * docs/benchmarks.md explains every figure and holds the latest full run.
 */
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runDataBench } from "./data-bench.js";
import { runDockerBench } from "./docker-bench.js";
import { writeChartsFromResults } from "./lib/chart-files.js";
import { REPO_ROOT, stopAll } from "./lib/processes.js";
import { loadAverage } from "./lib/proc-stats.js";
import { Report } from "./lib/report.js";
import { parseStores, postgresDataDir, stopPostgres, STORES_HELP, type StoreConfig } from "./lib/stores.js";
import { runScaleBench, scaleSizes } from "./scale-bench.js";
import { runUsageBench } from "./usage-bench.js";
import { runAggregateBench } from "./aggregate-bench.js";

const USAGE = `npm run bench [-- options]

  --full              the full sizes (default: quick, < 3 min)
  --only SUITES       comma-separated: docker, usage, scale, data, aggregate (default docker,usage,scale;
                      --full adds data and aggregate)
  --aggregate-events N  ledger events the aggregate suite writes (1000000, over 30 days)
  --aggregate-store E   sqlite (default) or postgres (the bench's private PostgreSQL)
  --usage-containers N  running containers the usage suite samples (100)
  --agents N          simulated agents (quick 500, full 5000)
  --servers-per-agent M  (20)
  --churn-rate R      container events per second (quick 1000, full 5000)
  --churn-seconds S   (30)
  --stop-count N      servers in the mass stop (quick 2000, full 10000)
  --fleet-procs K     processes for the simulated agents (quick 1, full 2)
  --storm MODE        existing (default): every host already runs its containers, each server
                      needs one reconcile; empty: every container is created through commands
  --stores LIST       the scale suite once per store, in this order, then a side-by-side table:
                      ${STORES_HELP}
                      (default sqlite; PostgreSQL is a private server this run starts)
  --phase-timeout S   the storm, the mass stop and the restart get this long; then what was
                      reached is recorded and the run goes on (quick 150, full 420)
  --rounds N          measured rounds per Docker operation (quick 10, full 30)
  --fleet-size N      servers per Docker fleet-create run (quick 30, full 100)
  --profile           run the scale suite's manager with --cpu-prof (profiles kept with the logs)
  --data-mib N        size of the data suite's generated tree in MiB (1024)
  --keep              keep temporary directories (logs, databases)
  --out FILE          results file (default bench/results/<timestamp>.json)
`;

const { values } = parseArgs({
  options: {
    full: { type: "boolean", default: false },
    only: { type: "string" },
    "usage-containers": { type: "string" },
    agents: { type: "string" },
    "servers-per-agent": { type: "string" },
    "churn-rate": { type: "string" },
    "churn-seconds": { type: "string" },
    "stop-count": { type: "string" },
    "fleet-procs": { type: "string" },
    "phase-timeout": { type: "string" },
    storm: { type: "string" },
    stores: { type: "string" },
    rounds: { type: "string" },
    "fleet-size": { type: "string" },
    "data-mib": { type: "string" },
    "aggregate-events": { type: "string" },
    "aggregate-store": { type: "string" },
    profile: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    out: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

const num = (v: string | undefined, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`bench: "${v}" is not a whole number >= 1\n${USAGE}`);
    process.exit(2);
  }
  return n;
};

function stormMode(v: string | undefined): "existing" | "empty" | undefined {
  if (v === undefined || v === "existing" || v === "empty") return v;
  process.stderr.write(`bench: --storm is existing or empty, not "${v}"\n${USAGE}`);
  process.exit(2);
}

function storeConfigs(v: string | undefined): StoreConfig[] {
  if (v === undefined) return [{ label: "sqlite", engine: "sqlite", managers: 1 }];
  try {
    return parseStores(v);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

const full = values.full;
const stores = storeConfigs(values.stores);
// The data suite moves ~10 GB and takes minutes: only with --full or --only data.
const suites = new Set((values.only ?? (full ? "docker,usage,scale,data,aggregate" : "docker,usage,scale")).split(",").map((s) => s.trim()));
const startedAt = new Date();
const report = new Report();
const t0 = performance.now();
let failed = false;

/**
 * Writes the results (also those of a run cut short), then the charts of the
 * per-second series beside them (not after an interruption), and exits.
 */
async function finish(code: number, interrupted = false): Promise<never> {
  const stamp = startedAt.toISOString().replace(/[:.]/g, "-");
  const out = values.out ?? join(REPO_ROOT, "bench", "results", `${stamp}.json`);
  if (interrupted) report.note("the run was interrupted: figures after the interruption are missing");
  report.write(out, {
    startedAt: startedAt.toISOString(),
    mode: full ? "full" : "quick",
    command: `npm run bench --${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}`,
    durationS: Math.round((performance.now() - t0) / 1000),
    machine,
  });
  process.stdout.write("\n" + report.render());
  process.stdout.write(`\nresults: ${out} (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  if (report.series.length) {
    const dir = out.replace(/\.json$/, "") + "-charts";
    const again = `node --import tsx bench/charts.ts ${out}`;
    if (interrupted) process.stdout.write(`charts: not drawn after an interruption; ${again}\n`);
    else {
      // A chart failure is reported, never the run's result: the figures are already written.
      await writeChartsFromResults(out, dir).then(
        (w) => process.stdout.write(`charts: ${dir}/ (${w.files.length} files${w.pngSkipped ? `; ${w.pngSkipped}` : ""}); for docs/bench-charts/: ${again}\n`),
        (err: unknown) => process.stderr.write(`charts: failed (${String((err as Error).stack ?? err)}); try again: ${again}\n`),
      );
    }
  }
  process.exit(code);
}

// Whatever happens (Ctrl-C included), no process this run started outlives it.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    process.stderr.write(`bench: ${sig}, stopping what was started\n`);
    void stopAll()
      .then(() => stopPostgres())
      .finally(() => finish(130, true));
  });
}

const machine: Record<string, unknown> = {
  cores: cpus().length,
  cpuModel: cpus()[0]?.model ?? "",
  memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  node: process.version,
  kernel: release(),
  docker: "not used",
};
process.stdout.write(`berth benchmarks (${full ? "full" : "quick"}) on ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}\n`);

if (suites.has("docker")) {
  const rounds = num(values.rounds, full ? 30 : 10);
  const fleetSize = num(values["fleet-size"], full ? 100 : 30);
  const fleetRuns = full ? 3 : 2;
  process.stdout.write(`[docker] ${rounds} rounds per operation, fleet ${fleetRuns} × ${fleetSize} ...\n`);
  try {
    report.note(`docker suite: load average ${loadAverage().toFixed(1)} at its start (other processes share this machine's ${cpus().length} cores)`);
    const { dockerVersion } = await runDockerBench(report, { rounds, warmup: 2, fleetSize, fleetRuns, keep: values.keep });
    machine.docker = dockerVersion;
  } catch (err) {
    failed = true;
    report.errors.push({ suite: "docker", error: String((err as Error).stack ?? err) });
    process.stderr.write(`[docker] failed: ${String((err as Error).stack ?? err)}\n`);
  }
  process.stdout.write(`[docker] done after ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

if (suites.has("usage")) {
  const containers = num(values["usage-containers"], 100);
  const rounds = full ? 20 : 8;
  process.stdout.write(`[usage] sampling ${containers} running containers: cgroup files vs Docker's one-shot stats, ${rounds} rounds each ...\n`);
  try {
    await runUsageBench(report, { containers, rounds });
  } catch (err) {
    failed = true;
    report.errors.push({ suite: "usage", error: String((err as Error).stack ?? err) });
    process.stderr.write(`[usage] failed: ${String((err as Error).stack ?? err)}\n`);
  }
  process.stdout.write(`[usage] done after ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

if (suites.has("scale")) {
  const opt = (v: string | undefined) => (v === undefined ? undefined : num(v, 0));
  const sizes = scaleSizes(full, {
    agents: opt(values.agents),
    serversPerAgent: opt(values["servers-per-agent"]),
    churnRate: opt(values["churn-rate"]),
    churnSeconds: opt(values["churn-seconds"]),
    stopCount: opt(values["stop-count"]),
    fleetProcs: opt(values["fleet-procs"]),
    phaseTimeoutS: opt(values["phase-timeout"]),
    storm: stormMode(values.storm),
  });
  process.stdout.write(`[scale] ${sizes.agents} agents × ${sizes.serversPerAgent} servers, churn ${sizes.churnRate}/s for ${sizes.churnSeconds} s, mass stop ${sizes.stopCount} ...\n`);
  // One store: figures under "scale", as always. Several: each under scale:<store>, then side by side.
  const several = stores.length > 1;
  if (values.stores !== undefined) report.sizes["scale stores"] = stores.map((c) => c.label).join(", ");
  for (const store of stores) {
    const suite = several ? `scale:${store.label}` : "scale";
    const prefix = several ? `[scale ${store.label}]` : "[scale]";
    if (several) process.stdout.write(`${prefix} ${store.engine === "sqlite" ? "SQLite, one manager" : `PostgreSQL, ${store.managers} manager${store.managers > 1 ? "s" : ""}`} ...\n`);
    try {
      report.note(`${several ? `[${store.label}] ` : ""}scale suite: load average ${loadAverage().toFixed(1)} at its start`);
      await runScaleBench(report, {
        ...sizes,
        store,
        suite,
        ...(several ? { label: store.label } : {}),
        profile: values.profile,
        keep: values.keep,
        log: (s) => process.stdout.write(`${prefix} ${s}\n`),
      });
    } catch (err) {
      failed = true;
      report.errors.push({ suite, error: String((err as Error).stack ?? err) });
      process.stderr.write(`${prefix} failed: ${String((err as Error).stack ?? err)}\n`);
    }
    process.stdout.write(`${prefix} done after ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  }
  const pgData = await postgresDataDir();
  const pgKept = await stopPostgres({ keep: values.keep }).catch((err: unknown) => {
    report.note(`stopping the bench's PostgreSQL failed: ${String(err)}`);
    return undefined;
  });
  if (pgData) {
    report.note(
      `PostgreSQL: a private server started by this run (fsync on, synchronous_commit off — SQLite's WAL with synchronous=NORMAL promises the same), data in ${pgData}` +
        (pgData.startsWith("/dev/shm") ? " (memory: /dev/shm had room; the SQLite file is in the temp dir)" : "") +
        (pgKept ? `; kept in ${pgKept}/data (look: runuser -u postgres -- pg_ctl start -D ${pgKept}/data -o "-p PORT -k /tmp")` : ""),
    );
  }
  if (several) {
    const { agents, serversPerAgent } = sizes;
    report.sideBySide(
      `scale suite side by side (${agents.toLocaleString("en")}×${serversPerAgent}, churn ${sizes.churnRate}/s, mass stop ${sizes.stopCount}); managers: ${stores.map((c) => `${c.label} ${c.managers}`).join(", ")}`,
      stores.map((c) => ({ label: c.label, suite: `scale:${c.label}` })),
    );
  }
}

if (suites.has("aggregate")) {
  const events = num(values["aggregate-events"], 1_000_000);
  process.stdout.write(`[aggregate] QueryService.Aggregate over ${events} ledger events (${values["aggregate-store"] ?? "sqlite"}) ...\n`);
  try {
    report.note(`aggregate suite: load average ${loadAverage().toFixed(1)} at its start`);
    const engine = values["aggregate-store"] === "postgres" ? "postgres" : "sqlite";
    await runAggregateBench(report, { events, days: 30, rounds: full ? 10 : 5, engine, keep: values.keep });
    if (engine === "postgres") await stopPostgres({ keep: values.keep });
  } catch (err) {
    failed = true;
    report.errors.push({ suite: "aggregate", error: String((err as Error).stack ?? err) });
    process.stderr.write(`[aggregate] failed: ${String((err as Error).stack ?? err)}\n`);
  }
  process.stdout.write(`[aggregate] done after ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

if (suites.has("data")) {
  const sizeMiB = num(values["data-mib"], 1024);
  process.stdout.write(`[data] backup pack, restore and transfer of a ${sizeMiB} MiB tree against tar, gzip and zstd ...\n`);
  try {
    await runDataBench(report, { sizeMiB, rounds: 1, keep: values.keep, log: (s) => process.stdout.write(`[data] ${s}\n`) });
  } catch (err) {
    failed = true;
    report.errors.push({ suite: "data", error: String((err as Error).stack ?? err) });
    process.stderr.write(`[data] failed: ${String((err as Error).stack ?? err)}\n`);
  }
  process.stdout.write(`[data] done after ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

await stopAll();
await finish(failed ? 1 : 0);
