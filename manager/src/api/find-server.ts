import type { Caller } from "../auth/caller.js";
import { canSee } from "../auth/caller.js";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import type { Store } from "../store/store.js";
import type { HostRecord, ServerRecord } from "../domain/records.js";
import { requireId } from "./validate.js";

/**
 * Finds a server by id, or by name within the caller's project (for an
 * all-projects admin a bare name must be unambiguous). A server of another
 * project answers NotFound, exactly like one that does not exist. Every API
 * call that names a server looks it up here.
 */
export function findVisibleServer(store: Store, caller: Caller, idOrName: string): ServerRecord {
  const key = requireId(idOrName);
  const s = store.getServer(key) ?? (caller.project !== null ? store.findServerByName(caller.project, key) : byNameAnyProject(store, key));
  if (!s || !canSee(caller, s.project)) throw new NotFoundError("server", key, "list servers with ServerService.ListServers");
  return s;
}

/**
 * Finds a host by id for an API call: NotFound when it has no record or was
 * removed (unless `includeRemoved`: a removed host's id still names its
 * stranded servers). `id` as the caller sent it, already checked non-empty.
 */
export function findHost(store: Store, id: string, opts: { includeRemoved?: boolean } = {}): HostRecord {
  const h = store.getHost(id.trim());
  if (!h || (h.removedAt !== null && !opts.includeRemoved)) throw new NotFoundError("host", id, "list hosts with HostService.ListHosts");
  return h;
}

function byNameAnyProject(store: Store, name: string): ServerRecord | undefined {
  const matches = store.listServers({ includeDeleted: true }).filter((s) => s.name === name);
  if (matches.length > 1) {
    throw new InvalidArgumentError("id", `name "${name}" exists in several projects (${matches.map((m) => m.project).join(", ")}); use the server id`);
  }
  return matches[0];
}
