import type { AlertRecord } from "../domain/records.js";
import { createHmac } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { testStore } from "../../testing/store.js";
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
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

async function setup(responses: (number | Error)[]) {
  const store = await testStore();
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
    { urls: ["http://hooks.test/berth?token=s3cret"], secret: "k", backoffBaseMs: 5, maxAttempts: 3 },
    { store, ledger, log: createLogger("silent", "test"), managerId: "mgr_1", fetch: fetchImpl },
  );
  const events = async () => (await ledger.list({})).filter((e) => e.type.startsWith("webhook."));
  return { notifier, calls, events };
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

  it("keeps delivering and retrying when the ledger cannot record an attempt (a full disk)", async () => {
    const calls: number[] = [];
    const responses = [503, 200];
    const fetchImpl = (async () => {
      const r = responses.shift() ?? 200;
      calls.push(r);
      return new Response("x", { status: r });
    }) as unknown as typeof fetch;
    const store = await testStore();
    opened.push(store);
    const notifier = new WebhookNotifier(
      { urls: ["http://hooks.test/x"], backoffBaseMs: 5, maxAttempts: 3 },
      { store: { commit: () => Promise.reject(new Error("SQLITE_FULL: database or disk is full")) }, ledger: new Ledger(store), log: createLogger("silent", "test"), managerId: "mgr_1", fetch: fetchImpl },
    );
    notifier.notify("alert.fired", alert);
    await until(() => calls.length === 2);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toEqual([503, 200]);
  });

  it("sends nothing while closed (not the leader) and delivers again once opened", async () => {
    const h = await setup([204]);
    h.notifier.close();
    h.notifier.notify("alert.fired", alert);
    expect(h.calls).toHaveLength(0);
    h.notifier.open();
    h.notifier.notify("alert.fired", alert);
    await until(async () => (await h.events()).length === 1);
    expect(h.calls).toHaveLength(1);
    expect((await h.events()).map((e) => e.type)).toEqual(["webhook.delivered"]);
  });
});
