import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { HostSchema, HostState, type Host } from "@berth/proto/berth/v1/host_pb.js";
import { ServerSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { maskSpec } from "../store/secrets.js";
import type { HostRecord, ServerRecord } from "../domain/records.js";
import { hostConditions } from "./host-conditions.js";
import { capacityOf, roomOf, type Room } from "../hosts/capacity.js";

/**
 * A server as every API answer shows it (Get, List, Watch, and the answers
 * of every change): secret env values are SECRET_MASK for every role.
 */
export function serverToProto(s: ServerRecord): Server {
  return create(ServerSchema, {
    id: s.id,
    project: s.project,
    spec: { ...maskSpec(s.spec), hostId: s.hostId },
    status: s.status,
    generation: BigInt(s.generation),
    version: BigInt(s.version),
    createTime: timestampFromMs(s.createdAt),
    updateTime: timestampFromMs(s.updatedAt),
    ...(s.deletedAt !== null ? { deleteTime: timestampFromMs(s.deletedAt) } : {}),
  });
}

/** `room`: what its servers' limits take (hosts/capacity.ts); without it only the allocatable figures (allocated 0). */
export function hostToProto(h: HostRecord, online: boolean, serverCount: number, room?: Room): Host {
  const f = h.facts;
  const capacity = capacityOf(h.schedule);
  const offer = room ?? roomOf(h, []);
  return create(HostSchema, {
    capacity: { ...capacity, reservedMemoryBytes: BigInt(capacity.reservedMemoryBytes) },
    allocatableCpus: offer.allocatableCpus,
    allocatableMemoryBytes: BigInt(offer.allocatableMemoryBytes),
    ...(room ? { allocatedCpus: room.allocatedCpus, allocatedMemoryBytes: BigInt(room.allocatedMemoryBytes) } : {}),
    id: h.id,
    name: h.name,
    state: online ? HostState.ONLINE : HostState.OFFLINE,
    agentVersion: f.agentVersion ?? "",
    dockerVersion: f.dockerVersion ?? "",
    dataRoot: f.dataRoot ?? "",
    dataRootFreeBytes: BigInt(f.dataRootFreeBytes ?? 0),
    dataRootTotalBytes: BigInt(f.dataRootTotalBytes ?? 0),
    cpuCount: f.cpuCount ?? 0,
    memoryBytes: BigInt(f.memoryBytes ?? 0),
    // Offline, nothing is known: reported as false, with the DockerReachable condition UNKNOWN.
    dockerReachable: online && (f.dockerReachable ?? false),
    serverCount,
    conditions: hostConditions(h, online),
    createTime: timestampFromMs(h.createdAt),
    unschedulable: h.schedule.unschedulable,
    draining: h.schedule.drain !== undefined,
    drainMessage: h.schedule.drain?.message ?? "",
    ...(online && h.connectedSince !== null ? { connectedSince: timestampFromMs(h.connectedSince) } : {}),
    ...(h.lastHeartbeat !== null ? { lastHeartbeat: timestampFromMs(h.lastHeartbeat) } : {}),
  });
}
