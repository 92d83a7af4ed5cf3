/**
 * The store contract's host ownership (store.ts host.take / host.renew /
 * host.release / host.checkOwner) on the engine testStore() opens
 * (BERTH_TEST_STORE=sqlite|postgres): a take always wins and counts the
 * epoch on, a lost term cannot be renewed or used as a fence, and a fenced
 * batch of a manager that lost the host writes nothing. Time is the caller's
 * `at`, so no case waits.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ConflictError, HostOwnershipLostError } from "../errors.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import { hostLeaseName, type Store, type WriteOp } from "./store.js";

const T0 = 1_700_000_000_000;
const TTL = 10_000;
const H = "h_owned";
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

const take = (holder: string, at = T0, hostId = H): WriteOp => ({ op: "host.take", hostId, holder, ttlMs: TTL, at });
const renew = (holder: string, epoch: number, at: number): WriteOp => ({ op: "host.renew", hostId: H, holder, epoch, ttlMs: TTL, at });
const release = (holder: string, epoch: number): WriteOp => ({ op: "host.release", hostId: H, holder, epoch });
const check = (holder: string, epoch: number, at = T0 + 1): WriteOp => ({ op: "host.checkOwner", hostId: H, holder, epoch, at });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("host ownership", () => {
  it("the first take holds the host at epoch 1 and reports it; a take by another manager wins at once, unexpired or not, at epoch + 1", async () => {
    const a = await store.commit([take("mi_a")]);
    expect(a.leaseEpochs?.get(hostLeaseName(H))).toBe(1);
    expect(await store.getLease(hostLeaseName(H))).toEqual({ name: hostLeaseName(H), holder: "mi_a", epoch: 1, expiresAt: T0 + TTL });
    // The agent chose mi_b while mi_a's term runs: mi_b takes it anyway.
    const b = await store.commit([take("mi_b", T0 + 1)]);
    expect(b.leaseEpochs?.get(hostLeaseName(H))).toBe(2);
    expect(await store.getLease(hostLeaseName(H))).toEqual({ name: hostLeaseName(H), holder: "mi_b", epoch: 2, expiresAt: T0 + 1 + TTL });
    // The same manager taking again (its agent reconnected) is a new term too.
    expect((await store.commit([take("mi_b", T0 + 2)])).leaseEpochs?.get(hostLeaseName(H))).toBe(3);
  });

  it("hosts are independent, and a batch with no take reports no epochs", async () => {
    await store.commit([take("mi_a", T0, "h_1")]);
    await store.commit([take("mi_b", T0, "h_2")]);
    expect(await store.getLease(hostLeaseName("h_1"))).toMatchObject({ holder: "mi_a", epoch: 1 });
    expect(await store.getLease(hostLeaseName("h_2"))).toMatchObject({ holder: "mi_b", epoch: 1 });
    expect((await store.commit([{ op: "meta.set", key: "k", value: "v" }])).leaseEpochs?.size ?? 0).toBe(0);
  });

  it("the owner renews its term (even after it lapsed, while nobody took it); a renewal of a lost term is refused with a ConflictError naming the new owner", async () => {
    await store.commit([take("mi_a")]);
    await store.commit([renew("mi_a", 1, T0 + 3000)]);
    expect(await store.getLease(hostLeaseName(H))).toMatchObject({ holder: "mi_a", epoch: 1, expiresAt: T0 + 3000 + TTL });
    await store.commit([renew("mi_a", 1, T0 + 60_000)]);
    expect(await store.getLease(hostLeaseName(H))).toMatchObject({ holder: "mi_a", epoch: 1, expiresAt: T0 + 60_000 + TTL });

    await store.commit([take("mi_b", T0 + 60_001)]);
    const err = await rejection(store.commit([renew("mi_a", 1, T0 + 60_002)]));
    expect(err).toBeInstanceOf(HostOwnershipLostError);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).code).toBe(Code.Aborted);
    expect(err).toMatchObject({ hostId: H, holder: "mi_a", epoch: 1, current: { holder: "mi_b", epoch: 2 } });
    expect((err as Error).message).toContain(`manager mi_a no longer owns host ${H} at epoch 1 (now mi_b at epoch 2)`);
    expect(await store.getLease(hostLeaseName(H))).toMatchObject({ holder: "mi_b", epoch: 2, expiresAt: T0 + 60_001 + TTL });
  });

  it("a renewal of a host nobody ever took is refused", async () => {
    await expect(store.commit([renew("mi_a", 1, T0)])).rejects.toMatchObject({ hostId: H, current: undefined });
    expect(await store.getLease(hostLeaseName(H))).toBeUndefined();
  });

  it("release ends only the holder's own term and keeps the epoch: the next take counts on, so agents never see an epoch go back", async () => {
    await store.commit([take("mi_a")]);
    await store.commit([take("mi_b", T0 + 1)]);
    await store.commit([release("mi_a", 1)]); // an old term: nothing happens
    expect(await store.getLease(hostLeaseName(H))).toMatchObject({ holder: "mi_b", epoch: 2, expiresAt: T0 + 1 + TTL });
    await store.commit([release("mi_b", 2)]);
    expect(await store.getLease(hostLeaseName(H))).toMatchObject({ holder: "mi_b", epoch: 2, expiresAt: 0 });
    await expect(store.commit([check("mi_b", 2)])).rejects.toBeInstanceOf(HostOwnershipLostError);
    expect((await store.commit([take("mi_c", T0 + 2)])).leaseEpochs?.get(hostLeaseName(H))).toBe(3);
  });

  it("checkOwner passes for the live term only: not another holder, not an older epoch, not once expired", async () => {
    await store.commit([take("mi_a")]);
    await store.commit([check("mi_a", 1, T0 + TTL - 1)]);
    await expect(store.commit([check("mi_a", 1, T0 + TTL)])).rejects.toMatchObject({ hostId: H, holder: "mi_a", epoch: 1, current: { holder: "mi_a", epoch: 1 } });
    await expect(store.commit([check("mi_b", 1)])).rejects.toBeInstanceOf(HostOwnershipLostError);
    await store.commit([take("mi_a", T0 + 1)]);
    await expect(store.commit([check("mi_a", 1)])).rejects.toMatchObject({ current: { holder: "mi_a", epoch: 2 } });
    await store.commit([check("mi_a", 2)]);
  });

  it("a manager that lost the host has its fenced batch refused and writes nothing of it", async () => {
    await store.commit([{ op: "host.insert", id: H, name: "box", secretHash: "x", createdAt: T0 }]);
    await store.commit([take("mi_a")]);
    await store.commit([take("mi_b", T0 + 1)]);
    const before = await store.lastEventId();
    const err = await rejection(
      store.commit([
        check("mi_a", 1, T0 + 2),
        { op: "meta.set", key: "decided_by", value: "mi_a" },
        { op: "host.heartbeat", id: H, at: T0 + 2, facts: {} },
        { op: "event.append", event: { type: "server.started", serverId: "s_1", hostId: H, message: "decided by a manager that lost the host" }, at: T0 + 2 },
      ]),
    );
    expect(err).toBeInstanceOf(HostOwnershipLostError);
    expect(await store.getMeta("decided_by")).toBeUndefined();
    expect(await store.lastEventId()).toBe(before);
    // The owner's fenced batch goes through.
    await store.commit([check("mi_b", 2, T0 + 2), { op: "meta.set", key: "decided_by", value: "mi_b" }]);
    expect(await store.getMeta("decided_by")).toBe("mi_b");
  });

  it("two managers taking one host at once (its agent flapping between them): both succeed with distinct epochs, and the stored term is the later one's", async () => {
    // A second store on the same database: on PostgreSQL its own pool, as another manager's.
    const other = await sameDatabase(store);
    try {
      for (let round = 0; round < 20; round++) {
        const hostId = `h_race_${round}`;
        if (round % 2) await store.commit([take("mi_old", T0, hostId)]);
        const [a, b] = await Promise.all([store.commit([take("mi_a", T0 + 1, hostId)]), other.commit([take("mi_b", T0 + 1, hostId)])]);
        const ea = a.leaseEpochs?.get(hostLeaseName(hostId));
        const eb = b.leaseEpochs?.get(hostLeaseName(hostId));
        const base = round % 2 ? 1 : 0;
        expect([ea, eb].sort(), `round ${round}`).toEqual([base + 1, base + 2]);
        const lease = await store.getLease(hostLeaseName(hostId));
        expect(lease).toMatchObject({ holder: ea! > eb! ? "mi_a" : "mi_b", epoch: base + 2 });
      }
    } finally {
      await other.close();
    }
  });

  it("a fenced batch racing a take by another manager: either the batch commits first or it is refused, never both the take and a stale decision after it", async () => {
    const other = await sameDatabase(store);
    try {
      for (let round = 0; round < 20; round++) {
        const key = `decided_${round}`;
        const e = (await store.commit([take("mi_a")])).leaseEpochs!.get(hostLeaseName(H))!;
        // Each batch appends an event: event ids are commit order, so they say which committed first.
        const event = (message: string): WriteOp => ({ op: "event.append", event: { type: "test.ownership", hostId: H, message }, at: T0 + 1 });
        const [fenced, taken] = await Promise.allSettled([
          store.commit([check("mi_a", e), { op: "meta.set", key, value: "mi_a" }, event("fenced")]),
          other.commit([take("mi_b", T0 + 1), event("take")]),
        ]);
        expect(taken.status).toBe("fulfilled");
        const lease = await store.getLease(hostLeaseName(H));
        expect(lease).toMatchObject({ holder: "mi_b", epoch: e + 1 });
        if (fenced.status === "rejected") {
          expect(fenced.reason).toBeInstanceOf(HostOwnershipLostError);
          expect(await store.getMeta(key)).toBeUndefined();
        } else {
          expect(await store.getMeta(key)).toBe("mi_a");
          expect(fenced.value.events[0]!.id).toBeLessThan((taken as PromiseFulfilledResult<{ events: readonly { id: number }[] }>).value.events[0]!.id);
        }
      }
    } finally {
      await other.close();
    }
  });
  it("who is connected where: an online host with a live term, by holder; its term lapsing (its manager died) makes it unowned, and host.offlineUnowned marks only such hosts offline", async () => {
    const hosts = ["h_1", "h_2", "h_3"];
    await store.commit(hosts.flatMap((id, i): WriteOp[] => [
      { op: "host.insert", id, name: id, secretHash: `s${i}`, createdAt: 1 },
      { op: "host.connected", id, facts: {}, at: T0 },
    ]));
    await store.commit([take("mi_a", T0, "h_1"), take("mi_b", T0 + 5000, "h_2")]);
    // h_3: online in its row but nobody holds it (a manager that died before taking it, or a stale row).
    expect(await store.liveHostOwners(T0 + 1)).toEqual(new Map([["h_1", "mi_a"], ["h_2", "mi_b"]]));
    // mi_a died: its term lapses at T0 + TTL, mi_b's runs to T0 + 5000 + TTL.
    expect(await store.liveHostOwners(T0 + TTL)).toEqual(new Map([["h_2", "mi_b"]]));
    const heard: string[][] = [];
    const off = store.onCommit((c) => heard.push([...c.hostIds].sort()));
    await store.commit([{ op: "host.offlineUnowned", at: T0 + TTL }]);
    off();
    expect(heard).toEqual([["h_1", "h_3"]]);
    expect((await store.listHosts()).map((h) => [h.id, h.online])).toEqual([["h_1", false], ["h_2", true], ["h_3", false]]);
    // Offline hosts are not connected anywhere, whatever their term.
    expect(await store.liveHostOwners(T0 + 1)).toEqual(new Map([["h_2", "mi_b"]]));
  });
});

