/**
 * The schedule loop (scheduler.ts) with an injected clock and timers against
 * a real store (testStore(): SQLite in "unit", PostgreSQL in "unit-pg"), and
 * a recording executor: a tick runs exactly once (repeated passes, two
 * managers' loops on one database, a restarted manager), a missed tick is
 * caught up once within its grace and recorded as missed beyond it,
 * only_when_running is honoured, runs left by a dead manager end
 * ManagerRestarted, and the timer is armed at the next tick and re-armed when
 * a schedule changes.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ScheduleSpecSchema, type ScheduleSpec } from "@berth/proto/berth/v1/schedule_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { newServer, testEngine, testStore, twoManagerStores } from "../../testing/store.js";
import type { ScheduleRecord } from "./records.js";
import { MAX_SLEEP_MS, Scheduler, type Timers } from "./scheduler.js";
import type { ScheduleExecutor } from "./runner.js";

/** 2026-01-01T00:00:00Z. */
const T0 = Date.UTC(2026, 0, 1);
const MIN = 60_000;
const HOUR = 60 * MIN;

/** What the executor was asked to do, in order, across every loop of a test. */
interface Calls {
  list: string[];
}

function executor(calls: Calls, o: { running?: boolean; gate?: Promise<void> } = {}): ScheduleExecutor {
  return {
    isRunning: async (id) => {
      calls.list.push(`isRunning ${id}`);
      return o.running ?? true;
    },
    consoleCommand: async (id, command) => {
      calls.list.push(`console ${id} ${command}`);
      await o.gate;
    },
    power: async (id, action) => void calls.list.push(`power ${id} ${action}`),
    sleep: async (ms) => void calls.list.push(`sleep ${ms}`),
  };
}

/** Timers that only record: the test moves the clock and passes by hand. */
class FakeTimers implements Timers {
  armed: number[] = [];
  fire: (() => void) | undefined;
  constructor(private readonly now: () => number) {}
  set(fn: () => void, ms: number) {
    this.armed.push(this.now() + ms);
    this.fire = fn;
    return this.armed.length;
  }
  clear() {}
}

type SpecInit = MessageInitShape<typeof ScheduleSpecSchema>;
function spec(o: SpecInit = {}): ScheduleSpec {
  const base: SpecInit = {
    name: "nightly",
    target: { kind: { case: "serverId", value: "srv_aaaa" } },
    cron: "0 * * * *",
    timeZone: "UTC",
    enabled: true,
    tasks: [{ kind: { case: "consoleCommand", value: { command: "say hi" } } }],
  };
  return create(ScheduleSpecSchema, { ...base, ...o } as SpecInit);
}

function schedule(o: Partial<ScheduleRecord> & { spec?: ScheduleSpec } = {}): ScheduleRecord {
  const s = o.spec ?? spec();
  return { id: "sch_a", project: "default", name: s.name, serverId: "srv_aaaa", spec: s, version: 1, activeSince: T0, lastTickAt: null, createdAt: T0, updatedAt: T0, ...o };
}

interface Loop {
  scheduler: Scheduler;
  timers: FakeTimers;
}

let clock = T0;
const now = () => clock;

function loop(store: Store, holder: string, calls: Calls, o: { running?: boolean; gate?: Promise<void>; live?: (h: string) => boolean } = {}): Loop {
  const timers = new FakeTimers(now);
  const scheduler = new Scheduler({
    store,
    ledger: new Ledger(store, now),
    log: createLogger("silent", "test"),
    holder,
    executor: () => executor(calls, o),
    isHolderLive: async (h) => o.live?.(h) ?? h === holder,
    now,
    timers,
  });
  return { scheduler, timers };
}

async function runs(store: Store, id = "sch_a") {
  return (await store.listScheduleRuns(id, { limit: 100 })).reverse().map((r) => ({ trigger: r.trigger, at: new Date(r.scheduledFor).toISOString(), outcome: r.outcome, reason: r.reason, missed: r.missedCount }));
}

async function eventTypes(store: Store) {
  return (await store.listNewestFirst({ project: null, typePrefix: "schedule.", limit: 100 })).reverse().map((e) => `${e.type}${e.reason ? ` ${e.reason}` : ""}`);
}

let store: Store;
beforeEach(async () => {
  clock = T0;
  store = await testStore();
});
afterEach(() => store.close());

describe("the schedule loop", () => {
  it("runs a due tick exactly once, however often it passes, and arms its timer at the next tick", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule() }]);
    const calls: Calls = { list: [] };
    const { scheduler, timers } = loop(store, "mi_a", calls);
    clock = T0 + 50 * MIN;
    await scheduler.pass();
    expect(calls.list).toEqual([]);
    expect(timers.armed.at(-1)).toBe(T0 + HOUR);
    clock = T0 + HOUR + 2_000;
    await scheduler.pass();
    await scheduler.pass();
    await scheduler.idle();
    clock = T0 + HOUR + 50_000;
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list).toEqual(["console srv_aaaa say hi"]);
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "succeeded", reason: "", missed: 0 }]);
    // The next tick (02:00) is more than MAX_SLEEP_MS away: the loop looks again then at the latest.
    expect(timers.armed.at(-1)).toBe(clock + MAX_SLEEP_MS);
    expect(await eventTypes(store)).toEqual(["schedule.run_started tick", "schedule.run_succeeded"]);
    const ev = (await store.listNewestFirst({ project: null, typePrefix: "schedule.run_succeeded", limit: 1 }))[0]!;
    expect(ev.actor).toBe("schedule:sch_a");
    expect(JSON.parse(ev.payloadJson)).toMatchObject({ trigger: "tick", targets: [{ serverId: "srv_aaaa", outcome: "succeeded", tasks: [{ kind: "console_command", outcome: "succeeded" }] }] });
  });

  it("runs nothing while disabled, and sleeps at most MAX_SLEEP_MS", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule({ spec: spec({ enabled: false }) }) }]);
    const calls: Calls = { list: [] };
    const { scheduler, timers } = loop(store, "mi_a", calls);
    clock = T0 + 3 * HOUR + 10_000;
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list).toEqual([]);
    expect(await runs(store)).toEqual([]);
    expect(timers.armed.at(-1)).toBe(clock + MAX_SLEEP_MS);
  });

  it("two managers' loops over one database run a tick once", async () => {
    const two = await twoManagerStores();
    try {
      const [a, b] = two.stores;
      await a.commit([{ op: "schedule.insert", schedule: schedule() }]);
      const calls: Calls = { list: [] };
      const la = loop(a, "mi_a", calls);
      const lb = loop(b, "mi_b", calls);
      clock = T0 + HOUR + 1_000;
      await Promise.all([la.scheduler.pass(), lb.scheduler.pass(), la.scheduler.pass(), lb.scheduler.pass()]);
      await Promise.all([la.scheduler.idle(), lb.scheduler.idle()]);
      expect(calls.list).toEqual(["console srv_aaaa say hi"]);
      expect(await runs(b)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "succeeded", reason: "", missed: 0 }]);
    } finally {
      await two.close();
    }
  });

  it("a restarted manager (a new loop on the same store) does not run a tick again, and ends its predecessor's run left running as ManagerRestarted", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule() }]);
    const calls: Calls = { list: [] };
    // The first manager claims the 01:00 tick and "dies" while its task hangs.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = loop(store, "mi_dead", calls, { gate });
    clock = T0 + HOUR + 1_000;
    await first.scheduler.pass();
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "running", reason: "", missed: 0 }]);

    const second = loop(store, "mi_new", calls);
    clock = T0 + HOUR + 20_000;
    second.scheduler.start();
    await waitUntil(async () => (await runs(store))[0]!.outcome !== "running");
    await second.scheduler.pass();
    await second.scheduler.idle();
    expect(calls.list).toEqual(["console srv_aaaa say hi"]);
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "failed", reason: "ManagerRestarted", missed: 0 }]);
    expect(await eventTypes(store)).toEqual(["schedule.run_started tick", "schedule.run_failed ManagerRestarted"]);
    // The old run's end finds its record ended already: it stays ManagerRestarted.
    release();
    await first.scheduler.idle();
    expect((await runs(store))[0]!.reason).toBe("ManagerRestarted");
    await second.scheduler.stop();
  });

  it("a deletion committed elsewhere (another manager; not through this loop's cancelSchedule) cuts the run under way here short", async () => {
    const two = await twoManagerStores();
    try {
      const [a, b] = two.stores;
      await a.commit([{ op: "schedule.insert", schedule: schedule() }]);
      const calls: Calls = { list: [] };
      const la = loop(a, "mi_a", calls, { gate: new Promise(() => {}) });
      la.scheduler.start();
      clock = T0 + HOUR + 1_000;
      await la.scheduler.pass();
      expect(calls.list).toEqual(["console srv_aaaa say hi"]);
      // The other manager deletes it: on PostgreSQL its commit reaches this loop through the change feed;
      // on SQLite (one manager per database) the same commit made through this manager's store stands for it.
      const deleter = testEngine() === "postgres" ? b : a;
      await deleter.commit([{ op: "schedule.delete", id: "sch_a" }, new Ledger(deleter, now).op({ type: "schedule.deleted", project: "default", correlationId: "sch_a", message: "test" })]);
      // The task never ends by itself: only the cut ends the run.
      const ended = await Promise.race([la.scheduler.idle().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))]);
      expect(ended).toBe(true);
      await la.scheduler.stop();
    } finally {
      await two.close();
    }
  });

  it("leaves a run of a live manager running (PostgreSQL: another manager is still at it)", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule() }]);
    const calls: Calls = { list: [] };
    const gate = new Promise<void>(() => {});
    const other = loop(store, "mi_other", calls, { gate });
    clock = T0 + HOUR + 1_000;
    await other.scheduler.pass();
    const leader = loop(store, "mi_leader", calls, { live: (h) => h === "mi_other" || h === "mi_leader" });
    leader.scheduler.start();
    await new Promise((r) => setTimeout(r, 50));
    await leader.scheduler.stop();
    expect((await runs(store))[0]!.outcome).toBe("running");
  });

  it("catches up a tick missed within the grace period once (catch_up), the older ones as one missed record", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule({ spec: spec({ missedRunGraceSeconds: 3600 }) }) }]);
    const calls: Calls = { list: [] };
    const { scheduler } = loop(store, "mi_a", calls);
    clock = T0 + 3 * HOUR + 20 * MIN; // down since before 01:00: 01:00 and 02:00 too old, 03:00 20 min late
    await scheduler.pass();
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list).toEqual(["console srv_aaaa say hi"]);
    expect(await runs(store)).toEqual([
      { trigger: "tick", at: "2026-01-01T02:00:00.000Z", outcome: "missed", reason: "Missed", missed: 2 },
      { trigger: "catch_up", at: "2026-01-01T03:00:00.000Z", outcome: "succeeded", reason: "", missed: 0 },
    ]);
    expect(await eventTypes(store)).toEqual(["schedule.ticks_missed Missed", "schedule.run_started catch_up", "schedule.run_succeeded"]);
    const missed = (await store.listScheduleRuns("sch_a", { limit: 10 })).find((r) => r.outcome === "missed")!;
    expect(missed.firstMissedAt).toBe(T0 + HOUR);
  });

  it("records a tick older than the grace period as missed and does not run it", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule({ spec: spec({ missedRunGraceSeconds: 600 }) }) }]);
    const calls: Calls = { list: [] };
    const { scheduler } = loop(store, "mi_a", calls);
    clock = T0 + HOUR + 20 * MIN;
    await scheduler.pass();
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list).toEqual([]);
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "missed", reason: "Missed", missed: 1 }]);
  });

  it("honours only_when_running: a stopped server's run is skipped (NotRunning) and no task runs", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule({ spec: spec({ onlyWhenRunning: true }) }) }]);
    const calls: Calls = { list: [] };
    const { scheduler } = loop(store, "mi_a", calls, { running: false });
    clock = T0 + HOUR + 1_000;
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list).toEqual(["isRunning srv_aaaa"]);
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "skipped_not_running", reason: "NotRunning", missed: 0 }]);
    expect(await eventTypes(store)).toEqual(["schedule.run_started tick", "schedule.run_skipped NotRunning"]);
  });

  it("a selector runs on the project's servers carrying its labels, chosen when the run starts (a deleted or other project's server is not)", async () => {
    const server = (id: string, labels: Record<string, string>, o: { project?: string; deletedAt?: number } = {}) => ({ op: "server.insert" as const, server: newServer({ id, hostId: "host_a", name: id.replace("_", "-"), spec: { labels }, ...o }) });
    await store.commit([
      server("srv_p1", { tier: "prod", game: "mc" }),
      server("srv_p2", { tier: "prod" }),
      server("srv_d1", { tier: "dev" }),
      server("srv_p3", { tier: "prod" }, { deletedAt: T0 }),
      server("srv_b1", { tier: "prod" }, { project: "beta" }),
      { op: "schedule.insert", schedule: schedule({ serverId: "", spec: spec({ target: { kind: { case: "selector", value: { labels: { tier: "prod" } } } } }) }) },
    ]);
    const calls: Calls = { list: [] };
    const { scheduler } = loop(store, "mi_a", calls);
    clock = T0 + HOUR + 1_000;
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list.sort()).toEqual(["console srv_p1 say hi", "console srv_p2 say hi"]);
    // A server labelled later is in the next run.
    await store.commit([server("srv_p4", { tier: "prod" })]);
    calls.list = [];
    clock = T0 + 2 * HOUR + 1_000;
    await scheduler.pass();
    await scheduler.idle();
    expect(calls.list.sort()).toEqual(["console srv_p1 say hi", "console srv_p2 say hi", "console srv_p4 say hi"]);
  });

  it("records a tick that comes while the previous run is still under way as failed (PreviousRunUnderWay), without a second run", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule({ spec: spec({ cron: "*/5 * * * *" }) }) }]);
    const calls: Calls = { list: [] };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { scheduler } = loop(store, "mi_a", calls, { gate });
    clock = T0 + 5 * MIN + 1_000;
    await scheduler.pass();
    clock = T0 + 10 * MIN + 1_000;
    await scheduler.pass();
    release();
    await scheduler.idle();
    expect(calls.list).toEqual(["console srv_aaaa say hi"]);
    expect(await runs(store)).toEqual([
      { trigger: "tick", at: "2026-01-01T00:05:00.000Z", outcome: "succeeded", reason: "", missed: 0 },
      { trigger: "tick", at: "2026-01-01T00:10:00.000Z", outcome: "failed", reason: "PreviousRunUnderWay", missed: 0 },
    ]);
  });

  it("wakes when a schedule is created: the timer is re-armed at its first tick", async () => {
    const calls: Calls = { list: [] };
    const { scheduler, timers } = loop(store, "mi_a", calls);
    clock = T0 + 50 * MIN;
    scheduler.start();
    await waitUntil(async () => timers.armed.length > 0);
    expect(timers.armed.at(-1)).toBe(clock + MAX_SLEEP_MS);
    const ledger = new Ledger(store, now);
    await store.commit([{ op: "schedule.insert", schedule: schedule({ activeSince: clock }) }, ledger.op({ type: "schedule.created", correlationId: "sch_a", message: "test" })]);
    await waitUntil(async () => timers.armed.at(-1) === T0 + HOUR);
    // The timer fires at the tick: the run happens.
    clock = T0 + HOUR;
    timers.fire!();
    await waitUntil(async () => (await runs(store)).length === 1);
    await scheduler.stop();
    expect(calls.list).toEqual(["console srv_aaaa say hi"]);
  });

  it("stop() cuts a run under way short: failed, ManagerShutdown", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule() }]);
    const calls: Calls = { list: [] };
    const { scheduler } = loop(store, "mi_a", calls, { gate: new Promise(() => {}) });
    scheduler.start();
    clock = T0 + HOUR + 1_000;
    await scheduler.pass();
    await scheduler.stop();
    expect(await runs(store)).toEqual([{ trigger: "tick", at: "2026-01-01T01:00:00.000Z", outcome: "failed", reason: "ManagerShutdown", missed: 0 }]);
  });
});

async function waitUntil(f: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
