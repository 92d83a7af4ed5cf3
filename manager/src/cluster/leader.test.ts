// The leader lease on the engine testStore() opens, two managers on one database
// (on PostgreSQL two stores, each with its own pool: sameDatabase). Short TTLs
// keep the cases quick; every wait is for evidence (a change heard, a lease row
// renewed), bounded only by vi.waitFor's failure timeout.
import { performance } from "node:perf_hooks";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { UnavailableError } from "../errors.js";
import { createLogger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import { LeaderLease } from "./leader.js";

const TTL = 800;
const RENEW = 100;
const SKEW = 200;
/** Failure timeout of the waits: far beyond any handover the cases expect (ttl + renew). */
const PATIENCE = { timeout: 10_000, interval: 10 };
const log = createLogger("silent", "test");

let store: Store;
let other: Store;
const leases: LeaderLease[] = [];
/** Every change heard, in order, with who else claimed to lead at that moment. */
let changes: { holder: string; leader: boolean; othersLeading: string[] }[];

beforeEach(async () => {
  store = await testStore();
  other = await sameDatabase(store);
  changes = [];
});
afterEach(async () => {
  for (const l of leases.splice(0)) await l.stop();
  await other.close();
  await store.close();
});

/** A store whose database can be made unreachable for one manager (its commits and reads fail). */
function cuttable(s: Store) {
  const state = { down: false };
  const unreachable = () => Promise.reject(new UnavailableError("the database is unreachable (test)"));
  return {
    state,
    store: {
      commit: (ops: readonly WriteOp[]) => (state.down ? unreachable() : s.commit(ops)),
      getLease: (name: string) => (state.down ? unreachable() : s.getLease(name)),
    },
  };
}

function lease(holder: string, s: Pick<Store, "commit" | "getLease">): LeaderLease {
  const l = new LeaderLease({ store: s, holder, log, ttlMs: TTL, renewMs: RENEW, clockSkewMs: SKEW });
  l.onChange((leader) => changes.push({ holder, leader, othersLeading: leases.filter((o) => o !== l && o.isLeader).map((o) => o.holder) }));
  leases.push(l);
  return l;
}

describe("LeaderLease", () => {
  it("of two managers started together exactly one leads, and keeps leading while it renews", async () => {
    const a = lease("mi_a", store);
    const b = lease("mi_b", other);
    a.start();
    b.start();
    await vi.waitFor(() => expect(a.isLeader || b.isLeader).toBe(true), PATIENCE);
    const [leader, follower] = a.isLeader ? [a, b] : [b, a];
    const first = (await store.getLease("leader"))!;
    expect(first).toMatchObject({ holder: leader.holder, epoch: 1 });
    // Evidence of several renewals: the stored expiry moved on by more than three renew intervals.
    await vi.waitFor(async () => expect((await store.getLease("leader"))!.expiresAt).toBeGreaterThan(first.expiresAt + 3 * RENEW), PATIENCE);
    expect(leader.isLeader).toBe(true);
    expect(follower.isLeader).toBe(false);
    expect(await store.getLease("leader")).toMatchObject({ holder: leader.holder, epoch: 1 });
    expect(changes).toEqual([{ holder: leader.holder, leader: true, othersLeading: [] }]);
  });

  it("a leader that stops releases the lease and the other manager takes it over", async () => {
    const a = lease("mi_a", store);
    a.start();
    await vi.waitFor(() => expect(a.isLeader).toBe(true), PATIENCE);
    const b = lease("mi_b", other);
    b.start();
    // b is refused while a renews (evidence: its first attempt ran and a still holds the lease).
    await vi.waitFor(async () => expect((await store.getLease("leader"))!.holder).toBe("mi_a"), PATIENCE);
    await a.stop();
    expect(a.isLeader).toBe(false);
    await vi.waitFor(() => expect(b.isLeader).toBe(true), PATIENCE);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_b" });
    expect(changes).toEqual([
      { holder: "mi_a", leader: true, othersLeading: [] },
      { holder: "mi_a", leader: false, othersLeading: [] },
      { holder: "mi_b", leader: true, othersLeading: [] },
    ]);
  });

  it("a leader cut off from the database stops leading before its lease can expire; the other takes over with the next epoch, and the first stays follower once back", async () => {
    const cut = cuttable(store);
    const a = lease("mi_a", cut.store);
    a.start();
    await vi.waitFor(() => expect(a.isLeader).toBe(true), PATIENCE);
    const b = lease("mi_b", other);
    b.start();
    const held = (await store.getLease("leader"))!;
    cut.state.down = true;
    await vi.waitFor(() => expect(b.isLeader).toBe(true), PATIENCE);
    // a had given up before b led (othersLeading is empty at b's change), and b's lease began no earlier than a's expired.
    expect(changes).toEqual([
      { holder: "mi_a", leader: true, othersLeading: [] },
      { holder: "mi_a", leader: false, othersLeading: [] },
      { holder: "mi_b", leader: true, othersLeading: [] },
    ]);
    const taken = (await store.getLease("leader"))!;
    expect(taken).toMatchObject({ holder: "mi_b", epoch: held.epoch + 1 });
    expect(taken.expiresAt - TTL).toBeGreaterThanOrEqual(held.expiresAt);
    // Back online, a is refused (b renews) and stays a follower.
    cut.state.down = false;
    const seen = (await store.getLease("leader"))!.expiresAt;
    await vi.waitFor(async () => expect((await store.getLease("leader"))!.expiresAt).toBeGreaterThan(seen + 3 * RENEW), PATIENCE);
    expect(a.isLeader).toBe(false);
    expect(b.isLeader).toBe(true);
    expect(changes).toHaveLength(3);
  });

  it("a killed leader (no release, no renewals) is replaced once its lease expires", async () => {
    const cut = cuttable(store);
    const a = lease("mi_a", cut.store);
    a.start();
    await vi.waitFor(() => expect(a.isLeader).toBe(true), PATIENCE);
    // As kill -9: the process stops renewing and never releases (its stop() only tells its own listeners).
    cut.state.down = true;
    await a.stop();
    const b = lease("mi_b", other);
    b.start();
    await vi.waitFor(() => expect(b.isLeader).toBe(true), PATIENCE);
    expect(await store.getLease("leader")).toMatchObject({ holder: "mi_b", epoch: 2 });
  });

  it("does not lead on an acquire that took longer than the lease's term", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    /** What a looked like when its second attempt began, i.e. after the late first one came back. */
    let atSecond: { leader: boolean; changes: number } | undefined;
    const slow = {
      commit: async (ops: readonly WriteOp[]) => {
        const call = ++calls;
        if (call === 2) atSecond = { leader: a.isLeader, changes: changes.length };
        const r = await store.commit(ops);
        if (call === 1) await gate;
        return r;
      },
      getLease: (name: string) => store.getLease(name),
    };
    const a = lease("mi_a", slow);
    const t0 = performance.now();
    a.start();
    // The first acquire is stuck in flight past the whole term (the condition itself, not a sleep).
    await vi.waitFor(() => expect(performance.now() - t0).toBeGreaterThan(TTL), PATIENCE);
    release();
    await vi.waitFor(() => expect(a.isLeader).toBe(true), PATIENCE);
    // The late success was never acted on; the renewal that followed it (on time) is.
    expect(atSecond).toEqual({ leader: false, changes: 0 });
    expect(changes).toEqual([{ holder: "mi_a", leader: true, othersLeading: [] }]);
  });

  it("refuses options that could act on a lapsed lease", () => {
    expect(() => new LeaderLease({ store, holder: "mi_a", log, ttlMs: 1000, renewMs: 900, clockSkewMs: 200 })).toThrow(
      "leader lease: renew interval (900 ms) plus clock skew allowance (200 ms) must be less than its TTL (1000 ms)",
    );
  });
});
