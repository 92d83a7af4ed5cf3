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
import { loadPortOwners, requirePortsFree } from "../api/port-check.js";

type PlacementStore = Pick<Store, "getHost" | "listHosts" | "listServers" | "countServersByHost">;

/** Refuses a cordoned host as the place of a new server (FailedPrecondition naming it as operators know it, saying what to do). */
export function requireSchedulable(host: HostRecord): void {
  if (host.schedule.unschedulable) {
    throw new PreconditionError(
      `host ${host.name || host.id} is cordoned (HostService.CordonHost/DrainHost): no new servers are placed on it; UncordonHost it or choose another host`,
    );
  }
}

/**
 * The host a new server of `project` with `spec` goes to: `spec.host_id` when
 * set (it must exist and be schedulable), else the connected, schedulable host
 * with the fewest servers that has the spec's ports free (ties by id). When
 * none has them free, the conflicts on the least-loaded one are named, with
 * free ports to try.
 */
export async function placeServer(store: PlacementStore, presence: HostPresence, spec: ServerSpec, project: string): Promise<string> {
  if (spec.hostId) {
    const host = await loadHost(store, spec.hostId);
    requireSchedulable(host);
    return host.id;
  }
  const counts = await store.countServersByHost();
  const byLoad = (a: string, b: string) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0) || a.localeCompare(b);
  const connected = presence.connectedHostIds();
  const schedulable = await schedulableOf(store, connected);
  const candidates: string[] = [];
  for (const id of schedulable) {
    if (spec.ports.length === 0 || findPortConflicts(spec.ports, await loadPortOwners(store, id, "")).length === 0) candidates.push(id);
  }
  candidates.sort(byLoad);
  if (candidates.length === 0) {
    if (connected.length === 0) {
      throw new PreconditionError("no host is connected; enroll an agent (HostService.CreateEnrollmentToken) or set spec.host_id");
    }
    if (schedulable.length === 0) {
      throw new PreconditionError(`every connected host is cordoned (${connected.length}); UncordonHost one (HostService.UncordonHost) or enroll another`);
    }
    // Name the conflicts on the least-loaded host, with free ports to try instead.
    const best = [...schedulable].sort(byLoad)[0]!;
    await requirePortsFree(store, best, spec.ports, { exceptId: "", project, hostLabel: (await store.getHost(best))?.name || best });
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
  const hosts = (await schedulableOf(store, presence.connectedHostIds().filter((id) => id !== excludeHostId && id !== server.hostId))).sort(byLoad);
  for (const id of hosts) {
    if (server.spec.ports.length === 0) return id;
    const owners = [
      ...(await loadPortOwners(store, id, server.id)),
      ...landing.filter((l) => l.hostId === id && l.server.id !== server.id).map((l) => ({ name: l.server.name, project: l.server.project, ports: l.server.spec.ports })),
    ];
    if (findPortConflicts(server.spec.ports, owners).length === 0) return id;
  }
  return undefined;
}

/** Of `ids`, the hosts that exist, are not removed and not cordoned (in the order given): one read of the hosts. */
async function schedulableOf(store: Pick<Store, "listHosts">, ids: readonly string[]): Promise<string[]> {
  const open = new Set((await store.listHosts()).filter((h) => !h.schedule.unschedulable).map((h) => h.id));
  return ids.filter((id) => open.has(id));
}
