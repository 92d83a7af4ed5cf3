/**
 * The store contract's leases (store.ts lease.acquire / lease.release /
 * getLease) on the engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres):
 * who may take a lease, what its epoch becomes, and that two managers racing
 * for one get exactly one winner. Time is the caller's `at`, so no case waits.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ConflictError, LeaseHeldError } from "../errors.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import type { Store, WriteOp } from "./store.js";

const T0 = 1_700_000_000_000;
const TTL = 10_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

const acquire = (holder: string, at: number, ttlMs = TTL, name = "leader"): WriteOp => ({ op: "lease.acquire", name, holder, ttlMs, at });
const release = (holder: string, name = "leader"): WriteOp => ({ op: "lease.release", name, holder });

describe("leases", () => {
  it("a free lease is taken at epoch 1 until at + ttl; nobody ever took another name", async () => {
    await store.commit([acquire("mi_a", T0)]);
    expect(await store.getLease("leader")).toEqual({ name: "leader", holder: "mi_a", epoch: 1, expiresAt: T0 + TTL });
    expect(await store.getLease("other")).toBeUndefined();
  });

  it("the holder renews its own lease: same epoch, later expiry, even after it expired", async () => {
    await store.commit([acquire("mi_a", T0)]);
    await store.commit([acquire("mi_a", T0 + 3000)]);
    expect(await store.getLease("leader")).toEqual({ name: "leader", holder: "mi_a", epoch: 1, expiresAt: T0 + 3000 + TTL });
    await store.commit([acquire("mi_a", T0 + 60_000)]);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_a", epoch: 1, expiresAt: T0 + 60_000 + TTL });
  });

  it("is refused to another holder while unexpired, with a ConflictError naming the holder and its expiry, and nothing changes", async () => {
    await store.commit([acquire("mi_a", T0)]);
    const err = await store.commit([acquire("mi_b", T0 + TTL - 1)]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).code).toBe(Code.Aborted);
    expect(err).toMatchObject({ lease: "leader", holder: "mi_a", expiresAt: T0 + TTL });
    expect((err as Error).message).toBe(`lease leader is held by mi_a until ${new Date(T0 + TTL).toISOString()}; it can be taken once it expires unrenewed`);
    expect(await store.getLease("leader")).toEqual({ name: "leader", holder: "mi_a", epoch: 1, expiresAt: T0 + TTL });
  });

  it("a refused acquire fails its whole batch", async () => {
    await store.commit([acquire("mi_a", T0)]);
    await expect(store.commit([{ op: "meta.set", key: "k", value: "v" }, acquire("mi_b", T0 + 1)])).rejects.toBeInstanceOf(LeaseHeldError);
    expect(await store.getMeta("k")).toBeUndefined();
  });

  it("is taken over once expired (expires_at <= at) with epoch + 1, and the old holder is then refused", async () => {
    await store.commit([acquire("mi_a", T0)]);
    await store.commit([acquire("mi_b", T0 + TTL, 5000)]);
    expect(await store.getLease("leader")).toEqual({ name: "leader", holder: "mi_b", epoch: 2, expiresAt: T0 + TTL + 5000 });
    await expect(store.commit([acquire("mi_a", T0 + TTL + 1)])).rejects.toMatchObject({ holder: "mi_b", expiresAt: T0 + TTL + 5000 });
    // Back to the first holder after the second lapsed: a change of holder again.
    await store.commit([acquire("mi_a", T0 + TTL + 5000)]);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_a", epoch: 3 });
  });

  it("release drops only the holder's own lease, silently otherwise; a released lease is free at once", async () => {
    await store.commit([acquire("mi_a", T0)]);
    await store.commit([release("mi_b")]);
    await store.commit([release("mi_a", "never_taken")]);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_a" });
    await store.commit([release("mi_a")]);
    expect(await store.getLease("leader")).toBeUndefined();
    await store.commit([acquire("mi_b", T0 + 1)]);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_b", epoch: 1 });
  });

  it("leases of different names are independent", async () => {
    await store.commit([acquire("mi_a", T0, TTL, "leader")]);
    await store.commit([acquire("mi_b", T0, TTL, "other")]);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_a" });
    expect(await store.getLease("other")).toMatchObject({ holder: "mi_b" });
  });

  it("two managers racing for a free (or expired) lease: exactly one wins, the other is told who", async () => {
    // A second store on the same database: on PostgreSQL its own pool, as another manager's.
    const other = await sameDatabase(store);
    try {
      for (let round = 0; round < 20; round++) {
        const name = `race_${round}`;
        // Odd rounds race for a lease a third holder let expire.
        if (round % 2) await store.commit([acquire("mi_old", T0, TTL, name)]);
        const at = T0 + TTL;
        const results = await Promise.allSettled([store.commit([acquire("mi_a", at, TTL, name)]), other.commit([acquire("mi_b", at, TTL, name)])]);
        const won = results.filter((r) => r.status === "fulfilled");
        const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
        expect(won, `round ${round}`).toHaveLength(1);
        expect(lost).toHaveLength(1);
        const lease = await store.getLease(name);
        const winner = results[0]!.status === "fulfilled" ? "mi_a" : "mi_b";
        expect(lease).toEqual({ name, holder: winner, epoch: round % 2 ? 2 : 1, expiresAt: at + TTL });
        expect(lost[0]!.reason).toBeInstanceOf(LeaseHeldError);
        expect(lost[0]!.reason).toMatchObject({ holder: winner, expiresAt: at + TTL });
      }
    } finally {
      await other.close();
    }
  });
});
