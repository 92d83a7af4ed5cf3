/**
 * `npm run test:integration`: the integration files in two lanes at once
 * (test/harness/lanes.ts), each lane one file at a time, each on a Docker
 * engine of its own:
 *
 *   lane A  vitest run --project integration            (minus lane B's files)
 *           on the run's engine (test/harness/global-setup.ts's choice)
 *   lane B  vitest run --project integration <lane B's files>, then
 *           vitest run --project integration-pg
 *           on a private dockerd "lane-b"
 *
 * Two engines, so no file sees another's containers (another manager's
 * containers would be listed as orphans and raise orphan_found alerts). Each
 * vitest run starts its own PostgreSQL server (test/harness/postgres-setup.ts).
 * The files wait on Docker, timers and child processes for a good part of
 * their time; on a 2-core machine the lanes together take about two thirds of
 * running every file in one line.
 *
 * Exit code: 0 when every run passed, else 1. Output: each line prefixed with
 * its lane.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { dockerClient, ensureDockerEngine, ensureTestImage, startPrivateDockerd, type DockerEngine } from "../test/harness/docker-engine.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const VITEST = join(root, "node_modules/vitest/vitest.mjs");
const children = new Set<ChildProcess>();

/** Runs `vitest run <args>` with `env`, each output line prefixed with `tag`; resolves to its exit code. */
function vitest(tag: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, [VITEST, "run", ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => process.stdout.write(`[${tag}] ${line}\n`));
  }
  return new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

/** The run's engine, ready for the integration files: the test image there, stale project networks gone. */
async function prepared(engine: DockerEngine): Promise<DockerEngine> {
  const docker = dockerClient(engine.dockerHost);
  await ensureTestImage(docker);
  await docker.pruneNetworks({ filters: JSON.stringify({ label: ["berth.manager"] }) }).catch(() => {});
  return engine;
}

const engines: DockerEngine[] = [];
let stopping = false;
async function stopAll(): Promise<void> {
  for (const c of children) c.kill("SIGTERM");
  for (const e of engines.splice(0)) await e.stop().catch((err: unknown) => console.error(`[berth] could not stop ${e.dockerHost}: ${String(err)}`));
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    if (stopping) return;
    stopping = true;
    void stopAll().then(() => process.exit(130));
  });
}

let code = 1;
try {
  const t0 = Date.now();
  const [a, b] = await Promise.all([ensureDockerEngine().then(prepared), startPrivateDockerd("lane-b").then(prepared)]);
  engines.push(a, b);
  console.log(`[berth] integration lanes: A on ${a.dockerHost}, B on ${b.dockerHost} (ready in ${Date.now() - t0} ms)`);
  // The engine is prepared here: global-setup.ts reuses it (DOCKER_HOST) and leaves its networks alone.
  const envA = { DOCKER_HOST: a.dockerHost, BERTH_INTEGRATION_LANE: "a", BERTH_TEST_ENGINE_PREPARED: "1" };
  const envB = { DOCKER_HOST: b.dockerHost, BERTH_INTEGRATION_LANE: "b", BERTH_TEST_ENGINE_PREPARED: "1" };
  const [laneA, laneB] = await Promise.all([
    vitest("A", ["--project", "integration"], envA),
    (async () => {
      const sqlite = await vitest("B", ["--project", "integration"], envB);
      const pg = await vitest("B pg", ["--project", "integration-pg"], envB);
      return sqlite || pg;
    })(),
  ]);
  console.log(`[berth] integration lanes: A ${laneA === 0 ? "passed" : `failed (${laneA})`}, B ${laneB === 0 ? "passed" : `failed (${laneB})`}, ${Math.round((Date.now() - t0) / 1000)} s`);
  code = laneA === 0 && laneB === 0 ? 0 : 1;
} catch (err) {
  console.error(`[berth] integration lanes: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  if (!stopping) await stopAll();
}
process.exit(code);
