/**
 * One fault campaign: start the cluster, run the workload and the fault
 * injector side by side for the given time, stop the faults, wait for berth
 * to quiesce, check the invariants, report.
 *
 *   runCampaign({ minutes, seed })  →  CampaignReport (violations: the goal is none)
 *
 * Replay a failing seed with the same --minutes and --seed: every decision
 * (operations, targets, faults, durations) comes from the seed; only the
 * timing of real processes differs between runs.
 */
import { appendFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cluster, firstLine, type StoreKind } from "./cluster.js";
import { runFaults } from "./faults.js";
import { checkInvariants, EventWatcher, quiesce, sampleDataDirs, type EndState } from "./invariants.js";
import { Rng } from "./rng.js";
import { faultKindsFor, Tracker, type OpStats, type Violation } from "./tracker.js";
import { runClient } from "./workload.js";

export interface CampaignOptions {
  minutes: number;
  seed: string;
  /** Concurrent operator clients (default 4). */
  clients?: number;
  /** Hosts, each a private dockerd and an agent (default 2). */
  hosts?: number;
  /** The store: "sqlite" (default, on a tmpfs) or "postgres" (a private PostgreSQL server started for the campaign). */
  store?: StoreKind;
  /** Managers on the one database (default 1; more need store "postgres"). */
  managers?: number;
  /** Prefix of the private dockerds (default "chaos"): campaigns running at once need different ones. */
  name?: string;
  /** First published host port (default 47100); host i uses portBase + 100 i .. + 39. */
  portBase?: number;
  /** Keep the work directory (logs, database) even when there is no violation. */
  keep?: boolean;
  /** Leave the private dockerds running afterwards (the next campaign starts faster). */
  keepEngines?: boolean;
  /**
   * Self-test of the checker: after quiescing, freeze one agent (SIGSTOP), remove a
   * running container and a data directory behind berth's back, and check at once.
   * The checks must report violations (berth cannot have seen the changes).
   */
  plant?: boolean;
  /** Where progress lines go (default stderr). */
  log?: (line: string) => void;
}

export interface CampaignReport {
  seed: string;
  minutes: number;
  hosts: number;
  clients: number;
  store: StoreKind;
  managers: number;
  operations: Record<string, OpStats>;
  totals: { accepted: number; rejected: number; unavailable: number };
  faults: Record<string, number>;
  quiesceMs: number;
  settled: boolean;
  end: EndState | undefined;
  violations: Violation[];
  workDir: string;
  durationMs: number;
}

/** A crashed process's exit is seen at most this long after its connections broke. */
const CRASH_SEEN_WITHIN_MS = 1_000;

export async function runCampaign(opts: CampaignOptions): Promise<CampaignReport> {
  const t0 = Date.now();
  const short = opts.minutes < 5;
  const hosts = opts.hosts ?? 2;
  const clientCount = opts.clients ?? 4;
  const store = opts.store ?? "sqlite";
  const managers = opts.managers ?? 1;
  const dir = await mkdtemp(join(tmpdir(), "berth-chaos-"));
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, "campaign.log");
  const out = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const log = (msg: string) => {
    const line = `[chaos +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`;
    appendFileSync(logFile, `${line}\n`);
    out(line);
  };
  const tracker = new Tracker();
  // Each violation in the log as it happens: its time is what ties it to a fault.
  tracker.onViolation = (v) => log(`VIOLATION ${v.invariant}: ${v.detail}`);
  const rng = new Rng(opts.seed);
  const cluster = new Cluster({
    name: opts.name ?? "chaos",
    hosts,
    store,
    managers,
    dir,
    // Room for the database of a long run; the disk-full fault fills whatever is left.
    dbDiskMb: Math.max(32, Math.ceil(opts.minutes * 6)),
    managerArgs: ["--crash-backoff", "1", "--start-timeout", "60", "--db-probe-interval", "1", "--orphan-grace", "5", "--log-level", short ? "debug" : "info"],
    agentArgs: ["--inventory-interval", "10"],
    log,
    onUnexpectedExit: (what, detail) => tracker.violation("no process crashes", `${what} ${detail}`),
    onManagerCrash: (index) => tracker.openWindow("manager-down", index, CRASH_SEEN_WITHIN_MS),
  });

  let quiesced = { ms: 0, settled: false };
  let end: EndState | undefined;
  const shape = managers > 1 || store !== "sqlite" ? `, ${managers} manager${managers > 1 ? "s" : ""} on ${store}` : "";
  const onSignal = () => {
    log("interrupted; cleaning up");
    void cluster.shutdown({ keepEngines: opts.keepEngines ?? false }).finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    log(`seed ${opts.seed}: ${opts.minutes} min, ${hosts} hosts, ${clientCount} clients${shape}; work dir ${dir}`);
    await cluster.start();
    log(`cluster up: ${cluster.managers.map((m) => `${m.label} http://127.0.0.1:${m.port}`).join(", ")}, hosts ${cluster.hosts.map((h) => `${h.label}=${h.hostId}`).join(" ")}`);
    const watchers = cluster.managers.map((m) => new EventWatcher(cluster, tracker, m.index));
    for (const w of watchers) w.start();
    const sampler = setInterval(() => sampleDataDirs(cluster, tracker), 500);

    const stopAt = Date.now() + opts.minutes * 60_000;
    const scale = short
      ? { gapMs: [2_000, 5_000] as [number, number], linkCutMs: [3_000, 10_000] as [number, number], diskFullMs: [2_000, 6_000] as [number, number], downMs: [200, 2_000] as [number, number], databaseDownMs: [5_000, 15_000] as [number, number] }
      : { gapMs: [5_000, 20_000] as [number, number], linkCutMs: [5_000, 60_000] as [number, number], diskFullMs: [5_000, 30_000] as [number, number], downMs: [500, 10_000] as [number, number], databaseDownMs: [5_000, 30_000] as [number, number] };
    await Promise.all([
      runFaults({ cluster, tracker, rng: rng.fork("faults"), stopAt, ...scale, log }),
      ...Array.from({ length: clientCount }, (_, i) =>
        runClient({ cluster, tracker, rng: rng.fork(`client-${i}`), clientIndex: i, stopAt, gapMs: [200, 1_500], maxServers: 6 * hosts, portBase: opts.portBase ?? 47_100 }),
      ),
    ]);
    log("faults stopped; waiting for berth to quiesce");
    quiesced = await quiesce(cluster, tracker, short ? 150_000 : 300_000, log);
    log(`quiesced in ${(quiesced.ms / 1000).toFixed(1)}s; checking invariants`);
    sampleDataDirs(cluster, tracker);
    clearInterval(sampler);
    const thaw = opts.plant ? await plantViolations(cluster, log) : undefined;
    end = await checkInvariants(cluster, tracker, watchers);
    thaw?.();
    for (const w of watchers) await w.stop();
  } catch (err) {
    tracker.violation("the campaign runs to its end", firstLine(err));
    log(`campaign aborted: ${err instanceof Error ? err.stack : String(err)}`);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cluster.shutdown({ keepEngines: opts.keepEngines ?? false }).catch((err: unknown) => log(`shutdown: ${firstLine(err)}`));
  }

  const operations = Object.fromEntries([...tracker.ops].sort(([a], [b]) => a.localeCompare(b)));
  const totals = { accepted: 0, rejected: 0, unavailable: 0 };
  for (const s of tracker.ops.values()) {
    totals.accepted += s.accepted;
    totals.rejected += Object.values(s.rejected).reduce((a, b) => a + b, 0);
    totals.unavailable += s.unavailable;
  }
  const report: CampaignReport = {
    seed: opts.seed,
    minutes: opts.minutes,
    hosts,
    clients: clientCount,
    store,
    managers,
    operations,
    totals,
    faults: Object.fromEntries(faultKindsFor(store).map((k) => [k, tracker.faults.get(k) ?? 0])),
    quiesceMs: quiesced.ms,
    settled: quiesced.settled,
    end,
    violations: tracker.violations,
    workDir: dir,
    durationMs: Date.now() - t0,
  };
  writeFileSync(join(dir, "report.json"), JSON.stringify(report, null, 2));
  if (report.violations.length === 0 && !opts.keep) await cluster.removeWorkDir().catch(() => {});
  return report;
}

/** See CampaignOptions.plant; returns how to let the frozen agent go again. */
async function plantViolations(cluster: Cluster, log: (m: string) => void): Promise<() => void> {
  const node = cluster.hosts[0]!;
  const pid = node.agent!.pid;
  process.kill(pid, "SIGSTOP");
  const running = await node.docker.listContainers({ filters: { label: [`berth.manager=${cluster.managerId}`] } });
  const victim = running[0];
  if (victim) await node.docker.getContainer(victim.Id).remove({ force: true });
  const dirs = readdirSync(node.dataRoot).filter((d) => d.startsWith("srv_"));
  if (dirs[0]) await rm(join(node.dataRoot, dirs[0]), { recursive: true, force: true });
  log(`planted: agent ${node.label} frozen, container ${victim?.Id.slice(0, 12) ?? "(none)"} and data directory ${dirs[0] ?? "(none)"} removed behind its back`);
  return () => process.kill(pid, "SIGCONT");
}

/** The report as people read it. */
export function formatReport(r: CampaignReport): string {
  const lines: string[] = [];
  const shape = r.managers > 1 || r.store !== "sqlite" ? `, ${r.managers} manager${r.managers > 1 ? "s" : ""} on ${r.store}` : "";
  lines.push(`berth chaos campaign — seed ${r.seed}, ${r.minutes} min, ${r.hosts} hosts, ${r.clients} clients${shape} (${(r.durationMs / 60_000).toFixed(1)} min in all)`);
  lines.push(`operations: ${r.totals.accepted} accepted, ${r.totals.rejected} rejected with a precise code, ${r.totals.unavailable} unavailable (${r.store === "sqlite" ? "manager down, disk full" : "manager down, database down"})`);
  for (const [op, s] of Object.entries(r.operations)) {
    const rej = Object.entries(s.rejected).map(([c, n]) => `${c} ${n}`).join(", ");
    lines.push(`  ${op.padEnd(12)} ${String(s.accepted).padStart(5)} accepted  ${rej ? `rejected: ${rej}` : ""}${s.unavailable ? `  unavailable ${s.unavailable}` : ""}`);
  }
  const faultTotal = Object.values(r.faults).reduce((a, b) => a + b, 0);
  lines.push(`faults injected: ${faultTotal} (${Object.entries(r.faults).map(([k, n]) => `${k} ${n}`).join(", ")})`);
  lines.push(`time to quiesce: ${(r.quiesceMs / 1000).toFixed(1)}s${r.settled ? "" : " (did not settle)"}`);
  if (r.end) {
    lines.push(`end state: ${r.end.servers} servers (${Object.entries(r.end.phases).map(([p, n]) => `${p.toLowerCase()} ${n}`).join(", ")}), ${r.end.containers} containers, ${r.end.events} ledger events`);
  }
  lines.push(`invariant violations: ${r.violations.length}`);
  for (const v of r.violations) lines.push(`  ✗ ${v.invariant}: ${v.detail}`);
  const replayShape = r.store === "sqlite" ? "" : ` --store ${r.store}${r.managers > 1 ? ` --managers ${r.managers}` : ""}`;
  if (r.violations.length) lines.push(`logs and database: ${r.workDir}\nreplay: npm run chaos -- --minutes ${r.minutes} --seed ${r.seed}${replayShape}`);
  return lines.join("\n");
}
