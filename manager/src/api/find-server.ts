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
export async function loadVisibleServer(store: Pick<Store, "getServer" | "findServerByName" | "listServers">, caller: Caller, idOrName: string): Promise<ServerRecord> {
  const key = requireId(idOrName);
  const s =
    (await store.getServer(key)) ??
    (caller.project !== null ? await store.findServerByName(caller.project, key) : onlyMatch(await store.listServers({ includeDeleted: true }), key));
  return visible(s, caller, key);
}

/**
 * Finds a host by id for an API call: NotFound when it has no record or was
 * removed (unless `includeRemoved`: a removed host's id still names its
 * stranded servers). `id` as the caller sent it, already checked non-empty.
 */
export async function loadHost(store: Pick<Store, "getHost">, id: string, opts: { includeRemoved?: boolean } = {}): Promise<HostRecord> {
  return liveHost(await store.getHost(id.trim()), id, opts);
}

function visible(s: ServerRecord | undefined, caller: Caller, key: string): ServerRecord {
  if (!s || !canSee(caller, s.project)) throw new NotFoundError("server", key, "list servers with ServerService.ListServers");
  return s;
}

function liveHost(h: HostRecord | undefined, id: string, opts: { includeRemoved?: boolean }): HostRecord {
  if (!h || (h.removedAt !== null && !opts.includeRemoved)) throw new NotFoundError("host", id, "list hosts with HostService.ListHosts");
  return h;
}

/** The one server named `name` across all projects (an all-projects admin's bare name must be unambiguous). */
function onlyMatch(servers: readonly ServerRecord[], name: string): ServerRecord | undefined {
  const matches = servers.filter((s) => s.name === name);
  if (matches.length > 1) {
    throw new InvalidArgumentError("id", `name "${name}" exists in several projects (${matches.map((m) => m.project).join(", ")}); use the server id`);
  }
  return matches[0];
}
