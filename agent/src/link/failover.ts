/**
 * Which manager the link dials next, and whether it waits first: a pure
 * decision, so the rotation is tested with tables (failover.test.ts).
 *
 *   dial urls[i] ──welcome, up healthyAfterMs──► healthy (backoff and round start over)
 *        │
 *        └─ refused / unreachable / stream ended / no welcome in time
 *              ├─ Unauthenticated ──► stop (revoked: never hop)
 *              ├─ not every URL failed yet this round ──► urls[i+1] at once
 *              └─ every URL failed this round ──► urls[i+1] after the backoff's delay
 *
 * The backoff counts rounds, not URLs: a dead first manager costs one failed
 * dial (refused at once, or the welcome timeout) before the second is tried.
 */
import { status } from "@grpc/grpc-js";

/** Where the rotation stands: the URL dialled last, and how many dials in a row failed since the round began. */
export interface RotationState {
  index: number;
  failedInRound: number;
}

export type FailoverDecision =
  | { kind: "stop" }
  /** Dial `urls[index]`; `backoff`: wait the backoff's next delay first (a full round failed). */
  | { kind: "dial"; state: RotationState; backoff: boolean };

/**
 * The manager refused this host's credential: it was removed or never
 * existed. Every manager shares the store, so another would say the same;
 * hopping would only hide a removed host's agent from its operator.
 * Only Unauthenticated means that (what the manager answers a removed host):
 * PermissionDenied is what grpc-js makes of an HTTP 403, which a misconfigured
 * proxy or load balancer answers too, and stopping every agent behind it for
 * good would be far worse than trying the next manager.
 */
export function isRevocation(code: number | undefined): boolean {
  return code === status.UNAUTHENTICATED;
}

/** After the stream to `urls[state.index]` ended (or never opened) with gRPC `code` (undefined: ended cleanly). */
export function afterStreamEnd(state: RotationState, urlCount: number, code: number | undefined): FailoverDecision {
  if (isRevocation(code)) return { kind: "stop" };
  const failed = state.failedInRound + 1;
  const index = (state.index + 1) % urlCount;
  if (failed < urlCount) return { kind: "dial", state: { index, failedInRound: failed }, backoff: false };
  return { kind: "dial", state: { index, failedInRound: 0 }, backoff: true };
}

/** A stream stayed up long enough: the next failure starts a new round (from the next URL). */
export function afterHealthy(state: RotationState): RotationState {
  return { index: state.index, failedInRound: 0 };
}

/**
 * Nobody answered (refused, unreachable, timed out): another manager may.
 * Anything else is an answer, and every manager would give the same one.
 */
export function isUnreachable(code: number | undefined): boolean {
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED;
}
