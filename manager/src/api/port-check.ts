import type { PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { describeConflicts, findPortConflicts, suggestFreePorts, type PortOwner } from "../domain/port-conflicts.js";
import type { ServerRecord } from "../domain/records.js";
import { PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";

/** What `requirePortsFree` needs to know about the caller's request. */
export interface PortCheck {
  /** The server asking (its own ports are no conflict); "" for a new one. */
  exceptId: string;
  /** Servers outside this project are not named. */
  project: string;
  /** How the message names the host (its id unless given). */
  hostLabel?: string;
}

/**
 * The servers placed on `hostId` other than `exceptId`, with the ports they
 * publish. Reads every server on the host: callers skip it when no port is
 * requested.
 */
export async function loadPortOwners(store: Pick<Store, "listServers">, hostId: string, exceptId: string): Promise<PortOwner[]> {
  return portOwners(await store.listServers({ hostId }), exceptId);
}

/**
 * Refuses `ports` when another server on `hostId` (than `exceptId`) publishes
 * one of them, naming free ports to try instead (PreconditionError). The
 * friendly check before a write; the database's port reservations are the
 * backstop for a race. Used by CreateServer/UpdateServer/StartServer/
 * RestoreServer and by AdoptOrphan and ReassignServer.
 */
export async function requirePortsFree(store: Pick<Store, "listServers">, hostId: string, ports: readonly PortMapping[], opts: PortCheck): Promise<void> {
  if (ports.length === 0) return;
  refuseConflicts(await loadPortOwners(store, hostId, opts.exceptId), hostId, ports, opts);
}

/** `servers` other than `exceptId`, with the ports they publish. */
export function portOwners(servers: readonly ServerRecord[], exceptId: string): PortOwner[] {
  return servers.filter((s) => s.id !== exceptId).map((s) => ({ name: s.name, project: s.project, ports: s.spec.ports }));
}

function refuseConflicts(others: PortOwner[], hostId: string, ports: readonly PortMapping[], opts: PortCheck): void {
  const conflicts = findPortConflicts(ports, others);
  if (conflicts.length > 0) {
    throw new PreconditionError(`port conflict on host ${opts.hostLabel ?? hostId}: ${describeConflicts(conflicts, suggestFreePorts(conflicts, others, ports), opts.project)}`);
  }
}
