/**
 * Vitest globalSetup for the integration projects: one Docker engine per
 * worker (see docker-engine.ts), each with the local test image. A file runs
 * alone on its worker's engine, so the containers an agent under test sees
 * are those of its own file, whatever runs beside it. Workers find theirs
 * through `testDockerHost()` (engine.ts); `worker-engine.ts`, a setup file,
 * also puts it in process.env.DOCKER_HOST, inherited by the managers and
 * agents a test spawns.
 */
import type { TestProject } from "vitest/node";
import { ensureWebBuilt } from "../browser/browser.js";
import { bundleForTests } from "./bundles.js";
import { dockerClient, ensureDockerEngine, ensureTestImage, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./docker-engine.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** "unix:///..." of each worker's engine: VITEST_POOL_ID n uses entry n-1. */
    dockerHosts: string[];
  }
}

/** Starts or reuses the engines; the returned teardown stops the ones this run started. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  // The programs the tests spawn, from the sources as they are now (bundles.ts), and the
  // dashboard when its build is older than its sources: here once, not by browser files
  // running side by side. Settled, never rejected: a failure is thrown below, after the
  // engines are stopped.
  const bundled = Promise.all([bundleForTests(), ensureWebBuilt()]).then(() => undefined, (e: unknown) => e ?? new Error("bundling failed"));
  // Vitest resolves maxWorkers to 1 for a project with fileParallelism off.
  const workers = Math.max(1, project.config.maxWorkers);
  // The first worker takes the engine the environment offers ($DOCKER_HOST, the system's, or a
  // private "default"); every other worker a private dockerd of its own.
  const started = await Promise.allSettled([
    ensureDockerEngine(),
    ...Array.from({ length: workers - 1 }, (_, i) => startPrivateDockerd(`worker-${i + 2}`)),
  ]);
  const engines = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const stopAll = async () => {
    await Promise.all(engines.map((e) => e.stop()));
  };
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await stopAll();
    throw failed.reason;
  }
  try {
    await Promise.all(engines.map((e) => prepare(e)));
    const bundleError = await bundled;
    if (bundleError) throw bundleError;
  } catch (e) {
    await stopAll();
    throw e;
  }
  project.provide("dockerHosts", engines.map((e) => e.dockerHost));

  for (const [i, engine] of engines.entries()) {
    const how = engine.ownedPid ? `started private dockerd pid ${engine.ownedPid}` : "reused running engine";
    console.log(`[berth] worker ${i + 1}: docker engine ${engine.dockerHost} (${how})`);
  }
  console.log(`[berth] ${engines.length} engine(s) with image ${TEST_IMAGE}, manager and agent bundled, ready in ${Date.now() - t0} ms`);
  return stopAll;
}

async function prepare(engine: DockerEngine): Promise<void> {
  const docker = dockerClient(engine.dockerHost);
  await ensureTestImage(docker);
  // Project networks left by earlier runs' managers (tests force-remove their containers,
  // not the networks the agents made): unused ones go, so a reused engine never fills up.
  await docker.pruneNetworks({ filters: JSON.stringify({ label: ["berth.manager"] }) }).catch(() => {});
}
