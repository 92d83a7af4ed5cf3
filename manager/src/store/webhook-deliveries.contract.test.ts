/**
 * The store contract's pending webhook deliveries (store.ts webhook.enqueue /
 * webhook.retry / webhook.done, WebhookDeliveryReads), its token ids in
 * Committed, and its presence count (countLiveLeases, lease.pruneExpired), on
 * the engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres). Time is
 * the caller's, so no case waits.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConflictError } from "../errors.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import type { Committed, Store, WriteOp } from "./store.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

const enqueue = (id: string, at: number, o: { urlKey?: string; maxPending?: number; nextAttemptAt?: number } = {}): WriteOp => ({
  op: "webhook.enqueue",
  delivery: { id, urlKey: o.urlKey ?? "k1", body: `{"delivery":"${id}"}`, createdAt: at, nextAttemptAt: o.nextAttemptAt ?? at },
  maxPending: o.maxPending ?? 100,
});

describe("webhook deliveries", () => {
  it("a queued delivery is due from its next attempt time on, with no attempts and no error yet", async () => {
    await store.commit([enqueue("dlv_1", T0, { nextAttemptAt: T0 + 10 })]);
    expect(await store.dueWebhookDeliveries(T0 + 9, 10)).toEqual([]);
    expect(await store.dueWebhookDeliveries(T0 + 10, 10)).toEqual([
      { id: "dlv_1", urlKey: "k1", body: '{"delivery":"dlv_1"}', attempts: 0, nextAttemptAt: T0 + 10, lastError: "", createdAt: T0 },
    ]);
    expect(await store.nextWebhookDeliveryAt()).toBe(T0 + 10);
    expect(await store.countWebhookDeliveries()).toBe(1);
  });

  it("one notification to two receivers is two rows with the same delivery id; due ones come soonest first, at most `limit`", async () => {
    await store.commit([enqueue("dlv_1", T0, { urlKey: "k1", nextAttemptAt: T0 + 5 }), enqueue("dlv_1", T0, { urlKey: "k2", nextAttemptAt: T0 + 5 }), enqueue("dlv_0", T0, { nextAttemptAt: T0 + 1 })]);
    expect((await store.dueWebhookDeliveries(T0 + 100, 10)).map((d) => `${d.id}/${d.urlKey}`)).toEqual(["dlv_0/k1", "dlv_1/k1", "dlv_1/k2"]);
    expect(await store.dueWebhookDeliveries(T0 + 100, 1)).toHaveLength(1);
  });

  it("a retry records the attempt, its error and the next time; done deletes the row; both refuse a stale attempt number", async () => {
    await store.commit([enqueue("dlv_1", T0)]);
    await store.commit([{ op: "webhook.retry", id: "dlv_1", urlKey: "k1", attempt: 1, nextAttemptAt: T0 + 1000, lastError: "HTTP 503" }]);
    expect(await store.dueWebhookDeliveries(T0 + 1000, 10)).toEqual([expect.objectContaining({ id: "dlv_1", attempts: 1, nextAttemptAt: T0 + 1000, lastError: "HTTP 503" })]);
    // Another manager recording attempt 1 again (it attempted from the same read): refused, nothing changes.
    await expect(store.commit([{ op: "webhook.retry", id: "dlv_1", urlKey: "k1", attempt: 1, nextAttemptAt: T0 + 5, lastError: "x" }])).rejects.toBeInstanceOf(ConflictError);
    await expect(store.commit([{ op: "webhook.done", id: "dlv_1", urlKey: "k1", attempt: 1 }])).rejects.toThrow(/no longer pending after 0 attempt/);
    expect((await store.dueWebhookDeliveries(T0 + 1000, 10))[0]).toMatchObject({ attempts: 1, lastError: "HTTP 503" });
    await store.commit([{ op: "webhook.done", id: "dlv_1", urlKey: "k1", attempt: 2 }]);
    expect(await store.countWebhookDeliveries()).toBe(0);
    expect(await store.nextWebhookDeliveryAt()).toBeUndefined();
    await expect(store.commit([{ op: "webhook.done", id: "dlv_1", urlKey: "k1", attempt: 2 }])).rejects.toBeInstanceOf(ConflictError);
  });

  it("a refused retry rolls back the batch it is in (its event is not written)", async () => {
    await store.commit([enqueue("dlv_1", T0)]);
    const before = await store.lastEventId();
    const event: WriteOp = { op: "event.append", at: T0, event: { type: "webhook.failed", actor: "alerts", message: "x" } };
    await expect(store.commit([{ op: "webhook.retry", id: "dlv_1", urlKey: "k1", attempt: 3, nextAttemptAt: T0, lastError: "" }, event])).rejects.toBeInstanceOf(ConflictError);
    expect(await store.lastEventId()).toBe(before);
  });

  it("is bounded: past maxPending the oldest others are dropped and reported, oldest first; the new one stays", async () => {
    await store.commit([enqueue("dlv_a", T0 + 1), enqueue("dlv_b", T0 + 2), enqueue("dlv_c", T0 + 3)]);
    const r = await store.commit([enqueue("dlv_d", T0 + 4, { maxPending: 2 })]);
    expect(r.droppedDeliveries).toEqual([
      { id: "dlv_a", urlKey: "k1" },
      { id: "dlv_b", urlKey: "k1" },
    ]);
    expect((await store.dueWebhookDeliveries(T0 + 10, 10)).map((d) => d.id)).toEqual(["dlv_c", "dlv_d"]);
    expect((await store.commit([enqueue("dlv_e", T0 + 5, { maxPending: 10 })])).droppedDeliveries).toBeUndefined();
  });

  it("what one store queued, a second store on the same database reads and finishes (a new leader)", async () => {
    const other = await sameDatabase(store);
    try {
      await store.commit([enqueue("dlv_1", T0), { op: "webhook.retry", id: "dlv_1", urlKey: "k1", attempt: 1, nextAttemptAt: T0 + 50, lastError: "timed out" }]);
      expect(await other.dueWebhookDeliveries(T0 + 50, 10)).toEqual([expect.objectContaining({ id: "dlv_1", attempts: 1, lastError: "timed out" })]);
      await other.commit([{ op: "webhook.done", id: "dlv_1", urlKey: "k1", attempt: 2 }]);
      expect(await store.countWebhookDeliveries()).toBe(0);
    } finally {
      await other.close();
    }
  });
});

describe("token ids in committed batches", () => {
  it("an inserted and a revoked token are named in Committed.tokenIds; a last-used stamp is not heard", async () => {
    const heard: Committed[] = [];
    const off = store.onCommit((c) => heard.push(c));
    const token = { id: "tok_1", name: "ci", role: "viewer" as const, project: null, createdAt: T0, createdBy: "test", revokedAt: null, lastUsedAt: null };
    await store.commit([{ op: "token.insert", token, secretHash: "h1" }]);
    await store.commit([{ op: "token.touch", id: "tok_1", at: T0 + 1 }]);
    await store.commit([{ op: "token.revoke", id: "tok_1", at: T0 + 2 }]);
    off();
    expect(heard.map((c) => [...(c.tokenIds ?? [])])).toEqual([["tok_1"], ["tok_1"]]);
  });
});

describe("presence leases", () => {
  it("counts the unexpired leases of a prefix; prune drops the expired ones of that prefix only", async () => {
    await store.commit([
      { op: "lease.acquire", name: "manager:mi_a", holder: "mi_a", ttlMs: 1000, at: T0 },
      { op: "lease.acquire", name: "manager:mi_b", holder: "mi_b", ttlMs: 5000, at: T0 },
      { op: "lease.acquire", name: "leader", holder: "mi_a", ttlMs: 1000, at: T0 },
    ]);
    expect(await store.countLiveLeases("manager:", T0 + 999)).toBe(2);
    expect(await store.countLiveLeases("manager:", T0 + 1000)).toBe(1);
    await store.commit([{ op: "lease.pruneExpired", prefix: "manager:", before: T0 + 2000 }]);
    expect(await store.getLease("manager:mi_a")).toBeUndefined();
    expect(await store.getLease("manager:mi_b")).toBeDefined();
    expect(await store.getLease("leader")).toBeDefined();
  });
});
