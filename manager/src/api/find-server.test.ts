import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { Caller } from "../auth/caller.js";
import { BerthError } from "../errors.js";
import type { HostRecord, ServerRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";
import { loadHost, loadVisibleServer } from "./find-server.js";

const live = { id: "host_live", name: "a", removedAt: null } as HostRecord;
const removed = { id: "host_gone", name: "b", removedAt: 1 } as HostRecord;
const getHost = (id: string) => [live, removed].find((h) => h.id === id);

const servers = [
  { id: "srv_web_a", name: "web", project: "a" },
  { id: "srv_web_b", name: "web", project: "b" },
  { id: "srv_db_a", name: "db", project: "a" },
] as ServerRecord[];
const getServer = (id: string) => servers.find((s) => s.id === id);
const findServerByName = (project: string, name: string) => servers.find((s) => s.project === project && s.name === name);
const listServers = () => servers;

/** The records behind the store contract. */
const contract = {
  getHost: async (id: string) => getHost(id),
  getServer: async (id: string) => getServer(id),
  findServerByName: async (p: string, n: string) => findServerByName(p, n),
  listServers: async () => listServers(),
} as unknown as Store;

async function outcome(fn: () => Promise<{ id: string }>): Promise<string> {
  try {
    return (await fn()).id;
  } catch (err) {
    return err instanceof BerthError ? `${Code[err.code]}: ${err.message}` : String(err);
  }
}

describe("loadHost", () => {
  it.each([
    ["a live host", "host_live", {}, "host_live"],
    ["a live host, spaces around its id", " host_live ", {}, "host_live"],
    ["a removed host", "host_gone", {}, "NotFound"],
    ["a removed host, when removed ones count (its stranded servers)", "host_gone", { includeRemoved: true }, "host_gone"],
    ["an unknown host", "host_none", { includeRemoved: true }, "NotFound"],
  ])("%s", async (_what, id, opts, want) => {
    const got = await outcome(() => loadHost(contract, id, opts));
    expect(got.startsWith(want)).toBe(true);
    if (want === "NotFound") expect(got).toContain("list hosts with HostService.ListHosts");
  });
});

const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "viewer", project: "a" };
const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };

describe("loadVisibleServer", () => {
  it.each([
    ["by id", TEAM_A, "srv_db_a", "srv_db_a"],
    ["by name, in the caller's project", TEAM_A, "web", "srv_web_a"],
    ["another project's server, by id: as if it did not exist", TEAM_A, "srv_web_b", "NotFound"],
    ["an unknown name", TEAM_A, "nope", "NotFound"],
    ["an all-projects admin, by a name unique across projects", ADMIN, "db", "srv_db_a"],
    ["an all-projects admin, by a name in several projects", ADMIN, "web", "InvalidArgument"],
    ["an empty id", TEAM_A, " ", "InvalidArgument"],
  ])("%s", async (_what, caller, key, want) => {
    const got = await outcome(() => loadVisibleServer(contract, caller, key));
    expect(got.startsWith(want)).toBe(true);
    if (want === "NotFound") expect(got).toContain("list servers with ServerService.ListServers");
  });
});
