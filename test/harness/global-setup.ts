/**
 * Vitest globalSetup for the "integration" project: provides a Docker
 * engine (see docker-engine.ts) with the local test image, and exposes it to
 * test files both as process.env.DOCKER_HOST (inherited by the workers and by
 * any manager/agent processes the tests spawn) and as inject("dockerHost").
 */
import type { TestProject } from "vitest/node";
import { dockerClient, ensureDockerEngine, ensureTestImage, TEST_IMAGE } from "./docker-engine.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** "unix:///..." of the engine the integration tests must use. */
    dockerHost: string;
  }
}

/** Starts or reuses the engine; the returned teardown stops it only if this run started it. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  const engine = await ensureDockerEngine();
  try {
    await ensureTestImage(dockerClient(engine.dockerHost));
  } catch (e) {
    await engine.stop();
    throw e;
  }
  // Project networks left by earlier runs' managers (tests force-remove their containers,
  // not the networks the agents made): unused ones go, so a reused engine never fills up.
  await dockerClient(engine.dockerHost).pruneNetworks({ filters: JSON.stringify({ label: ["berth.manager"] }) }).catch(() => {});
  process.env.DOCKER_HOST = engine.dockerHost;
  project.provide("dockerHost", engine.dockerHost);

  const how = engine.ownedPid ? `started private dockerd pid ${engine.ownedPid}` : "reused running engine";
  console.log(`[berth] docker engine ${engine.dockerHost} (${how}), image ${TEST_IMAGE} ready in ${Date.now() - t0} ms`);

  return () => engine.stop();
}
