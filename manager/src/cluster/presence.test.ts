// Which hosts are connected, seen from every manager of one PostgreSQL
// database (presence.ts): a host whose stream is on another manager shows
// connected here within the change feed's delay, and not once that manager's
// term lapsed (it died) or the host went offline. Two stores on one database
// stand for two managers; SQLite (one manager) needs no such view: skipped.
import { afterEach, describe, expect, it, vi } from "vitest";
import { testEngine, twoManagerStores } from "../../testing/store.js";
import { createLogger } from "../log.js";
import { ClusterPresence } from "./presence.js";

const H = "host_aaaaaaaaaaaa";
const OWN = "host_bbbbbbbbbbbb";
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.skipIf(testEngine() !== "postgres")("ClusterPresence", () => {
  it("a host connected to another manager is connected here; once that manager's term lapsed (it died) it is not; this manager's own hosts count by its streams alone", async () => {
    const two = await twoManagerStores();
    cleanups.push(() => two.close());
    const [a, b] = two.stores;
    let clock = Date.now();
    const local = new Set<string>();
    const presence = new ClusterPresence({
      store: b,
      local: { isConnected: (id) => local.has(id), connectedHostIds: () => [...local] },
      holder: "mi_b",
      log: createLogger("silent", "test"),
      refreshMs: 60_000,
      now: () => clock,
    });
    await presence.start();
    cleanups.push(() => presence.stop());
    expect(presence.isConnected(H)).toBe(false);

    // Manager A accepts the agent's stream: takes the host, marks it online (as agent-service.ts does).
    // In the same batch, a host online under a live term of this manager (mi_b) whose stream is not
    // in its hub (it ended; the release did not land): the database's word does not make it connected.
    await a.commit([
      { op: "host.insert", id: H, name: "h", secretHash: "s", createdAt: 1 },
      { op: "host.take", hostId: H, holder: "mi_a", ttlMs: 15_000, at: clock },
      { op: "host.connected", id: H, facts: {}, at: clock },
      { op: "host.insert", id: OWN, name: "own", secretHash: "s", createdAt: 1 },
      { op: "host.take", hostId: OWN, holder: "mi_b", ttlMs: 15_000, at: clock },
      { op: "host.connected", id: OWN, facts: {}, at: clock },
    ]);
    // Heard through the change feed, without waiting for the periodic refresh.
    await vi.waitFor(() => expect(presence.isConnected(H)).toBe(true));
    expect(presence.isConnected(OWN)).toBe(false);
    expect(presence.connectedHostIds()).toEqual([H]);

    // A died: its term lapses unrenewed; the next refresh no longer counts the host.
    clock += 16_000;
    await presence.refresh();
    expect(presence.isConnected(H)).toBe(false);

    // This manager's own stream counts without any read.
    local.add(H);
    expect(presence.isConnected(H)).toBe(true);
    expect(presence.connectedHostIds()).toEqual([H]);
  });
});
