import type { AlertRecord } from "../domain/records.js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { CrashStateSchema, DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { initialStatus } from "../domain/records.js";
import { newServer, testStore } from "../../testing/store.js";
import { AlertEvaluator, step } from "./evaluator.js";
import type { AlertCondition, BackupPolicyView } from "./rules.js";
import { BackupPolicies } from "../backups/overdue.js";
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

/** `s` with its listFiringAlerts answered by `read` (everything else is `s` itself). */
function withFiring(s: Store, read: () => Promise<AlertRecord[]>): Store {
  return new Proxy(s, {
    get(target, prop) {
      if (prop === "listFiringAlerts") return read;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

/** `wrap` may put a store in front of the real one (to slow reads down, or race them). */
async function setup(wrap: (s: Store) => Store = (s) => s, config: { intervalMs?: number; backupPolicies?: (store: Store) => () => BackupPolicyView[]; noNotifier?: boolean } = {}) {
  let now = 1_000_000;
  const store = await testStore();
  opened.push(store);
  const ledger = new Ledger(store, () => now);
  ledger.follow(store);
  const connected = new Set<string>(["host_1"]);
  const notified: string[] = [];
  // Queued in the evaluation's own batch (enqueueOps); nothing to send in these tests.
  const notifier = {
    enqueueOps: (type: string, a: AlertRecord) => (notified.push(`${type} ${a.rule} ${a.subject}`), []),
    noteDropped: () => {},
    wake: () => {},
  } as unknown as WebhookNotifier;
  const evaluator = new AlertEvaluator(
    {
      store: wrap(store),
      ledger,
      isConnected: (id) => connected.has(id),
      ...(config.noNotifier ? {} : { notifier }),
      log: createLogger("silent", "test"),
      now: () => now,
      ...(config.backupPolicies ? { backupPolicies: config.backupPolicies(store) } : {}),
    },
    { thresholds: { hostOfflineMs: 30_000, notConvergedMs: 120_000, diskFreeFraction: 0.1 }, intervalMs: config.intervalMs ?? 1000, historyMs: 3600_000 },
  );
  await store.commit([{ op: "host.insert", id: "host_1", name: "h1", secretHash: "x", createdAt: 0 }]);
  const addServer = (id: string, phase: Phase, reason = "") =>
    store.commit([
      {
        op: "server.insert",
        server: newServer({
          id,
          hostId: "host_1",
          project: "a",
          at: 0,
          spec: { desiredState: DesiredState.RUNNING },
          status: { ...initialStatus(), phase, reason, observedGeneration: 1n },
          dataInitialized: true,
        }),
      },
    ]);
  const setPhase = async (id: string, phase: Phase, reason = "") => {
    const s = (await store.getServer(id))!;
    await store.commit([{ op: "server.status", id, status: { ...s.status, phase, reason }, dataInitialized: true }]);
  };
  const types = async () => (await store.readForward({ project: null, afterId: 0, upToId: await store.lastEventId(), limit: 100 })).map((e) => `${e.type} ${e.reason}`);
  return { store, evaluator, connected, notified, types, addServer, setPhase, advance: (ms: number) => (now += ms) };
}

describe("AlertEvaluator", () => {
  it("stores what it decides without a webhook notifier too", async () => {
    const h = await setup((s) => s, { noNotifier: true });
    h.connected.delete("host_1");
    await h.evaluator.evaluate();
    h.advance(30_000);
    expect((await h.evaluator.evaluate()).fired.map((a) => a.rule)).toEqual(["host_offline"]);
    expect((await h.store.listFiringAlerts()).map((a) => a.rule)).toEqual(["host_offline"]);
  });

  it("host offline: fires after the threshold, resolves on reconnect, fires again only after clearing", async () => {
    const h = await setup();
    h.connected.delete("host_1");
    expect((await h.evaluator.evaluate()).fired).toEqual([]);
    h.advance(30_000);
    const { fired } = await h.evaluator.evaluate();
    expect(fired.map((a) => a.rule)).toEqual(["host_offline"]);
    h.advance(10_000);
    expect((await h.evaluator.evaluate()).fired).toEqual([]); // still the same alert
    expect(await h.store.listFiringAlerts()).toHaveLength(1);

    h.connected.add("host_1");
    h.advance(1000);
    expect((await h.evaluator.evaluate()).resolved.map((a) => a.id)).toEqual([fired[0]!.id]);
    h.connected.delete("host_1");
    h.advance(1000);
    await h.evaluator.evaluate();
    h.advance(30_000);
    const again = (await h.evaluator.evaluate()).fired;
    expect(again).toHaveLength(1);
    expect(again[0]!.id).not.toBe(fired[0]!.id);
    expect(await h.types()).toEqual(["alert.fired HostOffline", "alert.resolved HostOffline", "alert.fired HostOffline"]);
    expect(h.notified).toEqual(["alert.fired host_offline host:host_1", "alert.resolved host_offline host:host_1", "alert.fired host_offline host:host_1"]);
    expect((await h.store.listAlerts({ includeResolved: true, project: null, sharedRules: [], limit: 10 })).map((a) => a.state)).toEqual(["firing", "resolved"]);
  });

  it("a pending condition seen before a stop (another manager led meanwhile) must hold its whole threshold again after start", async () => {
    const h = await setup();
    h.connected.delete("host_1");
    await h.evaluator.evaluate(); // pending since now
    h.evaluator.start();
    h.evaluator.stop(); // the lease went to another manager ...
    h.advance(29_000);
    h.evaluator.start(); // ... and came back: what was pending is forgotten
    h.evaluator.stop();
    h.advance(1_000);
    expect((await h.evaluator.evaluate()).fired).toEqual([]);
    h.advance(30_000);
    expect((await h.evaluator.evaluate()).fired.map((a) => a.rule)).toEqual(["host_offline"]);
  });

  it("crash loop and data lost fire at once and resolve when the phase moves on", async () => {
    const h = await setup();
    await h.addServer("srv_c", Phase.FAILED, "CrashLoop");
    await h.addServer("srv_d", Phase.DATA_LOST, "DataDirectoryMissing");
    expect((await h.evaluator.evaluate()).fired.map((a) => `${a.rule} ${a.subject} ${a.project}`).sort()).toEqual([
      "crash_loop server:srv_c a",
      "data_lost server:srv_d a",
    ]);
    await h.setPhase("srv_c", Phase.RUNNING, "Running");
    h.advance(1000);
    expect((await h.evaluator.evaluate()).resolved.map((a) => a.rule)).toEqual(["crash_loop"]);
  });

  it("crash_loop's stages: a warning from the second crash while it is restarted, the same alert turning critical at CrashLoop, its acknowledgement kept", async () => {
    const h = await setup();
    await h.addServer("srv_c", Phase.STARTING, "CrashBackoff");
    const crashes = async (recent: number, phase = Phase.STARTING, reason = "CrashBackoff") => {
      const s = (await h.store.getServer("srv_c"))!;
      await h.store.commit([{ op: "server.status", id: "srv_c", status: { ...s.status, phase, reason, crash: create(CrashStateSchema, { recent, limit: 5 }) }, dataInitialized: true }]);
    };
    await crashes(1);
    expect((await h.evaluator.evaluate()).fired).toEqual([]); // one crash is an accident
    await crashes(2);
    h.advance(1000);
    const [warning] = (await h.evaluator.evaluate()).fired;
    expect([warning?.rule, warning?.severity, warning?.message]).toEqual(["crash_loop", "warning", expect.stringContaining("crashed 2 times in 10 minutes")]);
    await h.store.commit([{ op: "alert.acknowledge", id: warning!.id, by: "token:tok_1", at: 5 }]);
    // Running again between crashes: still the same warning.
    await crashes(2, Phase.RUNNING, "Running");
    h.advance(1000);
    expect((await h.evaluator.evaluate()).resolved).toEqual([]);
    await h.setPhase("srv_c", Phase.FAILED, "CrashLoop");
    h.advance(1000);
    const r = await h.evaluator.evaluate();
    expect([r.fired, r.resolved]).toEqual([[], []]);
    expect(await h.store.getAlert(warning!.id)).toMatchObject({ state: "firing", severity: "critical", acknowledgedBy: "token:tok_1", message: expect.stringContaining("crash-looping") });
    expect(await h.types()).toEqual(["alert.fired CrashLoop", "alert.severity_changed CrashLoop"]);
  });

  it("a host blip keeps a server's alert: Unknown with the crash loop last seen is the same alert, acknowledged, with a message saying so", async () => {
    const h = await setup();
    await h.addServer("srv_c", Phase.FAILED, "CrashLoop");
    const [a] = (await h.evaluator.evaluate()).fired;
    await h.store.commit([{ op: "alert.acknowledge", id: a!.id, by: "token:tok_1", at: 5 }]);
    // What the reconciler writes when the host goes away: Unknown, with what was known before.
    const s = (await h.store.getServer("srv_c"))!;
    await h.store.commit([{ op: "server.status", id: "srv_c", status: { ...s.status, phase: Phase.UNKNOWN, reason: "HostOffline", lastKnownPhase: Phase.FAILED, lastKnownReason: "CrashLoop" }, dataInitialized: true }]);
    h.advance(1000);
    const r = await h.evaluator.evaluate();
    expect([r.fired, r.resolved]).toEqual([[], []]);
    expect(await h.store.getAlert(a!.id)).toMatchObject({ state: "firing", acknowledgedBy: "token:tok_1", message: expect.stringContaining("last seen before host h1 went away") });
  });

  it("backup_overdue: fires once the newest success is older than the policy, resolves when a backup succeeds", async () => {
    let policies: BackupPolicies | undefined;
    const h = await setup(undefined, {
      backupPolicies: (store) => {
        policies = new BackupPolicies(store, createLogger("silent", "test"));
        return () => policies!.policies();
      },
    });
    await h.store.commit([
      {
        op: "server.insert",
        server: newServer({
          id: "srv_b",
          name: "world",
          hostId: "host_1",
          project: "a",
          at: 1_000_000,
          spec: { desiredState: DesiredState.RUNNING, backupPolicy: { alertAfterHours: 24 } },
          status: { ...initialStatus(), phase: Phase.RUNNING, reason: "Running", observedGeneration: 1n },
          dataInitialized: true,
        }),
      },
    ]);
    await policies!.start();
    h.advance(23 * 3600_000);
    expect((await h.evaluator.evaluate()).fired).toEqual([]);
    h.advance(2 * 3600_000);
    const [a, ...more] = (await h.evaluator.evaluate()).fired;
    expect(more).toEqual([]);
    expect(a).toMatchObject({ rule: "backup_overdue", subject: "server:srv_b", severity: "warning", serverId: "srv_b", project: "a" });
    expect(a!.message).toMatch(/^server world: no successful backup since it was created 25 h ago; its backup policy alerts after 24 h/);

    const at = 1_000_000 + 25 * 3600_000;
    await h.store.commit([
      {
        op: "backup.insert",
        backup: {
          id: "bkp_1", serverId: "srv_b", serverName: "world", project: "a", hostId: "host_1", targetId: "btg_x", key: "srv_b/bkp_1.tar.gz", state: "succeeded",
          reason: "", message: "", live: false, compression: "gzip", archiveBytes: 1, rawBytes: 1, files: 1, sha256: "", bytesDone: 0, bytesTotal: 0, locked: false,
          createdBy: "token:t", createdAt: at - 60_000, startedAt: at - 60_000, finishedAt: at,
        },
      },
      { op: "event.append", event: { type: "backup.succeeded", serverId: "srv_b", message: "" }, at },
    ]);
    await vi.waitFor(() => expect(policies!.policies()[0]?.newestSuccessAt).toBe(at));
    h.advance(1000);
    expect((await h.evaluator.evaluate()).resolved.map((r) => `${r.rule} ${r.subject}`)).toEqual(["backup_overdue server:srv_b"]);
    policies!.stop();
  });

  it("evaluates every page of a fleet larger than one page, and fires for all of it at once", async () => {
    const h = await setup();
    // 2,500 servers: three pages of the fleet-wide read; the crash-looping ones sit on each page.
    const ids = Array.from({ length: 2_500 }, (_, i) => `srv_p${String(i).padStart(4, "0")}`);
    for (const id of ids) await h.addServer(id, Phase.RUNNING, "Running");
    const looping = [ids[5]!, ids[1_200]!, ids[2_499]!];
    for (const id of looping) await h.setPhase(id, Phase.FAILED, "CrashLoop");
    expect((await h.evaluator.evaluate()).fired.map((a) => a.subject).sort()).toEqual(looping.map((id) => `server:${id}`));
    // 2,500 commits one by one: on PostgreSQL about 5 s on this 2-core machine, vitest's default
    // timeout (timed out once in `npm test`, unit-pg). The subject is paging, not speed.
  }, 30_000);

  it("a muted alert sends no notification; its mute carries over to the next alert of the same subject", async () => {
    const h = await setup();
    await h.addServer("srv_d", Phase.DATA_LOST);
    const [a] = (await h.evaluator.evaluate()).fired;
    await h.store.commit([{ op: "alert.mute", id: a!.id, until: 1_000_000 + 3600_000 }]);
    await h.setPhase("srv_d", Phase.RUNNING);
    h.advance(1000);
    await h.evaluator.evaluate();
    await h.setPhase("srv_d", Phase.DATA_LOST);
    h.advance(1000);
    const [b] = (await h.evaluator.evaluate()).fired;
    expect(b!.mutedUntil).toBe(1_000_000 + 3600_000);
    expect(h.notified).toEqual(["alert.fired data_lost server:srv_d"]);
  });

  it("keeps the last-seen time fresh without a write per run", async () => {
    const h = await setup();
    await h.addServer("srv_d", Phase.DATA_LOST);
    const [a] = (await h.evaluator.evaluate()).fired;
    h.advance(1000);
    await h.evaluator.evaluate();
    expect((await h.store.getAlert(a!.id))!.lastSeen).toBe(a!.lastSeen);
    h.advance(5000);
    await h.evaluator.evaluate();
    expect((await h.store.getAlert(a!.id))!.lastSeen).toBe(a!.lastSeen + 6000);
  });

  it("two runs asked for at once run one after the other: one alert, not two", async () => {
    const h = await setup();
    await h.addServer("srv_d", Phase.DATA_LOST);
    const [first, second] = await Promise.all([h.evaluator.evaluate(), h.evaluator.evaluate()]);
    expect(first.fired.map((a) => a.rule)).toEqual(["data_lost"]);
    expect(second.fired).toEqual([]);
    expect(await h.store.listFiringAlerts()).toHaveLength(1);
    expect(await h.types()).toEqual(["alert.fired DataLost"]);
  });

  it("timer and trigger runs never overlap, however slow the store answers", async () => {
    let running = 0;
    let most = 0;
    let runs = 0;
    const slow = (s: Store) =>
      withFiring(s, async () => {
        runs++;
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 30));
        running--;
        return s.listFiringAlerts();
      });
    const h = await setup(slow, { intervalMs: 5 });
    h.evaluator.start();
    try {
      // Trigger events too (host.*), while timer runs are due every 5 ms.
      for (let i = 0; i < 5; i++) {
        await h.store.commit([{ op: "event.append", event: { type: "host.connected", hostId: "host_1" }, at: 1 }]);
        await new Promise((r) => setTimeout(r, 60));
      }
    } finally {
      h.evaluator.stop();
    }
    await h.evaluator.evaluate();
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(most).toBe(1);
  });

  it("a run whose batch lost a race (its alert resolved meanwhile) writes nothing; the next run decides again", async () => {
    let race: (() => Promise<void>) | undefined;
    const racing = (s: Store) =>
      withFiring(s, async () => {
        const firing = await s.listFiringAlerts();
        // Another path resolves the alert after this run read it firing.
        if (race) await race();
        race = undefined;
        return firing;
      });
    const h = await setup(racing);
    await h.addServer("srv_c", Phase.FAILED, "CrashLoop");
    const [crash] = (await h.evaluator.evaluate()).fired;
    await h.setPhase("srv_c", Phase.RUNNING, "Running");
    await h.addServer("srv_d", Phase.DATA_LOST);
    h.advance(1000);
    race = async () => {
      await h.store.commit([{ op: "alert.resolve", id: crash!.id, at: 1 }]);
    };
    expect(await h.evaluator.evaluate()).toEqual({ fired: [], resolved: [] });
    expect(await h.types()).toEqual(["alert.fired CrashLoop"]);
    // Decided again from what is stored: data lost fires, the crash loop is not resolved twice.
    const next = await h.evaluator.evaluate();
    expect(next.fired.map((a) => a.rule)).toEqual(["data_lost"]);
    expect(next.resolved).toEqual([]);
    expect(await h.types()).toEqual(["alert.fired CrashLoop", "alert.fired DataLost"]);
  });
});
