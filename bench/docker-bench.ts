/**
 * Real Docker, one host: berth (manager + agent processes, gRPC, WatchServers)
 * against the same operations made with dockerode directly, measured side by
 * side in one run on one engine, alternating berth and raw in every round.
 *
 * - Operation overhead: StartServer → RUNNING on WatchServers, vs
 *   container.start() → `start` on a direct events subscription; StopServer →
 *   STOPPED vs container.stop() → `stop`.
 * - Drift detection: a container of a running server stopped through the
 *   Docker API → phase STOPPED on WatchServers, vs the `die` event at a
 *   direct Docker events subscriber.
 * - Fleet create: N servers created through berth until all RUNNING, vs the
 *   same N containers (same config: the agent's containerConfig()) created
 *   and started with dockerode, every request in flight at once for both.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Dockerode from "dockerode";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { containerConfig } from "../agent/src/runtime/docker-runtime.js";
import { dockerClient, ensureDockerEngine, ensureTestImage, TEST_IMAGE, type DockerEngine } from "../test/harness/docker-engine.js";
import { freePort, startDockerAgent, startManager, type ManagerProc, type Proc } from "./lib/processes.js";
import type { Report } from "./lib/report.js";
import { mapLimit, summarize, wallMs } from "./lib/stats.js";
import { HostWatch, ServerWatch } from "./lib/watch.js";

export interface DockerBenchOptions {
  /** Measured rounds per operation (after `warmup` unmeasured ones). */
  rounds: number;
  warmup: number;
  /** Servers per fleet-create run, and how many runs. */
  fleetSize: number;
  fleetRuns: number;
  /** Keep the temporary directory (logs) for inspection. */
  keep: boolean;
}

const SUITE = "docker";
const COMMAND = ["sh", "-c", "exec sleep 100000"];
const OP_TIMEOUT_MS = 60_000;

/** A direct subscriber to the engine's container events, with arrival times. */
class DirectEvents {
  private readonly waiters = new Set<{ id: string; action: string; resolve: (t: number) => void }>();
  private stream: NodeJS.ReadableStream & { destroy(): void } | undefined;

  async start(docker: Dockerode): Promise<void> {
    this.stream = (await docker.getEvents({ filters: { type: ["container"] } })) as NodeJS.ReadableStream & { destroy(): void };
    let buf = "";
    this.stream.on("data", (chunk: Buffer) => {
      const at = wallMs();
      buf += chunk.toString("utf8");
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const e = JSON.parse(line) as { Action?: string; status?: string; Actor?: { ID?: string } };
        const action = (e.Action ?? e.status ?? "").split(":")[0];
        const id = e.Actor?.ID ?? "";
        for (const w of this.waiters) {
          if (w.id === id && w.action === action) {
            this.waiters.delete(w);
            w.resolve(at);
          }
        }
      }
    });
    this.stream.on("error", () => undefined);
  }

  /** The arrival time of the next `action` event of container `id` (register before acting). */
  next(id: string, action: string, timeoutMs = OP_TIMEOUT_MS): Promise<number> {
    return new Promise((resolve, reject) => {
      const w = {
        id,
        action,
        resolve: (t: number) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`no ${action} event for ${id.slice(0, 12)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  close(): void {
    this.stream?.destroy();
  }
}

export async function runDockerBench(report: Report, opts: DockerBenchOptions): Promise<{ dockerVersion: string }> {
  const runId = Math.random().toString(36).slice(2, 8);
  const dir = await mkdtemp(join(tmpdir(), "berth-bench-docker-"));
  let engine: DockerEngine | undefined;
  let docker: Dockerode | undefined;
  let manager: ManagerProc | undefined;
  let agent: Proc | undefined;
  let watch: ServerWatch | undefined;
  let hosts: HostWatch | undefined;
  const direct = new DirectEvents();
  let managerId = "";
  try {
    // A private engine of the benchmark's own ("bench") when no Docker is configured, so
    // integration tests running at the same time on the shared one do not disturb it.
    engine = await ensureDockerEngine({ name: "bench" });
    docker = dockerClient(engine.dockerHost);
    await ensureTestImage(docker);
    const dockerVersion = (await docker.version()).Version;
    await direct.start(docker);

    manager = await startManager({ dir, dbPath: join(dir, "berth.db"), port: await freePort() });
    managerId = manager.managerId;
    hosts = new HostWatch(manager.events, manager.hosts);
    await hosts.ready;
    agent = await startDockerAgent({ manager, dir, dockerHost: engine.dockerHost, dataRoot: join(dir, "data") });
    await hosts.untilOnline(1, 60_000);
    watch = new ServerWatch(manager.servers);
    await watch.snapshotDone;
    const d = docker;
    const w = watch;
    const m = manager;

    // --- one berth server and one raw container, identical config ------------------------
    const { server } = await m.servers.createServer({ spec: { name: `bench-op-${runId}`, image: TEST_IMAGE, command: COMMAND, dataMountPath: "/data" } });
    const id = server!.id;
    await waitPhase(w, id, Phase.RUNNING);
    await mkdir(join(dir, "raw", "op"), { recursive: true });
    const raw = await d.createContainer(rawConfig(`berth-bench-raw-${runId}`, runId, join(dir, "raw", "op")));
    await raw.start();

    // --- operation overhead ----------------------------------------------------------------
    const berthStart: number[] = [];
    const berthStop: number[] = [];
    const rawStart: number[] = [];
    const rawStop: number[] = [];
    for (let i = 0; i < opts.warmup + opts.rounds; i++) {
      const keep = i >= opts.warmup;
      let t0 = wallMs();
      let seen = w.nextPhase(id, Phase.STOPPED, OP_TIMEOUT_MS);
      await m.servers.stopServer({ id });
      const bStop = (await seen) - t0;

      t0 = wallMs();
      let ev = direct.next(raw.id, "stop");
      await raw.stop({ t: 10 });
      const rStop = (await ev) - t0;

      t0 = wallMs();
      seen = w.nextPhase(id, Phase.RUNNING, OP_TIMEOUT_MS);
      await m.servers.startServer({ id });
      const bStart = (await seen) - t0;

      t0 = wallMs();
      ev = direct.next(raw.id, "start");
      await raw.start();
      const rStart = (await ev) - t0;
      if (keep) {
        berthStop.push(bStop);
        rawStop.push(rStop);
        berthStart.push(bStart);
        rawStart.push(rStart);
      }
    }
    report.figure(SUITE, "start: berth (StartServer → RUNNING on WatchServers)", "ms", berthStart);
    report.figure(SUITE, "start: raw (container.start() → start event)", "ms", rawStart);
    report.figure(SUITE, "stop: berth (StopServer → STOPPED on WatchServers)", "ms", berthStop);
    report.figure(SUITE, "stop: raw (container.stop() → stop event)", "ms", rawStop);
    opTargets(report, "start", berthStart, rawStart);
    opTargets(report, "stop", berthStop, rawStop);

    // --- drift detection -------------------------------------------------------------------
    // A server of its own, as in the earlier runs (the agent once took any exit within 10 s of
    // berth's own stop of the same container for berth's; now only the exit that stop caused).
    const { server: driftServer } = await m.servers.createServer({ spec: { name: `bench-drift-${runId}`, image: TEST_IMAGE, command: COMMAND, dataMountPath: "/data" } });
    const driftId = driftServer!.id;
    await waitPhase(w, driftId, Phase.RUNNING);
    const driftOverhead: number[] = [];
    const driftDirect: number[] = [];
    const driftBerth: number[] = [];
    const firstChange: number[] = [];
    for (let i = 0; i < opts.warmup + opts.rounds; i++) {
      const { server: s } = await m.servers.getServer({ id: driftId });
      const containerId = s!.status!.containerId;
      const c = d.getContainer(containerId);
      // The first change that shows the stop in any way (desired state adopted, or the container not running).
      const anyChange = w.nextChange(driftId, (v) => v.desired === DesiredState.STOPPED || v.containerState !== "running", `${driftId} to show the stop`, OP_TIMEOUT_MS);
      const stopped = w.nextPhase(driftId, Phase.STOPPED, OP_TIMEOUT_MS);
      const die = direct.next(containerId, "die");
      const t0 = wallMs();
      await c.stop({ t: 10 });
      const [tDie, tStopped, tAny] = await Promise.all([die, stopped, anyChange]);
      if (i >= opts.warmup) {
        driftOverhead.push(tStopped - tDie);
        driftDirect.push(tDie - t0);
        driftBerth.push(tStopped - t0);
        firstChange.push(tAny - tDie);
      }
      // The stop was adopted as the desired state: start it again for the next round.
      const running = w.nextPhase(driftId, Phase.RUNNING, OP_TIMEOUT_MS);
      await m.servers.startServer({ id: driftId });
      await running;
    }
    report.figure(SUITE, "drift: die event at a direct Docker subscriber (from stop call)", "ms", driftDirect);
    report.figure(SUITE, "drift: STOPPED on WatchServers (from stop call)", "ms", driftBerth);
    report.figure(SUITE, "drift: berth overhead (STOPPED on WatchServers − direct die)", "ms", driftOverhead);
    report.figure(SUITE, "drift: first WatchServers change − direct die", "ms", firstChange, "the adopted desired state (stopped) arrives one publish before the STOPPED phase");
    const dp99 = summarize(driftOverhead).p99;
    report.target("drift detection overhead p99", "≤ 50 ms", `${dp99.toFixed(1)} ms`, dp99 <= 50);

    // --- fleet create ----------------------------------------------------------------------
    const berthFleet: number[] = [];
    const rawFleet: number[] = [];
    const ratios: number[] = [];
    for (let run = 0; run < opts.fleetRuns; run++) {
      const n = opts.fleetSize;
      const names = Array.from({ length: n }, (_, i) => `bench-fleet-${runId}-${run}-${i}`);
      const nameSet = new Set(names);
      const running = () => {
        let k = 0;
        for (const s of w.servers.values()) if (nameSet.has(s.name) && s.phase === Phase.RUNNING) k++;
        return k === n;
      };
      let t0 = wallMs();
      const allRunning = w.until(`${n} fleet servers RUNNING`, running, 300_000);
      const created = await mapLimit(names, n, async (name) => (await m.servers.createServer({ spec: { name, image: TEST_IMAGE, command: COMMAND, dataMountPath: "/data" } })).server!.id);
      await allRunning;
      const tBerth = wallMs() - t0;

      await mkdir(join(dir, "raw", `fleet-${run}`), { recursive: true });
      t0 = wallMs();
      const rawIds = await mapLimit(names, n, async (name, i) => {
        const dataDir = join(dir, "raw", `fleet-${run}`, String(i));
        await mkdir(dataDir, { recursive: true });
        const c = await d.createContainer(rawConfig(`raw-${name}`, runId, dataDir));
        const started = direct.next(c.id, "start", 300_000);
        await c.start();
        await started;
        return c.id;
      });
      const tRaw = wallMs() - t0;
      berthFleet.push(tBerth);
      rawFleet.push(tRaw);
      ratios.push(tBerth / tRaw);

      // Clean up before the next run: berth's servers through berth (purge), raw ones directly.
      const gone = w.until("fleet servers purged", () => created.every((sid) => !w.servers.has(sid)), 300_000);
      await mapLimit(created, n, (sid) => m.servers.purgeServer({ id: sid, removeData: true }));
      await gone;
      await mapLimit(rawIds, 16, (cid) => d.getContainer(cid).remove({ force: true }).catch(() => undefined));
    }
    report.sizes["docker fleet size"] = opts.fleetSize;
    report.figure(SUITE, `fleet create ${opts.fleetSize}: berth (CreateServer ×${opts.fleetSize} → all RUNNING)`, "ms", berthFleet);
    report.figure(SUITE, `fleet create ${opts.fleetSize}: raw (create+start ×${opts.fleetSize} → all start events)`, "ms", rawFleet);
    report.figure(SUITE, `fleet create ${opts.fleetSize}: ratio berth / raw`, "x", ratios);
    return { dockerVersion };
  } finally {
    watch?.close();
    hosts?.close();
    direct.close();
    await agent?.stop();
    await manager?.stop();
    if (docker) await removeBenchContainers(docker, runId, managerId);
    await engine?.stop();
    if (!opts.keep) await rm(dir, { recursive: true, force: true });
    else report.note(`docker suite files kept in ${dir}`);
  }
}

async function waitPhase(w: ServerWatch, id: string, phase: Phase): Promise<void> {
  await w.until(`${id} ${Phase[phase]}`, () => w.servers.get(id)?.phase === phase, OP_TIMEOUT_MS);
}

/** The agent's own container config (same image, init, mounts, security options), labelled as the benchmark's. */
function rawConfig(name: string, runId: string, dataDir: string): Dockerode.ContainerCreateOptions {
  return containerConfig({ name, image: TEST_IMAGE, command: COMMAND, env: {}, labels: { "berth-bench": runId }, ports: [], dataDir, mountPath: "/data" });
}

/** Targets for one operation: ≤ 1.3× raw and ≤ 30 ms added, at the median. */
function opTargets(report: Report, op: string, berth: number[], raw: number[]): void {
  const b = summarize(berth).median;
  const r = summarize(raw).median;
  report.figure(SUITE, `${op}: ratio berth / raw (medians)`, "x", [b / r]);
  report.target(`${op} overhead ratio (median)`, "≤ 1.3×", `${(b / r).toFixed(2)}× (${b.toFixed(1)} vs ${r.toFixed(1)} ms)`, b / r <= 1.3);
  report.target(`${op} overhead added (median)`, "≤ 30 ms", `${(b - r).toFixed(1)} ms`, b - r <= 30);
}

/** Removes every container this run created: berth's (by manager id) and the raw ones (by label). */
async function removeBenchContainers(d: Dockerode, runId: string, managerId: string): Promise<void> {
  const filters = [`berth-bench=${runId}`, ...(managerId ? [`berth.manager=${managerId}`] : [])];
  for (const label of filters) {
    const list = await d.listContainers({ all: true, filters: { label: [label] } }).catch(() => []);
    await mapLimit(list, 16, (c) => d.getContainer(c.Id).remove({ force: true }).catch(() => undefined));
  }
}
