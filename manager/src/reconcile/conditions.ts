import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionSchema, ConditionStatus, type Condition } from "@berth/proto/berth/v1/server_pb.js";

/** Condition types, in display order. */
export const CONDITION_TYPES = [
  "HostConnected",
  "ContainerExists",
  "ContainerRunning",
  "DataPresent",
  "SpecApplied",
  "Ready",
] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

/** What plan() decides about one condition; timestamps are added by mergeConditions. */
export interface ConditionFact {
  type: ConditionType;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

const STATUS: Record<ConditionFact["status"], ConditionStatus> = {
  True: ConditionStatus.TRUE,
  False: ConditionStatus.FALSE,
  Unknown: ConditionStatus.UNKNOWN,
};

/**
 * Builds the new condition list from plan() facts, keeping a condition's
 * last_transition_time when its status did not change (Kubernetes semantics).
 */
export function mergeConditions(
  previous: readonly Condition[],
  facts: readonly ConditionFact[],
  generation: number,
  now: number,
): Condition[] {
  const before = new Map(previous.map((c) => [c.type, c]));
  return facts.map((f) => {
    const old = before.get(f.type);
    const status = STATUS[f.status];
    const sameStatus = old !== undefined && old.status === status;
    return create(ConditionSchema, {
      type: f.type,
      status,
      reason: f.reason,
      message: f.message,
      lastTransitionTime: sameStatus && old.lastTransitionTime ? old.lastTransitionTime : timestampFromMs(now),
      observedGeneration: BigInt(generation),
    });
  });
}

/** True when two condition lists say the same thing (ignoring timestamps). */
export function sameConditions(a: readonly Condition[], b: readonly Condition[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((c, i) => {
    const d = b[i]!;
    return c.type === d.type && c.status === d.status && c.reason === d.reason && c.message === d.message;
  });
}
