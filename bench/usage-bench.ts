/**
 * What sampling the usage of many running containers costs an agent, on a
 * real Docker engine: the agent's own sampler (cgroup and /proc files,
 * agent/src/usage/sampler.ts) against Docker's one-shot stats API
 * (`GET /containers/<id>/stats?stream=false&one-shot=true`, what `docker stats
 * --no-stream` uses), for the same containers, round after round.
 *
 * Per round: the benchmark process's CPU time (what the agent would spend),
 * the wall time of the round, and for the stats API the Docker daemon's CPU
 * time too (it does the reading there). At one round every 10 s (the
 * agent's default), CPU time per round / 10 s is the share of one core.
 */
import { readFile } from "node:fs/promises";
import type Dockerode from "dockerode";
import { containerConfig } from "../agent/src/runtime/docker-runtime.js";
import { UsageSampler } from "../agent/src/usage/sampler.js";
import { dockerClient, ensureDockerEngine, ensureTestImage, TEST_IMAGE, type DockerEngine } from "../test/harness/docker-engine.js";
import type { Report } from "./lib/report.js";
import { mapLimit } from "./lib/stats.js";

export interface UsageBenchOptions {
  /** Running containers sampled (default 100). */
  containers: number;
  /** Measured rounds of each method (after two unmeasured ones). */
  rounds: number;
}

const SUITE = "usage";

/** CPU time (user + system) of process `pid` in ms, from /proc/<pid>/stat; undefined when unreadable. */
async function processCpuMs(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (!text) return undefined;
  // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th overall.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) / 100) * 1000;
}

/** The engine's daemon pid: the one this run started, or the one listening on the socket (pidof dockerd as the last resort). */
async function dockerdPid(engine: DockerEngine): Promise<number | undefined> {
  if (engine.ownedPid) return engine.ownedPid;
  const pids = (await readFile("/run/docker.pid", "utf8").catch(() => "")).trim();
  return pids ? Number(pids) : undefined;
}

export async function runUsageBench(report: Report, opts: UsageBenchOptions): Promise<void> {
  const engine = await ensureDockerEngine({ name: "bench" });
  const docker = dockerClient(engine.dockerHost);
  const run = Math.random().toString(36).slice(2, 8);
  const ids: string[] = [];
  try {
    await ensureTestImage(docker);
    await mapLimit(
      Array.from({ length: opts.containers }, (_, i) => i),
      8,
      async (i) => {
        const cfg = containerConfig({ name: `berth-bench-usage-${run}-${i}`, image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"], env: {}, labels: { "berth.bench": run }, ports: [], dataDir: "/tmp", mountPath: "/data" });
        const c = await docker.createContainer(cfg);
        await c.start();
        ids.push(c.id);
      },
    );
    const containers = ids.map((id, i) => ({ id, serverId: `srv_bench${i}`, startedMs: 1 }));
    const pidOf = async (id: string) => {
      const c = await docker.getContainer(id).inspect();
      return c.State.Running ? c.State.Pid : undefined;
    };
    const sampler = new UsageSampler({ running: () => containers, initPid: pidOf, dataRoot: "/" });
    const stats = (d: Dockerode) => mapLimit(ids, 16, (id) => d.getContainer(id).stats({ stream: false, "one-shot": true } as { stream: false }));
    const dockerd = await dockerdPid(engine);

    const measure = async (one: () => Promise<unknown>) => {
      for (let i = 0; i < 2; i++) await one(); // warm-up; the sampler's first round also looks up the pids
      const cpu: number[] = [];
      const wall: number[] = [];
      const daemon: number[] = [];
      for (let r = 0; r < opts.rounds; r++) {
        const c0 = process.cpuUsage();
        const d0 = await processCpuMs(dockerd);
        const t0 = performance.now();
        await one();
        wall.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu.push((c.user + c.system) / 1000);
        const d1 = await processCpuMs(dockerd);
        if (d0 !== undefined && d1 !== undefined) daemon.push(d1 - d0);
      }
      return { cpu, wall, daemon };
    };

    const files = await measure(() => sampler.sample());
    const api = await measure(() => stats(docker));
    const n = opts.containers;
    report.figure(SUITE, `cgroup files: agent CPU per round of ${n} containers + host`, "ms", files.cpu);
    report.figure(SUITE, `cgroup files: wall time per round of ${n} containers + host`, "ms", files.wall);
    report.figure(SUITE, `cgroup files: dockerd CPU per round`, "ms", files.daemon, "no Docker call once the pids are known (one inspect per container run)");
    report.figure(SUITE, `one-shot stats API: agent CPU per round of ${n} containers`, "ms", api.cpu);
    report.figure(SUITE, `one-shot stats API: wall time per round of ${n} containers (16 in flight)`, "ms", api.wall);
    report.figure(SUITE, `one-shot stats API: dockerd CPU per round`, "ms", api.daemon);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
    const share = (ms: number) => (ms / 10_000) * 100;
    const filesShare = share(median(files.cpu) + median(files.daemon));
    const apiShare = share(median(api.cpu) + median(api.daemon));
    report.target(`sampling ${n} containers every 10 s (agent + dockerd CPU, % of one core)`, "cgroup files cheaper than the stats API", `files ${filesShare.toFixed(2)} %, stats API ${apiShare.toFixed(2)} %`, filesShare < apiShare);
  } finally {
    await mapLimit(ids, 8, (id) => docker.getContainer(id).remove({ force: true }).catch(() => undefined));
    await engine.stop();
  }
}
