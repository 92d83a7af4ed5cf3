/**
 * The saved_query alert path on the store testStore() opens (both engines):
 * the alert runner (SavedQueryAlerts, with a scripted query outcome and a
 * fake clock) stores what the query returned; the evaluator fires
 * `saved_query` once the query has returned rows for its fire_after,
 * resolves it when it returns none, and when the query is disabled or
 * deleted.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Severity } from "@berth/proto/berth/v1/alert_pb.js";
import { QuerySource, SavedQuerySpecSchema } from "@berth/proto/berth/v1/query_pb.js";
import { AlertEvaluator } from "../alerts/evaluator.js";
import type { WebhookNotifier } from "../alerts/webhook.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { testStore } from "../../testing/store.js";
import { SavedQueryAlerts, savedQueryAlertViews, type SavedQueryOutcome } from "./saved-alerts.js";
import type { SavedQueryRecord } from "./saved-records.js";

let store: Store;
let now = 1_000_000;
const log = createLogger("silent", "test");
beforeEach(async () => {
  store = await testStore();
  now = 1_000_000;
});
afterEach(() => store.close());

function query(o: Partial<SavedQueryRecord> = {}): SavedQueryRecord {
  return {
    id: "sq_crash",
    project: "games",
    name: "crash-loopers",
    ownerTokenId: "tok_a",
    ownerName: "ops",
    shared: true,
    pinned: false,
    alertEnabled: true,
    spec: create(SavedQuerySpecSchema, {
      name: "crash-loopers",
      shared: true,
      query: { source: QuerySource.SERVERS, filter: "server.status.phase == PHASE_FAILED" },
      alert: { enabled: true, fireAfter: { seconds: 300n }, severity: Severity.CRITICAL },
    }),
    version: 1,
    createdAt: now,
    updatedAt: now,
    rowsSince: null,
    lastRows: 0,
    lastFirst: "",
    ...o,
  };
}

function setup() {
  const ledger = new Ledger(store, () => now, log);
  ledger.follow(store);
  let outcome: SavedQueryOutcome = { rows: 0, first: "" };
  const ran: string[] = [];
  const runner = new SavedQueryAlerts({
    store,
    run: async (q) => {
      ran.push(q.id);
      return outcome;
    },
    log,
    now: () => now,
  });
  const evaluator = new AlertEvaluator(
    // A notifier that queues nothing (the evaluator commits through it: notifier?.noteDropped(await store.commit(...))).
    { store, ledger, isConnected: () => true, notifier: { enqueueOps: () => [], noteDropped: () => {}, wake: () => {} } as unknown as WebhookNotifier, log, now: () => now, savedQueries: () => savedQueryAlertViews(store) },
    { thresholds: { hostOfflineMs: 30_000, notConvergedMs: 120_000, diskFreeFraction: 0.1 }, intervalMs: 1000, historyMs: 3600_000 },
  );
  return {
    ran,
    set: (o: SavedQueryOutcome) => (outcome = o),
    /** One runner pass and one evaluation at `now`. */
    async pass() {
      await runner.runOnce();
      return evaluator.evaluate();
    },
  };
}

describe("saved_query alerts", () => {
  it("fires after the query returned rows for fire_after (with the spec's severity and a message naming the rows), and resolves when it returns none", async () => {
    await store.commit([{ op: "savedQuery.insert", savedQuery: query() }]);
    const s = setup();
    expect((await s.pass()).fired).toEqual([]);
    s.set({ rows: 3, first: "server mc-1" });
    expect((await s.pass()).fired).toEqual([]);
    expect((await store.getSavedQuery("sq_crash"))?.rowsSince).toBe(1_000_000);
    now += 299_000;
    expect((await s.pass()).fired).toEqual([]);
    now += 1_000;
    const { fired } = await s.pass();
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ rule: "saved_query", subject: "query:sq_crash", project: "games", severity: "critical" });
    expect(fired[0]!.message).toBe('saved query "crash-loopers" returned 3 rows for 5 min (first: server mc-1)');
    // Still rows: still one alert.
    now += 30_000;
    expect((await s.pass()).fired).toEqual([]);
    expect((await store.listFiringAlerts()).filter((a) => a.rule === "saved_query")).toHaveLength(1);
    s.set({ rows: 0, first: "" });
    now += 30_000;
    const { resolved } = await s.pass();
    expect(resolved.map((a) => a.subject)).toEqual(["query:sq_crash"]);
    expect((await store.getSavedQuery("sq_crash"))?.rowsSince).toBeNull();
    expect(s.ran.length).toBeGreaterThan(0);
  });

  it("rows that stop before fire_after start the clock again; the default fire_after is 5 minutes and the default severity warning", async () => {
    const q = query();
    q.spec.alert = { ...q.spec.alert!, fireAfter: undefined, severity: Severity.UNSPECIFIED } as never;
    await store.commit([{ op: "savedQuery.insert", savedQuery: q }]);
    const s = setup();
    s.set({ rows: 1, first: "x" });
    await s.pass();
    now += 200_000;
    s.set({ rows: 0, first: "" });
    await s.pass();
    s.set({ rows: 1, first: "x" });
    await s.pass();
    now += 200_000;
    expect((await s.pass()).fired).toEqual([]);
    now += 100_000;
    const { fired } = await s.pass();
    expect(fired.map((a) => [a.rule, a.severity])).toEqual([["saved_query", "warning"]]);
    expect(fired[0]!.message).toBe('saved query "crash-loopers" returned 1 row for 5 min (first: x)');
  });

  it("disabling the alert or deleting the query resolves its alert", async () => {
    await store.commit([{ op: "savedQuery.insert", savedQuery: query({ id: "sq_a", name: "a" }) }, { op: "savedQuery.insert", savedQuery: query({ id: "sq_b", name: "b" }) }]);
    const s = setup();
    s.set({ rows: 2, first: "y" });
    await s.pass();
    now += 300_000;
    expect((await s.pass()).fired.map((a) => a.subject).sort()).toEqual(["query:sq_a", "query:sq_b"]);
    const a = (await store.getSavedQuery("sq_a"))!;
    await store.commit([{ op: "savedQuery.update", savedQuery: { ...a, alertEnabled: false, version: 2 }, expectVersion: 1 }]);
    await store.commit([{ op: "savedQuery.delete", id: "sq_b" }]);
    now += 1_000;
    const { resolved } = await s.pass();
    expect(resolved.map((r) => r.subject).sort()).toEqual(["query:sq_a", "query:sq_b"]);
    // A disabled query is not run any more.
    s.ran.length = 0;
    await s.pass();
    expect(s.ran).toEqual([]);
  });
});
