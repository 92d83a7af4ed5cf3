import { describe, expect, it } from "vitest";
import type { EventRecord } from "../domain/records.js";
import type { Committed } from "../store/store.js";
import { transferConditions } from "../alerts/rules.js";
import { TransferHealth } from "./health.js";

const log = { warn: () => {}, info: () => {}, error: () => {}, debug: () => {} } as never;

function ev(id: number, type: string, serverId: string, o: Partial<EventRecord> = {}): EventRecord {
  return { id, time: id, type, serverId, project: "default", hostId: "host_a", actor: "reconciler", reason: "", message: "", correlationId: "", payloadJson: "", ...o } as EventRecord;
}

function fakeStore(history: EventRecord[]) {
  let listener: ((c: Committed) => void) | undefined;
  return {
    listNewestFirst: async (q: { beforeId?: number; limit: number; typePrefix?: string }) =>
      history.filter((e) => (q.beforeId === undefined || e.id < q.beforeId) && e.type.startsWith(q.typePrefix ?? "")).sort((a, b) => b.id - a.id).slice(0, q.limit),
    onCommit: (f: (c: Committed) => void) => {
      listener = f;
      return () => (listener = undefined);
    },
    emit: (events: EventRecord[]) => listener?.({ events, serverIds: new Set(), hostIds: new Set() }),
    // Every server exists but srv_gone (purged).
    getServer: async (id: string) => (id === "srv_gone" ? undefined : ({ id } as never)),
  };
}

describe("TransferHealth: the servers whose latest transfer failed", () => {
  it("reads the newest transfer event per server at start, then follows commits", async () => {
    const store = fakeStore([
      ev(1, "server.transfer_failed", "srv_a", { reason: "TargetHostOffline", payloadJson: JSON.stringify({ from: "host_a", to: "host_b" }) }),
      ev(2, "server.transfer_failed", "srv_b", { reason: "StartFailed" }),
      ev(3, "server.transfer_succeeded", "srv_b"),
      ev(4, "server.started", "srv_a"),
      ev(5, "server.transfer_failed", "srv_gone", { reason: "StartFailed" }),
    ]);
    const h = new TransferHealth(store, log);
    await h.start();
    expect(h.failures().map((f) => [f.serverId, f.reason, f.targetHost])).toEqual([["srv_a", "TargetHostOffline", "host_b"]]);
    const [c] = transferConditions(h.failures());
    expect(c?.rule).toBe("transfer_failed");
    expect(c?.subject).toBe("server:srv_a");
    expect(c?.message).toContain("host_b");
    store.emit([ev(5, "server.transfer_requested", "srv_a")]);
    expect(h.failures()).toEqual([]);
    store.emit([ev(6, "server.transfer_failed", "srv_c", { reason: "DataRootFull" })]);
    expect(h.failures().map((f) => f.serverId)).toEqual(["srv_c"]);
    store.emit([ev(7, "server.purged", "srv_c")]);
    expect(h.failures()).toEqual([]);
    h.stop();
  });
});
