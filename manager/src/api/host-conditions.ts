import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionSchema, ConditionStatus, type Condition } from "@berth/proto/berth/v1/server_pb.js";
import type { HostFacts, HostRecord } from "../domain/records.js";

/**
 * Host facts as the agent link stores them: HostFacts plus when
 * `dockerReachable` last changed (kept in the same facts JSON), so the
 * DockerReachable condition has a real last_transition_time.
 */
export type ObservedHostFacts = HostFacts & { dockerReachableChangedAt?: number };

/**
 * The facts patch for a new reachability report, and whether it is a
 * change worth an event. The first report of a host is not a change.
 */
export function dockerReachability(prev: ObservedHostFacts, reachable: boolean, at: number): { patch: ObservedHostFacts; changed: boolean } {
  const known = prev.dockerReachable !== undefined;
  const changed = known && prev.dockerReachable !== reachable;
  const changedAt = changed || prev.dockerReachableChangedAt === undefined ? at : prev.dockerReachableChangedAt;
  return { patch: { dockerReachable: reachable, dockerReachableChangedAt: changedAt }, changed };
}

/**
 * A host's conditions. `DockerReachable`: TRUE while the agent reaches its
 * Docker engine, FALSE while it cannot (servers there cannot be changed),
 * UNKNOWN while the agent itself is offline.
 */
export function hostConditions(h: HostRecord, online: boolean): Condition[] {
  const f = h.facts as ObservedHostFacts;
  if (!online || f.dockerReachable === undefined) {
    return [
      create(ConditionSchema, {
        type: "DockerReachable",
        status: ConditionStatus.UNKNOWN,
        reason: "HostOffline",
        message: "the host's agent is not connected; nothing is known about its Docker engine",
        ...(h.lastHeartbeat !== null ? { lastTransitionTime: timestampFromMs(h.lastHeartbeat) } : {}),
      }),
    ];
  }
  const since = f.dockerReachableChangedAt ?? h.connectedSince;
  return [
    create(ConditionSchema, {
      type: "DockerReachable",
      status: f.dockerReachable ? ConditionStatus.TRUE : ConditionStatus.FALSE,
      reason: f.dockerReachable ? "Reachable" : "Unreachable",
      message: f.dockerReachable
        ? `the agent reaches Docker ${f.dockerVersion ?? ""}`.trimEnd()
        : "the agent cannot reach its Docker engine; is dockerd running? Servers on this host cannot be changed until it is back",
      ...(since !== null && since !== undefined ? { lastTransitionTime: timestampFromMs(since) } : {}),
    }),
  ];
}
