/**
 * Host ownership (host-ownership.ts) over the store testStore() opens
 * (BERTH_TEST_STORE=sqlite|postgres), two managers as two stores on one
 * database: who reconciles a host, what a manager that lost the host may
 * still commit, and which remote commits wake whose reconciler.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import { HostOwnershipLostError } from "../errors.js";
import type { LeaseRecord } from "../domain/records.js";
import type { Committed, Store, WriteOp } from "../store/store.js";
import { hostLeaseName } from "../store/store.js";
import { newServer, sameDatabase, testStore } from "../../testing/store.js";
import { wakeForRemoteCommits } from "../reconcile/remote-commits.js";
import { DEFAULT_HOST_LEASE, fencedCommit, HostOwnership, mayReconcileHost, RENEW_BATCH } from "./host-ownership.js";

const T0 = 1_700_000_000_000;
const log = pino({ level: "silent" });
const open: Store[] = [];
afterEach(async () => {
  for (const s of open.splice(0).reverse()) await s.close();
});

async function twoManagers(): Promise<{ a: Store; b: Store }> {
  const a = await testStore();
  open.push(a);
  const b = await sameDatabase(a);
  open.push(b);
  return { a, b };
}

function ownership(store: Store, holder: string, o: { leader?: boolean; now?: () => number } = {}): HostOwnership {
  return new HostOwnership({ store, holder, log, isLeader: () => o.leader ?? false, now: o.now ?? (() => T0) });
}

/** Managers mi_a (A over store a) and mi_b (B over b); `lost` lists each host A lost, as `host:new holder`. */
async function twoOwners() {
  const { a, b } = await twoManagers();
  const A = ownership(a, "mi_a");
  const B = ownership(b, "mi_b");
  const lost: string[] = [];
  A.onLost((hostId, err) => lost.push(`${hostId}:${err.current?.holder}`));
  return { a, b, A, B, lost };
}

/**
 * `owner`'s mayReconcile, counting each server's decision: `decided` resolves
 * once `n` were made and the enqueue that follows each had its turn.
 */
function countDecisions(owner: HostOwnership, n: number): { ownership: Pick<HostOwnership, "mayReconcile">; decided: Promise<void> } {
  let count = 0;
  let resolve!: () => void;
  const decided = new Promise<void>((r) => (resolve = r));
  return {
    decided,
    ownership: {
      mayReconcile: async (hostId: string) => {
        const yes = await owner.mayReconcile(hostId);
        // The enqueue follows in the same microtask chain: setImmediate runs after it.
        if (++count === n) setImmediate(resolve);
        return yes;
      },
    },
  };
}

describe("mayReconcileHost: who reconciles a host's servers", () => {
  const lease = (holder: string, expiresAt: number): LeaseRecord => ({ name: hostLeaseName("h"), holder, epoch: 3, expiresAt });
  it.each([
    ["the owner (its stream is here)", { ownedHere: true, lease: lease("mi_a", T0 + 1), isLeader: false }, true],
    ["not the leader while another manager owns it", { ownedHere: false, lease: lease("mi_b", T0 + 1), isLeader: true }, false],
    ["not a follower while another manager owns it", { ownedHere: false, lease: lease("mi_b", T0 + 1), isLeader: false }, false],
    ["the leader once the owner's term lapsed unrenewed", { ownedHere: false, lease: lease("mi_b", T0), isLeader: true }, true],
    ["not a follower once it lapsed", { ownedHere: false, lease: lease("mi_b", T0), isLeader: false }, false],
    ["the leader for a host nobody ever took", { ownedHere: false, lease: undefined, isLeader: true }, true],
    ["not a follower for a host nobody ever took", { ownedHere: false, lease: undefined, isLeader: false }, false],
  ] as const)("%s", (_name, o, want) => {
    expect(mayReconcileHost({ holder: "mi_a", now: T0, ...o })).toBe(want);
  });
});

describe("HostOwnership", () => {
  it("the manager whose agent connected last owns the host; the other learns it at its next renewal, stops fencing for it and hears onLost", async () => {
    const { a, A, B, lost } = await twoOwners();
    expect(await A.take("h_1")).toBe(1);
    expect(await B.take("h_1")).toBe(2);
    expect(A.owns("h_1")).toBe(true); // not noticed yet
    await A.renewAll();
    expect(lost).toEqual(["h_1:mi_b"]);
    expect(A.owns("h_1")).toBe(false);
    expect(A.fence("h_1", T0)).toEqual([]);
    await B.renewAll();
    expect(B.owns("h_1")).toBe(true);
    expect(await a.getLease(hostLeaseName("h_1"))).toMatchObject({ holder: "mi_b", epoch: 2 });
  });

  it("renews many hosts a batch at a time; one taken by another manager is dropped alone, the others renewed", async () => {
    const { a, b } = await twoManagers();
    let clock = T0;
    let commits = 0;
    const counting = new Proxy(a, {
      get(target, prop) {
        if (prop === "commit") return (ops: WriteOp[]) => (commits++, target.commit(ops));
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...x: unknown[]) => unknown).bind(target) : v;
      },
    });
    const A = ownership(counting, "mi_a", { now: () => clock });
    const B = ownership(b, "mi_b", { now: () => clock });
    const lost: string[] = [];
    A.onLost((hostId, err) => lost.push(`${hostId}:${err.current?.holder}`));
    const hosts = Array.from({ length: 2 * RENEW_BATCH + 50 }, (_, i) => `h_${String(i).padStart(3, "0")}`);
    for (const h of hosts) await A.take(h);
    commits = 0;
    clock = T0 + 5_000;
    await A.renewAll();
    expect(commits).toBe(3);
    expect(await a.getLease(hostLeaseName(hosts[249]!))).toMatchObject({ holder: "mi_a", expiresAt: clock + DEFAULT_HOST_LEASE.ttlMs });

    await B.take(hosts[120]!);
    commits = 0;
    clock = T0 + 10_000;
    await A.renewAll();
    expect(lost).toEqual([`${hosts[120]}:mi_b`]);
    // The batch with the taken host was refused and done host by host; the other two went as batches.
    expect(commits).toBe(3 + RENEW_BATCH);
    for (const h of [hosts[0]!, hosts[119]!, hosts[121]!, hosts[249]!]) expect(await a.getLease(hostLeaseName(h))).toMatchObject({ holder: "mi_a", expiresAt: clock + DEFAULT_HOST_LEASE.ttlMs });
    expect(A.owns(hosts[120]!)).toBe(false);
  });

  it("a batch fenced by a lost term writes nothing; the owner's fenced batch commits", async () => {
    const { a, b, A, B } = await twoOwners();
    await A.take("h_1");
    const stale = A.fence("h_1", T0 + 1);
    await B.take("h_1");
    await expect(a.commit([...stale, { op: "meta.set", key: "decision", value: "mi_a" }])).rejects.toBeInstanceOf(HostOwnershipLostError);
    expect(await a.getMeta("decision")).toBeUndefined();
    await b.commit([...B.fence("h_1", T0 + 1), { op: "meta.set", key: "decision", value: "mi_b" }]);
    expect(await a.getMeta("decision")).toBe("mi_b");
  });

  it("fencedCommit: the owner's batch commits; taken before another manager took the host, it is refused, writes nothing and drops the host here (onLost)", async () => {
    const { a, A, B, lost } = await twoOwners();
    await A.take("h_1");
    await fencedCommit(a, A, "h_1", T0 + 1)([{ op: "meta.set", key: "decision", value: "mi_a" }]);
    expect(await a.getMeta("decision")).toBe("mi_a");
    const stale = fencedCommit(a, A, "h_1", T0 + 1);
    await B.take("h_1");
    await expect(stale([{ op: "meta.set", key: "decision", value: "late" }])).rejects.toBeInstanceOf(HostOwnershipLostError);
    expect(await a.getMeta("decision")).toBe("mi_a");
    expect(lost).toEqual(["h_1:mi_b"]);
    expect(A.owns("h_1")).toBe(false);
    // One manager (no ownership): nothing to fence, the batch commits as it is.
    await fencedCommit(a, undefined, "h_1", T0 + 1)([{ op: "meta.set", key: "decision", value: "alone" }]);
    expect(await a.getMeta("decision")).toBe("alone");
  });

  it("a term that only lapsed (the database was out longer than the TTL) and nobody took: the refused batch makes the holder renew at once, and it keeps the host", async () => {
    const { a } = await twoManagers();
    let clock = T0;
    const A = ownership(a, "mi_a", { now: () => clock });
    const lost: string[] = [];
    A.onLost((hostId) => lost.push(hostId));
    await A.take("h_1");
    clock = T0 + A.ttlMs + 1_000;
    const err = await a.commit([...A.fence("h_1", clock), { op: "meta.set", key: "decision", value: "late" }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HostOwnershipLostError);
    A.lost(err as HostOwnershipLostError);
    await vi.waitFor(async () => expect((await a.getLease(hostLeaseName("h_1")))?.expiresAt).toBe(clock + A.ttlMs));
    expect(A.owns("h_1")).toBe(true);
    expect(lost).toEqual([]);
    // The decision, taken again, commits under the renewed term.
    await a.commit([...A.fence("h_1", clock), { op: "meta.set", key: "decision", value: "again" }]);
    expect(await a.getMeta("decision")).toBe("again");
  });

  it("after the owner's stream ends (release), the leader reconciles the host, a follower does not, and the next take counts the epoch on", async () => {
    const { a, b } = await twoManagers();
    const owner = ownership(a, "mi_a");
    const leader = ownership(b, "mi_b", { leader: true });
    const follower = ownership(b, "mi_c");
    await owner.take("h_1");
    expect(await owner.mayReconcile("h_1")).toBe(true);
    expect(await leader.mayReconcile("h_1")).toBe(false);
    await owner.release("h_1");
    expect(owner.owns("h_1")).toBe(false);
    expect(await owner.mayReconcile("h_1")).toBe(false);
    expect(await leader.mayReconcile("h_1")).toBe(true);
    expect(await follower.mayReconcile("h_1")).toBe(false);
    expect(await follower.take("h_1")).toBe(2);
    expect(await leader.mayReconcile("h_1")).toBe(false);
  });

  it("stop releases every owned host", async () => {
    const { a } = await twoManagers();
    const A = ownership(a, "mi_a");
    await A.take("h_1");
    await A.take("h_2");
    await A.stop();
    expect(await a.getLease(hostLeaseName("h_1"))).toMatchObject({ holder: "mi_a", epoch: 1, expiresAt: 0 });
    expect(await a.getLease(hostLeaseName("h_2"))).toMatchObject({ expiresAt: 0 });
  });
});

describe("wakeForRemoteCommits with host ownership", () => {
  it("queues remotely written servers of hosts this manager owns, not of hosts another manager owns", async () => {
    const { a, b } = await twoManagers();
    await a.commit([
      { op: "server.insert", server: newServer({ id: "srv_mine", hostId: "h_mine", name: "mine" }) },
      { op: "server.insert", server: newServer({ id: "srv_theirs", hostId: "h_theirs", name: "theirs" }) },
    ]);
    const A = ownership(a, "mi_a");
    const B = ownership(b, "mi_b");
    await A.take("h_mine");
    await B.take("h_theirs");
    // The change feed as A hears it: a batch B committed (remote), delivered by hand so the case runs on SQLite too.
    let deliver!: (c: Committed) => void;
    const feed = { onCommit: (l: (c: Committed) => void) => ((deliver = l), () => {}), allServerIds: () => a.allServerIds(), getServer: (id: string) => a.getServer(id) };
    const queued: string[] = [];
    // Each server's decision is its own read (in any order on PostgreSQL's pool): count them.
    const { ownership: counting, decided } = countDecisions(A, 2);
    wakeForRemoteCommits(feed, { enqueue: (id) => queued.push(id) }, log, counting);
    deliver({ events: [], serverIds: new Set(["srv_theirs", "srv_mine"]), hostIds: new Set(), remote: true });
    await decided;
    expect(queued).toEqual(["srv_mine"]);
  });

  it("on a resync, queues every server of its own hosts and of hosts nobody owns when leader, none of another owner's", async () => {
    const { a, b } = await twoManagers();
    await a.commit([
      { op: "server.insert", server: newServer({ id: "srv_mine", hostId: "h_mine", name: "mine" }) },
      { op: "server.insert", server: newServer({ id: "srv_theirs", hostId: "h_theirs", name: "theirs" }) },
      { op: "server.insert", server: newServer({ id: "srv_lapsed", hostId: "h_lapsed", name: "lapsed" }) },
    ]);
    const A = ownership(a, "mi_a", { leader: true });
    await A.take("h_mine");
    await ownership(b, "mi_b").take("h_theirs");
    let deliver!: (c: Committed) => void;
    const feed = { onCommit: (l: (c: Committed) => void) => ((deliver = l), () => {}), allServerIds: () => a.allServerIds(), getServer: (id: string) => a.getServer(id) };
    const queued: string[] = [];
    const { ownership: counting, decided } = countDecisions(A, 3);
    wakeForRemoteCommits(feed, { enqueue: (id) => queued.push(id) }, log, counting);
    deliver({ events: [], serverIds: new Set(), hostIds: new Set(), remote: true, resync: true });
    await decided;
    expect(queued.sort()).toEqual(["srv_lapsed", "srv_mine"]);
  });
});
