import type { PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { describeConflicts, findPortConflicts, suggestFreePorts, type PortOwner } from "../domain/port-conflicts.js";
import { PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";

/**
 * The servers placed on `hostId` other than `exceptId`, with the ports they
 * publish. Reads every server on the host: callers skip it when no port is
 * requested.
 */
export function portOwnersOnHost(store: Pick<Store, "listServers">, hostId: string, exceptId: string): PortOwner[] {
  return store
    .listServers({ hostId })
    .filter((s) => s.id !== exceptId)
    .map((s) => ({ name: s.name, project: s.project, ports: s.spec.ports }));
}

/**
 * Refuses `ports` when another server on `hostId` (than `exceptId`) publishes
 * one of them, naming free ports to try instead; servers outside `project`
 * are not named. `hostLabel` names the host in the message (its id unless
 * given). Used by CreateServer/UpdateServer/StartServer and by AdoptOrphan
 * and ReassignServer.
 */
export function checkPortsFree(
  store: Pick<Store, "listServers">,
  hostId: string,
  ports: readonly PortMapping[],
  opts: { exceptId: string; project: string; hostLabel?: string },
): void {
  if (ports.length === 0) return;
  const others = portOwnersOnHost(store, hostId, opts.exceptId);
  const conflicts = findPortConflicts(ports, others);
  if (conflicts.length > 0) {
    throw new PreconditionError(`port conflict on host ${opts.hostLabel ?? hostId}: ${describeConflicts(conflicts, suggestFreePorts(conflicts, others, ports), opts.project)}`);
  }
}
