import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import { AlertStore, type AlertRecord } from "../store/alert-store.js";
import { openDatabase } from "../store/database.js";
import { Store } from "../store/store.js";
import { initialStatus } from "../domain/records.js";
import { AlertEvaluator, step } from "./evaluator.js";
import type { AlertCondition } from "./rules.js";
import type { WebhookNotifier } from "./webhook.js";

const cond = (subject: string, forMs = 0): AlertCondition => ({
  rule: "host_offline",
  subject,
  severity: "critical",
  message: `${subject} is offline`,
  project: "",
  hostId: subject,
  serverId: "",
  forMs,
});

describe("step(): pending, firing, resolved", () => {
  it("fires only after the condition held for its threshold", () => {
    const c = cond("host:a", 30_000);
    let s = step({ now: 0, conditions: [c], firing: new Map(), pending: new Map() });
    expect(s.fire).toEqual([]);
    expect(s.pending.get("host_offline host:a")).toBe(0);
    s = step({ now: 29_999, conditions: [c], firing: new Map(), pending: s.pending });
    expect(s.fire).toEqual([]);
    s = step({ now: 30_000, conditions: [c], firing: new Map(), pending: s.pending });
    expect(s.fire).toEqual([c]);
    expect(s.pending.size).toBe(0);
  });

  it("a condition that clears while pending is forgotten: the clock starts over", () => {
    const c = cond("host:a", 10);
    let s = step({ now: 0, conditions: [c], firing: new Map(), pending: new Map() });
    s = step({ now: 5, conditions: [], firing: new Map(), pending: s.pending });
    expect(s.pending.size).toBe(0);
    s = step({ now: 12, conditions: [c], firing: new Map(), pending: s.pending });
    expect(s.fire).toEqual([]);
  });

  it("a firing alert stays firing (no second alert) and resolves when its condition clears", () => {
    const c = cond("host:a");
    const firing = new Map([["host_offline host:a", "alr_1"]]);
    const s = step({ now: 1, conditions: [c, c], firing, pending: new Map() });
    expect(s.fire).toEqual([]);
    expect(s.stillFiring).toEqual([{ id: "alr_1", condition: c }]);
    expect(step({ now: 2, conditions: [], firing, pending: new Map() }).resolve).toEqual(["alr_1"]);
  });
});

function setup() {
  let now = 1_000_000;
  const db = openDatabase(":memory:");
  const store = new Store(db);
  const ledger = new Ledger(store, () => now);
  const alerts = new AlertStore(db);
  const connected = new Set<string>(["host_1"]);
  const notified: string[] = [];
  const notifier = { notify: (type: string, a: AlertRecord) => notified.push(`${type} ${a.rule} ${a.subject}`) } as unknown as WebhookNotifier;
  const evaluator = new AlertEvaluator(
    { store, alerts, ledger, isConnected: (id) => connected.has(id), notifier, log: createLogger("silent", "test"), now: () => now },
    { thresholds: { hostOfflineMs: 30_000, notConvergedMs: 120_000, diskFreeFraction: 0.1 }, intervalMs: 1000, historyMs: 3600_000 },
  );
  store.insertHost({ id: "host_1", name: "h1", secretHash: "x", createdAt: 0 });
  const addServer = (id: string, phase: Phase, reason = "") =>
    store.insertServer({
      id,
      project: "a",
      name: id,
      hostId: "host_1",
      generation: 1,
      spec: create(ServerSpecSchema, { name: id, image: "busybox", desiredState: DesiredState.RUNNING }),
      status: { ...initialStatus(), phase, reason, observedGeneration: 1n },
      dataInitialized: true,
      lifecycle: {},
      createdAt: 0,
      updatedAt: 0,
      deletedAt: null,
    });
  const setPhase = (id: string, phase: Phase, reason = "") => {
    const s = store.getServer(id)!;
    store.updateServerStatus(id, { ...s.status, phase, reason }, true);
  };
  const types = () => ledger.list({}).map((e) => `${e.type} ${e.reason}`);
  return { store, alerts, evaluator, connected, notified, types, addServer, setPhase, advance: (ms: number) => (now += ms) };
}

describe("AlertEvaluator", () => {
  it("host offline: fires after the threshold, resolves on reconnect, fires again only after clearing", () => {
    const h = setup();
    h.connected.delete("host_1");
    expect(h.evaluator.evaluate().fired).toEqual([]);
    h.advance(30_000);
    const { fired } = h.evaluator.evaluate();
    expect(fired.map((a) => a.rule)).toEqual(["host_offline"]);
    h.advance(10_000);
    expect(h.evaluator.evaluate().fired).toEqual([]); // still the same alert
    expect(h.alerts.listFiring()).toHaveLength(1);

    h.connected.add("host_1");
    h.advance(1000);
    expect(h.evaluator.evaluate().resolved.map((a) => a.id)).toEqual([fired[0]!.id]);
    h.connected.delete("host_1");
    h.advance(1000);
    h.evaluator.evaluate();
    h.advance(30_000);
    const again = h.evaluator.evaluate().fired;
    expect(again).toHaveLength(1);
    expect(again[0]!.id).not.toBe(fired[0]!.id);
    expect(h.types()).toEqual(["alert.fired HostOffline", "alert.resolved HostOffline", "alert.fired HostOffline"]);
    expect(h.notified).toEqual(["alert.fired host_offline host:host_1", "alert.resolved host_offline host:host_1", "alert.fired host_offline host:host_1"]);
    expect(h.alerts.list({ includeResolved: true, project: null, sharedRules: [], limit: 10 }).map((a) => a.state)).toEqual(["firing", "resolved"]);
  });

  it("crash loop and data lost fire at once and resolve when the phase moves on", () => {
    const h = setup();
    h.addServer("srv_c", Phase.FAILED, "CrashLoop");
    h.addServer("srv_d", Phase.DATA_LOST, "DataDirectoryMissing");
    expect(h.evaluator.evaluate().fired.map((a) => `${a.rule} ${a.subject} ${a.project}`).sort()).toEqual([
      "crash_loop server:srv_c a",
      "data_lost server:srv_d a",
    ]);
    h.setPhase("srv_c", Phase.RUNNING, "Running");
    h.advance(1000);
    expect(h.evaluator.evaluate().resolved.map((a) => a.rule)).toEqual(["crash_loop"]);
  });

  it("a muted alert sends no notification; its mute carries over to the next alert of the same subject", () => {
    const h = setup();
    h.addServer("srv_d", Phase.DATA_LOST);
    const [a] = h.evaluator.evaluate().fired;
    h.alerts.mute(a!.id, 1_000_000 + 3600_000);
    h.setPhase("srv_d", Phase.RUNNING);
    h.advance(1000);
    h.evaluator.evaluate();
    h.setPhase("srv_d", Phase.DATA_LOST);
    h.advance(1000);
    const [b] = h.evaluator.evaluate().fired;
    expect(b!.mutedUntil).toBe(1_000_000 + 3600_000);
    expect(h.notified).toEqual(["alert.fired data_lost server:srv_d"]);
  });

  it("keeps the last-seen time fresh without a write per run", () => {
    const h = setup();
    h.addServer("srv_d", Phase.DATA_LOST);
    const [a] = h.evaluator.evaluate().fired;
    h.advance(1000);
    h.evaluator.evaluate();
    expect(h.alerts.get(a!.id)!.lastSeen).toBe(a!.lastSeen);
    h.advance(5000);
    h.evaluator.evaluate();
    expect(h.alerts.get(a!.id)!.lastSeen).toBe(a!.lastSeen + 6000);
  });
});
