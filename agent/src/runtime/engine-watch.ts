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

async function answers(runtime: Pick<ContainerRuntime, "version">, timeoutMs: number): Promise<boolean> {
  try {
    await runtime.version(timeoutMs);
    return true;
  } catch {
    return false;
  }
}

/**
 * Is the engine going away? It is probed now and once more after `settleMs`:
 * a dockerd that is shutting down still answers (with odd errors) for a
 * moment before its socket closes.
 */
export async function engineGoingAway(runtime: Pick<ContainerRuntime, "version">, settleMs = 2_000, probeTimeoutMs = 2_000): Promise<boolean> {
  if (!(await answers(runtime, probeTimeoutMs))) return true;
  await sleep(settleMs);
  return !(await answers(runtime, probeTimeoutMs));
}

/** Waits until the engine answers again or `untilMs` passes; returns whether it answers. */
export async function waitForEngine(runtime: Pick<ContainerRuntime, "version">, untilMs: number, everyMs = 1_000, probeTimeoutMs = 2_000): Promise<boolean> {
  for (;;) {
    if (await answers(runtime, probeTimeoutMs)) return true;
    if (Date.now() + everyMs >= untilMs) return false;
    await sleep(everyMs);
  }
}
