import type { Caller } from "../auth/caller.js";
import { canSee } from "../auth/caller.js";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import type { Store } from "../store/store.js";
import type { ServerRecord } from "../domain/records.js";
import { requireId } from "./validate.js";

/**
 * Finds a server by id, or by name within the caller's project (for an
 * all-projects admin a bare name must be unambiguous). A server of another
 * project answers NotFound, exactly like one that does not exist.
 */
export function findVisibleServer(store: Store, caller: Caller, idOrName: string): ServerRecord {
  const key = requireId(idOrName);
  const s = store.getServer(key) ?? (caller.project !== null ? store.findServerByName(caller.project, key) : byNameAnyProject(store, key));
  if (!s || !canSee(caller, s.project)) throw new NotFoundError("server", key, "list servers with ServerService.ListServers");
  return s;
}

function byNameAnyProject(store: Store, name: string): ServerRecord | undefined {
  const matches = store.listServers({ includeDeleted: true }).filter((s) => s.name === name);
  if (matches.length > 1) {
    throw new InvalidArgumentError("id", `name "${name}" exists in several projects (${matches.map((m) => m.project).join(", ")}); use the server id`);
  }
  return matches[0];
}
