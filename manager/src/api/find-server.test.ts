import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { BerthError } from "../errors.js";
import type { HostRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";
import { findHost } from "./find-server.js";

const live = { id: "host_live", name: "a", removedAt: null } as HostRecord;
const removed = { id: "host_gone", name: "b", removedAt: 1 } as HostRecord;
const store = { getHost: (id: string) => [live, removed].find((h) => h.id === id) } as unknown as Store;

function outcome(fn: () => HostRecord): string {
  try {
    return fn().id;
  } catch (err) {
    return err instanceof BerthError ? `${Code[err.code]}: ${err.message}` : String(err);
  }
}

describe("findHost", () => {
  it.each([
    ["a live host", "host_live", {}, "host_live"],
    ["a live host, spaces around its id", " host_live ", {}, "host_live"],
    ["a removed host", "host_gone", {}, "NotFound"],
    ["a removed host, when removed ones count (its stranded servers)", "host_gone", { includeRemoved: true }, "host_gone"],
    ["an unknown host", "host_none", { includeRemoved: true }, "NotFound"],
  ])("%s", (_what, id, opts, want) => {
    const got = outcome(() => findHost(store, id, opts));
    expect(got.startsWith(want)).toBe(true);
    if (want === "NotFound") expect(got).toContain("list hosts with HostService.ListHosts");
  });
});
