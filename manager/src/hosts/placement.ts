/**
 * Where a server goes: the host CreateServer picks when the spec names none,
 * and the destination of a transfer (ServerService.TransferServer, a host
 * drain). A cordoned host (HostRecord.schedule.unschedulable: CordonHost,
 * DrainHost) takes no new server, whichever way it would arrive; its own
 * servers keep running there.
 */
import type { ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { findPortConflicts } from "../domain/port-conflicts.js";
import type { HostRecord, ServerRecord } from "../domain/records.js";
import { PreconditionError } from "../errors.js";
import type { HostPresence } from "../cluster/presence.js";
import type { Store } from "../store/store.js";
import { loadHost } from "../api/find-server.js";
import { portOwners, requirePortsFree } from "../api/port-check.js";
import { loadWith, requestOf, roomOf, roomWith, shortage } from "./capacity.js";

type PlacementStore = Pick<Store, "getHost" | "listHosts" | "listServers" | "countServersByHost" | "allocationByHost">;

/** Refuses a cordoned host as the place of a new server (FailedPrecondition naming it as operators know it, saying what to do). */
export function requireSchedulable(host: HostRecord): void {
  if (host.schedule.unschedulable) {
    throw new PreconditionError(
      `host ${host.name || host.id} is cordoned (HostService.CordonHost/DrainHost): no new servers are placed on it; UncordonHost it or choose another host`,
    );
  }
}

/**
 * Refuses a host without room for `spec`'s limits (hosts/capacity.ts):
 * FailedPrecondition naming what is short and, of `others` (connected,
 * schedulable hosts), those that have room. `exceptId`: a server whose own
 * limits are not counted (one being changed).
 */
export async function requireRoom(store: PlacementStore, host: HostRecord, spec: ServerSpec, others: readonly string[] = [], exceptId = ""): Promise<void> {
  const request = requestOf({ spec });
  if (request.cpus === 0 && request.memoryBytes === 0) return;
  const short = shortage(roomOf(host, await store.listServers({ hostId: host.id }), exceptId), request);
  if (short.length === 0) return;
  const withRoom: string[] = [];
  const candidates = others.filter((id) => id !== host.id);
  if (candidates.length > 0) {
    // One read of the hosts and one of the limits summed per host, whatever the number of candidates.
    const [hosts, allocation] = await Promise.all([store.listHosts(), store.allocationByHost()]);
    const byId = new Map(hosts.map((h) => [h.id, h] as const));
    for (const id of candidates) {
      const h = byId.get(id);
      if (h && shortage(roomWith(h, allocation.get(id) ?? { cpus: 0, memoryBytes: 0 }), request).length === 0) withRoom.push(h.name || id);
    }
  }
  const where =
    withRoom.length > 0
      ? `hosts with room: ${withRoom.slice(0, 10).join(", ")}`
      : others.length > 0
        ? "no other connected host has room; lower the limits, or raise a host's capacity (HostService.SetHostCapacity)"
        : "lower the limits, or raise the host's capacity (HostService.SetHostCapacity)";
  throw new PreconditionError(`host ${host.name || host.id} has no room for this server's limits (${short.join("; ")}); ${where}`);
}

/**
 * The host a new server of `project` with `spec` goes to: `spec.host_id` when
 * set (it must exist, be schedulable and have room for the spec's limits),
 * else, of the connected, schedulable hosts that have the spec's ports free
 * and room for its limits, the one that would be least full (the larger of
 * its CPU and memory shares with the server added), then the one with the
 * fewest servers, then by id: servers spread. When no host has the ports
 * free, the conflicts on the least-loaded one are named, with free ports to
 * try; when none has room, what is short on the least full one.
 */
export async function placeServer(store: PlacementStore, presence: HostPresence, spec: ServerSpec, project: string): Promise<string> {
  const connected = presence.connectedHostIds();
  if (spec.hostId) {
    const host = await loadHost(store, spec.hostId);
    requireSchedulable(host);
    await requireRoom(store, host, spec, (await schedulableOf(store, connected)).map((h) => h.id));
    return host.id;
  }
  const counts = await store.countServersByHost();
  const request = requestOf({ spec });
  const fullness = new Map<string, number>();
  const short = new Map<string, string[]>();
  const labels = new Map<string, string>();
  const byLoad = (a: string, b: string) => (fullness.get(a) ?? 0) - (fullness.get(b) ?? 0) || (counts.get(a) ?? 0) - (counts.get(b) ?? 0) || a.localeCompare(b);
  const schedulableHosts = await schedulableOf(store, connected);
  const schedulable = schedulableHosts.map((h) => h.id);
  const candidates: string[] = [];
  // One read of each candidate host's servers: room and ports from the same list.
  for (const host of schedulableHosts) {
    const servers = await store.listServers({ hostId: host.id });
    const room = roomOf(host, servers);
    labels.set(host.id, host.name || host.id);
    fullness.set(host.id, loadWith(room, request));
    short.set(host.id, shortage(room, request));
    if (short.get(host.id)!.length > 0) continue;
    if (spec.ports.length === 0 || findPortConflicts(spec.ports, portOwners(servers, "")).length === 0) candidates.push(host.id);
  }
  candidates.sort(byLoad);
  const roomy = schedulable.filter((id) => !short.get(id)?.length);
  if (candidates.length === 0 && schedulable.length > 0 && roomy.length === 0) {
    const best = [...schedulable].sort(byLoad)[0]!;
    const label = labels.get(best) ?? best;
    throw new PreconditionError(
      `no connected host has room for this server's limits (least full, host ${label}: ${short.get(best)!.join("; ")}); lower the limits, or raise a host's capacity (HostService.SetHostCapacity)`,
    );
  }
  if (candidates.length === 0) {
    if (connected.length === 0) {
      throw new PreconditionError("no host is connected; enroll an agent (HostService.CreateEnrollmentToken) or set spec.host_id");
    }
    if (schedulable.length === 0) {
      throw new PreconditionError(`every connected host is cordoned (${connected.length}); UncordonHost one (HostService.UncordonHost) or enroll another`);
    }
    // Name the conflicts on the least-loaded host with room, with free ports to try instead.
    const best = [...roomy].sort(byLoad)[0]!;
    await requirePortsFree(store, best, spec.ports, { exceptId: "", project, hostLabel: labels.get(best) ?? best });
    throw new PreconditionError("no connected host has the requested ports free; choose other host ports");
  }
  return candidates[0]!;
}

/**
 * Where `server` could be transferred: a connected, schedulable host other
 * than `excludeHostId` (its own host, usually) where every port of its spec is
 * free, the one with the fewest servers (ties by id); undefined when there is
 * none. `landing`: servers already on their way to a host (a drain's earlier
 * choices in the same step), counted there as if they had arrived.
 */
export async function pickTransferHost(
  store: PlacementStore,
  presence: HostPresence,
  server: ServerRecord,
  excludeHostId: string,
  landing: readonly { hostId: string; server: Pick<ServerRecord, "id" | "name" | "project" | "spec"> }[] = [],
): Promise<string | undefined> {
  const counts = await store.countServersByHost();
  const load = (id: string) => (counts.get(id) ?? 0) + landing.filter((l) => l.hostId === id).length;
  const byLoad = (a: string, b: string) => load(a) - load(b) || a.localeCompare(b);
  const hosts = (await schedulableOf(store, presence.connectedHostIds().filter((id) => id !== excludeHostId && id !== server.hostId))).sort((a, b) => byLoad(a.id, b.id));
  const request = requestOf(server);
  for (const host of hosts) {
    const id = host.id;
    const arriving = landing.filter((l) => l.hostId === id);
    // One read of the host's servers: room for its limits and its ports, counting the servers already on their way there.
    const servers = await store.listServers({ hostId: id });
    const room = roomOf(host, [...servers, ...arriving.map((l) => ({ id: l.server.id, spec: l.server.spec, hostId: id, deletedAt: null }))], server.id);
    if (shortage(room, request).length > 0) continue;
    if (server.spec.ports.length === 0) return id;
    const owners = [
      ...portOwners(servers, server.id),
      ...arriving.filter((l) => l.server.id !== server.id).map((l) => ({ name: l.server.name, project: l.server.project, ports: l.server.spec.ports })),
    ];
    if (findPortConflicts(server.spec.ports, owners).length === 0) return id;
  }
  return undefined;
}

/** Of `ids`, the hosts that exist, are not removed and not cordoned (in the order given): one read of the hosts. */
async function schedulableOf(store: Pick<Store, "listHosts">, ids: readonly string[]): Promise<HostRecord[]> {
  const open = new Map((await store.listHosts()).filter((h) => !h.schedule.unschedulable).map((h) => [h.id, h] as const));
  return ids.flatMap((id) => open.get(id) ?? []);
}
