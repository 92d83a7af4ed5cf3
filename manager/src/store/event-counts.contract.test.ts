/**
 * The store contract (store.ts) for Aggregate's event reads: countEvents
 * (the pushdown's GROUP BY), eventIdSpan and readEventWindow, on the engine
 * testStore() opens (SQLite in "unit", PostgreSQL in "unit-pg").
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventInput } from "../domain/records.js";
import { testStore } from "../../testing/store.js";
import type { EventCountRow, Store } from "./store.js";

let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

async function append(events: (EventInput & { at: number })[]): Promise<number[]> {
  const r = await store.commit(events.map(({ at, ...event }) => ({ op: "event.append" as const, event, at })));
  return r.events.map((e) => e.id);
}

const sorted = (rows: EventCountRow[]) => [...rows].sort((a, b) => a.bucket - b.bucket || JSON.stringify(a.key).localeCompare(JSON.stringify(b.key)));

describe("Aggregate's event reads", () => {
  beforeEach(async () => {
    await append([
      { type: "server.stopped", reason: "Crashed", project: "a", serverId: "srv_1", at: 1000 },
      { type: "server.stopped", reason: "Crashed", project: "a", serverId: "srv_2", at: 1999 },
      { type: "server.stopped", reason: "UserRequest", project: "b", at: 2000 },
      { type: "server.started", reason: "", project: "a", at: 2500 },
      { type: "serverx", reason: "Crashed", project: "a", at: 2600 },
      { type: "host.connected", hostId: "host_1", at: 2700 },
      { type: "server.stopped", reason: "Crashed", project: "a", at: 3000 },
    ]);
  });

  it("countEvents: per epoch-aligned bucket and columns, [since, until), scoped, with == and prefix conditions", async () => {
    const rows = await store.countEvents({ project: null, since: 1000, until: 3000, bucketMs: 1000, groupBy: ["reason"], where: [{ column: "type", op: "prefix", value: "server." }], limit: 100 });
    expect(sorted(rows)).toEqual([
      { bucket: 1, key: ["Crashed"], count: 2 },
      { bucket: 2, key: [""], count: 1 },
      { bucket: 2, key: ["UserRequest"], count: 1 },
    ]);
    // Scoped to a project: never another project's events, never project-less ones.
    expect(sorted(await store.countEvents({ project: "a", since: 0, until: 10_000, groupBy: ["project", "type"], where: [], limit: 100 }))).toEqual([
      { bucket: 0, key: ["a", "server.started"], count: 1 },
      { bucket: 0, key: ["a", "server.stopped"], count: 3 },
      { bucket: 0, key: ["a", "serverx"], count: 1 },
    ]);
    expect(await store.countEvents({ project: null, since: 0, until: 10_000, groupBy: ["host_id"], where: [{ column: "type", op: "eq", value: "host.connected" }, { column: "project", op: "eq", value: "" }], limit: 100 })).toEqual([
      { bucket: 0, key: ["host_1"], count: 1 },
    ]);
    expect(await store.countEvents({ project: null, since: 0, until: 10_000, groupBy: [], where: [], limit: 100 })).toEqual([{ bucket: 0, key: [], count: 7 }]);
    expect(await store.countEvents({ project: "c", since: 0, until: 10_000, groupBy: [], where: [], limit: 100 })).toEqual([]);
    expect(await store.countEvents({ project: null, since: 0, until: 10_000, groupBy: ["server_id"], where: [], limit: 2 })).toHaveLength(2);
  });

  it("eventIdSpan and readEventWindow: the window's events in id order, scoped, in steps", async () => {
    const all = await store.readForward({ project: null, afterId: 0, upToId: 1e9, limit: 100 });
    const span = await store.eventIdSpan({ project: "a", since: 1999, until: 3000 });
    expect(span).toEqual({ first: all[1]!.id, last: all[4]!.id });
    expect(await store.eventIdSpan({ project: "a", since: 5000, until: 6000 })).toBeUndefined();
    const first = await store.readEventWindow({ project: "a", since: 1999, until: 3000, afterId: span!.first - 1, upToId: span!.last, limit: 2 });
    expect(first.map((e) => e.time)).toEqual([1999, 2500]);
    const next = await store.readEventWindow({ project: "a", since: 1999, until: 3000, afterId: first[1]!.id, upToId: span!.last, limit: 2 });
    expect(next.map((e) => [e.time, e.type])).toEqual([[2600, "serverx"]]);
    const everyone = await store.readEventWindow({ project: null, since: 1999, until: 3000, afterId: 0, upToId: 1e9, limit: 100 });
    expect(everyone.map((e) => e.time)).toEqual([1999, 2000, 2500, 2600, 2700]);
  });
});
