import type { ContainerRuntime } from "./container-runtime.js";

/**
 * Failure reasons an engine going away can cause, as opposed to a refusal
 * that would repeat (bad spec, port conflict, missing data, unknown image).
 */
export const ENGINE_FAILURE_REASONS: ReadonlySet<string> = new Set([
  "DockerUnreachable",
  "DockerTimeout",
  "CreateFailed",
  "StartFailed",
  "StopFailed",
  "KillFailed",
  "PauseFailed",
  "UnpauseFailed",
  "RemoveFailed",
  "AgentError",
]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Accepts a new connection and answers on it (an old pooled connection may still reach a dying engine). */
async function answers(runtime: Pick<ContainerRuntime, "version" | "acceptsConnections">, timeoutMs: number): Promise<boolean> {
  if (!(await runtime.acceptsConnections(timeoutMs))) return false;
  try {
    await runtime.version(timeoutMs);
    return true;
  } catch {
    return false;
  }
}

/**
 * Is the engine going away? A dockerd that is shutting down closes its
 * socket before anything else, while requests on connections already open
 * still get (odd) answers for a moment: so a fresh connection is the test.
 */
export async function engineGoingAway(runtime: Pick<ContainerRuntime, "acceptsConnections">, timeoutMs = 2_000): Promise<boolean> {
  return !(await runtime.acceptsConnections(timeoutMs));
}

/** Waits until the engine answers again or `untilMs` passes; returns whether it answers. */
export async function waitForEngine(runtime: Pick<ContainerRuntime, "version" | "acceptsConnections">, untilMs: number, everyMs = 1_000, probeTimeoutMs = 2_000): Promise<boolean> {
  for (;;) {
    if (await answers(runtime, probeTimeoutMs)) return true;
    if (Date.now() + everyMs >= untilMs) return false;
    await sleep(everyMs);
  }
}
