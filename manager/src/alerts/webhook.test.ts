import type { AlertRecord } from "../domain/records.js";
import { createHmac } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import { redactUrl, retryDelayMs, signBody, WebhookNotifier, type AlertNotification } from "./webhook.js";

const alert: AlertRecord = {
  id: "alr_1",
  rule: "crash_loop",
  subject: "server:srv_1",
  project: "a",
  hostId: "host_1",
  serverId: "srv_1",
  severity: "critical",
  state: "firing",
  message: "crash-looping",
  firstSeen: 1000,
  lastSeen: 1000,
  resolvedAt: null,
  acknowledgedBy: "",
  acknowledgedAt: null,
  mutedUntil: null,
};

const opened: Store[] = [];
const notifiers: WebhookNotifier[] = [];
afterEach(async () => {
  for (const n of notifiers.splice(0)) {
    n.close();
    await n.idle();
  }
  // Later stores first: sameDatabase() stores close before the one they share.
  for (const s of opened.splice(0).reverse()) await s.close();
});

async function setup(responses: (number | Error)[], o: { store?: Store; backoffBaseMs?: number; maxPending?: number; now?: () => number } = {}) {
  const store = o.store ?? (await testStore());
  opened.push(store);
  const ledger = new Ledger(store);
  const calls: { url: string; headers: Record<string, string>; body: string }[] = [];
  const fetchImpl = (async (url: string, init: RequestInit) => {
    calls.push({ url, headers: init.headers as Record<string, string>, body: init.body as string });
    const r = responses.shift() ?? 200;
    if (r instanceof Error) throw r;
    return new Response(r === 204 ? null : "ok", { status: r });
  }) as unknown as typeof fetch;
  const notifier = new WebhookNotifier(
    { urls: ["http://hooks.test/berth?token=s3cret"], secret: "k", backoffBaseMs: o.backoffBaseMs ?? 5, maxAttempts: 3, ...(o.maxPending ? { maxPending: o.maxPending } : {}) },
    { store, ledger, log: createLogger("silent", "test"), managerId: "mgr_1", fetch: fetchImpl, ...(o.now ? { now: o.now } : {}) },
  );
  notifiers.push(notifier);
  const events = async () => (await ledger.list({})).filter((e) => e.type.startsWith("webhook."));
  return { store, notifier, calls, events };
}

const until = async (what: () => boolean | Promise<boolean>) => {
  for (let i = 0; i < 200 && !(await what()); i++) await new Promise((r) => setTimeout(r, 5));
};

describe("webhooks", () => {
  it("signs the exact body with HMAC-SHA256", () => {
    expect(signBody("{}", "k")).toBe(`sha256=${createHmac("sha256", "k").update("{}").digest("hex")}`);
  });

  it("backs off exponentially", () => {
    expect([2, 3, 4, 5].map((n) => retryDelayMs(n, 1000))).toEqual([1000, 2000, 4000, 8000]);
  });

  it("never shows query strings or credentials", () => {
    expect(redactUrl("https://user:pw@hooks.example/x?token=1")).toBe("https://hooks.example/x");
  });

  it("POSTs signed JSON and records the delivery", async () => {
    const h = await setup([204]);
    h.notifier.notify("alert.fired", alert);
    await until(async () => (await h.events()).length === 1);
    const [call] = h.calls;
    const body = JSON.parse(call!.body) as AlertNotification;
    expect(body).toMatchObject({ type: "alert.fired", managerId: "mgr_1", alert: { id: "alr_1", rule: "crash_loop", state: "firing" } });
    expect(call!.headers["X-Berth-Signature"]).toBe(signBody(call!.body, "k"));
    expect((await h.events()).map((e) => e.type)).toEqual(["webhook.delivered"]);
    expect((await h.events())[0]!.payloadJson).not.toContain("s3cret");
  });

  it("retries network errors and 5xx with the same delivery id, recording each attempt", async () => {
    const h = await setup([new Error("ECONNREFUSED"), 503, 200]);
    h.notifier.notify("alert.resolved", alert);
    await until(async () => (await h.events()).length === 3);
    expect((await h.events()).map((e) => e.type)).toEqual(["webhook.failed", "webhook.failed", "webhook.delivered"]);
    expect(new Set(h.calls.map((c) => (JSON.parse(c.body) as AlertNotification).delivery)).size).toBe(1);
    expect(JSON.parse((await h.events())[1]!.payloadJson)).toMatchObject({ attempt: 2, status: 503, willRetry: true });
  });

  it("gives up after the last attempt, and at once on a 4xx refusal", async () => {
    const h = await setup([500, 500, 500]);
    h.notifier.notify("alert.fired", alert);
    await until(async () => (await h.events()).length === 3);
    await new Promise((r) => setTimeout(r, 50));
    expect(h.calls).toHaveLength(3);
    expect(JSON.parse((await h.events())[2]!.payloadJson)).toMatchObject({ attempt: 3, willRetry: false });

    const g = await setup([404]);
    g.notifier.notify("alert.fired", alert);
    await until(async () => (await g.events()).length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(g.calls).toHaveLength(1);
  });

  it("records an attempt the database refused (a full disk) once it takes writes again, without calling the receiver again meanwhile", async () => {
    const calls: number[] = [];
    const fetchImpl = (async () => {
      calls.push(200);
      return new Response("x", { status: 200 });
    }) as unknown as typeof fetch;
    const store = await testStore();
    opened.push(store);
    let full = false;
    let refused = 0;
    const flaky = {
      commit: (ops: Parameters<Store["commit"]>[0]) => (full ? (refused++, Promise.reject(new Error("SQLITE_FULL: database or disk is full"))) : store.commit(ops)),
      dueWebhookDeliveries: (at: number, limit: number) => store.dueWebhookDeliveries(at, limit),
      nextWebhookDeliveryAt: () => store.nextWebhookDeliveryAt(),
    };
    const ledger = new Ledger(store);
    const notifier = new WebhookNotifier(
      { urls: ["http://hooks.test/x"], backoffBaseMs: 5, maxAttempts: 3, troublePauseMs: 5 },
      { store: flaky, ledger, log: createLogger("silent", "test"), managerId: "mgr_1", fetch: fetchImpl },
    );
    notifiers.push(notifier);
    await notifier.notify("alert.fired", alert);
    full = true; // from the first attempt's record on
    await until(() => refused >= 3);
    expect(calls).toEqual([200]);
    expect(await store.countWebhookDeliveries()).toBe(1);
    full = false;
    await until(async () => (await store.countWebhookDeliveries()) === 0);
    expect(calls).toEqual([200]);
    expect((await ledger.list({})).filter((e) => e.type.startsWith("webhook.")).map((e) => e.type)).toEqual(["webhook.delivered"]);
  });

  it("keeps a retry in the database: a second sender on the same database (a restart, a new leader) delivers it with the same delivery id", async () => {
    let now = 1_700_000_000_000;
    // The first manager: its attempt fails, the retry is due a minute later, then it dies.
    const first = await setup([503], { backoffBaseMs: 60_000, now: () => now });
    await first.notifier.notify("alert.fired", alert);
    await until(async () => (await first.events()).length === 1);
    first.notifier.close();
    await first.notifier.idle();
    expect(await first.store.dueWebhookDeliveries(now + 60_000, 10)).toEqual([expect.objectContaining({ attempts: 1, lastError: "HTTP 503", nextAttemptAt: now + 60_000 })]);

    // The next leader, on the same database, a minute later: it picks the retry up when it starts sending.
    now += 60_000;
    const second = await setup([200], { store: await sameDatabase(first.store), now: () => now });
    second.notifier.open();
    await until(async () => (await second.events()).length === 2);
    expect((await second.events()).map((e) => e.type)).toEqual(["webhook.failed", "webhook.delivered"]);
    const [before] = first.calls;
    const [after] = second.calls;
    expect(after!.body).toBe(before!.body);
    expect(after!.headers["x-berth-delivery"]).toBe((JSON.parse(before!.body) as AlertNotification).delivery);
    expect(JSON.parse((await second.events())[1]!.payloadJson)).toMatchObject({ attempt: 2, status: 200 });
    expect(await second.store.countWebhookDeliveries()).toBe(0);
  });

  it("bounds the queue: past maxPending the oldest pending deliveries are dropped and counted", async () => {
    let now = 1_700_000_000_000;
    const h = await setup([503, 503, 503], { backoffBaseMs: 3_600_000, maxPending: 2, now: () => now++ });
    for (const id of ["alr_1", "alr_2", "alr_3"]) await h.notifier.notify("alert.fired", { ...alert, id });
    expect(h.notifier.dropped).toBe(1);
    expect(await h.store.countWebhookDeliveries()).toBe(2);
    const kept = await h.store.dueWebhookDeliveries(Number.MAX_SAFE_INTEGER, 10);
    expect(kept.map((d) => (JSON.parse(d.body) as AlertNotification).alert.id).sort()).toEqual(["alr_2", "alr_3"]);
  });

  it("sends nothing while closed (not the leader) and delivers again once opened", async () => {
    const h = await setup([204]);
    h.notifier.close();
    await h.notifier.notify("alert.fired", alert);
    expect(h.calls).toHaveLength(0);
    expect(await h.store.countWebhookDeliveries()).toBe(0);
    h.notifier.open();
    await h.notifier.notify("alert.fired", alert);
    await until(async () => (await h.events()).length === 1);
    expect(h.calls).toHaveLength(1);
    expect((await h.events()).map((e) => e.type)).toEqual(["webhook.delivered"]);
  });
});
