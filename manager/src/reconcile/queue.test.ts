import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TurnBudget } from "../turns.js";
import { WorkQueue, type QueueOptions } from "./queue.js";

interface Recorder {
  q: WorkQueue;
  calls: { key: string; cause: string; at: number }[];
  errors: { key: string; retryInMs: number; at: number }[];
}

let queues: WorkQueue[] = [];
afterEach(() => {
  for (const q of queues) q.stop();
  queues = [];
});

function make(
  process: (key: string, cause: string, calls: Recorder["calls"]) => ReturnType<QueueOptions["process"]> = () => {},
  opts: Partial<QueueOptions> = {},
): Recorder {
  const calls: Recorder["calls"] = [];
  const errors: Recorder["errors"] = [];
  const q = new WorkQueue({
    process: (key, cause) => {
      calls.push({ key, cause, at: Date.now() });
      return process(key, cause, calls);
    },
    onError: (key, _err, retryInMs) => errors.push({ key, retryInMs, at: Date.now() }),
    ...opts,
  });
  queues.push(q);
  return { q, calls, errors };
}

/** Lets pending setImmediate callbacks (the queue's drains) run. */
async function drainReal(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

describe("WorkQueue (real timers)", () => {
  it("processes a key added 100 times before it drains once, with the latest cause", async () => {
    const r = make();
    for (let i = 0; i < 100; i++) r.q.add("srv_a", `cause ${i}`);
    expect(r.q.length).toBe(1);
    expect(r.calls).toHaveLength(0); // not synchronous
    await drainReal();
    expect(r.calls.map((c) => [c.key, c.cause])).toEqual([["srv_a", "cause 99"]]);
    expect(r.q.length).toBe(0);
  });

  it("processes distinct keys once each", async () => {
    const r = make();
    for (let i = 0; i < 10; i++) for (const k of ["a", "b", "c"]) r.q.add(k, "x");
    await drainReal();
    expect(r.calls.map((c) => c.key).sort()).toEqual(["a", "b", "c"]);
  });

  it("processes a key again when it is added while being processed, never concurrently", async () => {
    let active = 0;
    let maxActive = 0;
    const r = make((key, _cause, calls) => {
      active++;
      maxActive = Math.max(maxActive, active);
      if (calls.length === 1) r.q.add(key, "changed during processing");
      active--;
    });
    r.q.add("srv_a", "first");
    await drainReal();
    expect(r.calls.map((c) => c.cause)).toEqual(["first", "changed during processing"]);
    expect(maxActive).toBe(1);
    await drainReal();
    expect(r.calls).toHaveLength(2);
  });

  it("runs each key in its slot of the turn's budget, and still processes them all in order", async () => {
    // Each run costs 4 ms of a 10 ms budget: the turn's clock reads 0, 4 and 8 when the first
    // three ask, and 12 when the next one does: three runs per turn.
    let now = 0;
    const budget = new TurnBudget(10, () => now);
    const r = make(() => void (now += 4), { budget, concurrency: 8 });
    for (let i = 0; i < 10; i++) r.q.add(`k${i}`, "x");
    const perTurn: number[] = [];
    while (r.calls.length < 10 && perTurn.length < 20) {
      const before = r.calls.length;
      await new Promise<void>((res) => setImmediate(res));
      perTurn.push(r.calls.length - before);
    }
    expect(Math.max(...perTurn)).toBe(3);
    expect(r.calls.map((c) => c.key)).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}`));
  });

  it("a key added again while its run waits for a slot of the turn merges into that run", async () => {
    const r = make();
    r.q.add("srv_a", "first");
    // The queue's drain has asked for a slot; the key has not started.
    await new Promise<void>((res) => setImmediate(res));
    expect(r.calls).toHaveLength(0);
    r.q.add("srv_a", "second");
    await drainReal();
    expect(r.calls.map((c) => c.cause)).toEqual(["second"]);
  });

  it("stop() drops pending work and ignores later adds", async () => {
    const r = make();
    r.q.add("a", "x");
    r.q.addAfter("b", 1, "x");
    r.q.stop();
    r.q.add("c", "x");
    await new Promise((res) => setTimeout(res, 20));
    expect(r.calls).toHaveLength(0);
    expect(r.q.length).toBe(0);
  });
});

/**
 * Advances fake time by `ms`, then lets the queue's drain run. Only setTimeout and
 * Date are faked: a faked setImmediate queued from a firing timer runs 1 ms late,
 * which would blur the exact delays asserted here.
 */
async function tick(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await drainReal();
}

describe("WorkQueue (fake timers)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ["setTimeout", "clearTimeout", "Date"] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("backs off per key on errors with growing delays, capped", async () => {
    const r = make(
      () => {
        throw new Error("boom");
      },
      { baseBackoffMs: 100, maxBackoffMs: 500 },
    );
    r.q.add("srv_a", "x");
    await tick(0);
    expect(r.calls).toHaveLength(1);
    expect(r.errors.map((e) => e.retryInMs)).toEqual([100]);
    // Nothing before the backoff elapses.
    await tick(99);
    expect(r.calls).toHaveLength(1);
    await tick(1);
    expect(r.calls).toHaveLength(2);
    for (const ms of [200, 400, 500, 500]) await tick(ms);
    expect(r.errors.map((e) => e.retryInMs)).toEqual([100, 200, 400, 500, 500, 500]);
    // Each retry ran after the previous delay.
    const gaps = r.calls.slice(1).map((c, i) => c.at - r.calls[i]!.at);
    expect(gaps).toEqual([100, 200, 400, 500, 500]);
    expect(r.calls[1]!.cause).toBe("retry after error (1)");
    expect(r.calls[2]!.cause).toBe("retry after error (2)");
  });

  it("resets the backoff after a success, and keeps it per key", async () => {
    let fail = 2;
    const r = make(
      (key) => {
        if (key === "bad") throw new Error("always");
        if (fail-- > 0) throw new Error("transient");
      },
      { baseBackoffMs: 10 },
    );
    r.q.add("flaky", "x");
    r.q.add("bad", "x");
    await tick(0);
    await tick(10);
    await tick(20); // flaky succeeds on the third try
    const flaky = r.errors.filter((e) => e.key === "flaky").map((e) => e.retryInMs);
    expect(flaky).toEqual([10, 20]);
    const bad = r.errors.filter((e) => e.key === "bad").map((e) => e.retryInMs);
    expect(bad).toEqual([10, 20, 40]);
    // A new failure of "flaky" starts from the base delay again.
    fail = 1;
    r.q.add("flaky", "again");
    await tick(0);
    expect(r.errors.filter((e) => e.key === "flaky").map((e) => e.retryInMs)).toEqual([10, 20, 10]);
  });

  it("addAfter keeps the earliest schedule (earlier replaces later)", async () => {
    const r = make();
    r.q.addAfter("srv_a", 1_000, "late");
    r.q.addAfter("srv_a", 100, "early");
    await tick(99);
    expect(r.calls).toHaveLength(0);
    await tick(1);
    expect(r.calls.map((c) => c.cause)).toEqual(["early"]);
    await tick(5_000);
    expect(r.calls).toHaveLength(1);
  });

  it("addAfter keeps the earliest schedule (later is ignored)", async () => {
    const r = make();
    r.q.addAfter("srv_a", 100, "early");
    r.q.addAfter("srv_a", 1_000, "late");
    await tick(100);
    expect(r.calls.map((c) => c.cause)).toEqual(["early"]);
    await tick(5_000);
    expect(r.calls).toHaveLength(1);
  });

  it("a returned requeueAfterMs schedules the key again with cause 'deadline'", async () => {
    let n = 0;
    const r = make(() => (n++ === 0 ? { requeueAfterMs: 250 } : undefined));
    r.q.add("srv_a", "created");
    await tick(0);
    expect(r.calls).toHaveLength(1);
    await tick(249);
    expect(r.calls).toHaveLength(1);
    await tick(1);
    expect(r.calls.map((c) => c.cause)).toEqual(["created", "deadline"]);
    await tick(10_000);
    expect(r.calls).toHaveLength(2);
  });

  it("stop() cancels scheduled runs", async () => {
    const r = make();
    r.q.addAfter("srv_a", 100, "x");
    r.q.stop();
    await tick(1_000);
    expect(r.calls).toHaveLength(0);
  });
});

/** A promise the test settles by hand: a store call still in flight. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("WorkQueue (asynchronous processing)", () => {
  it.each([
    { concurrency: 1, keys: 5 },
    { concurrency: 3, keys: 10 },
    { concurrency: 8, keys: 40 },
  ])("runs at most $concurrency keys at once ($keys queued) and all of them in the end", async ({ concurrency, keys }) => {
    let active = 0;
    let maxActive = 0;
    const gates: (() => void)[] = [];
    const r = make(
      async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise<void>((res) => gates.push(res));
        active--;
      },
      { concurrency },
    );
    for (let i = 0; i < keys; i++) r.q.add(`k${i}`, "x");
    await drainReal();
    expect(active).toBe(concurrency);
    expect(r.q.active).toBe(concurrency);
    expect(r.q.length).toBe(keys - concurrency);
    // Open the gates one by one: each finished run lets exactly one more start.
    while (gates.length > 0) {
      gates.shift()!();
      await drainReal();
      expect(active).toBeLessThanOrEqual(concurrency);
    }
    await r.q.idle();
    expect(maxActive).toBe(concurrency);
    expect(r.calls.map((c) => c.key).sort()).toEqual(Array.from({ length: keys }, (_, i) => `k${i}`).sort());
  });

  it("a key added while it is being processed waits for that run, then runs again with the latest cause", async () => {
    const first = deferred();
    let active = 0;
    let maxActive = 0;
    const r = make(async (_key, _cause, calls) => {
      active++;
      maxActive = Math.max(maxActive, active);
      if (calls.length === 1) await first.promise;
      active--;
    });
    r.q.add("srv_a", "created");
    await drainReal();
    expect(r.calls.map((c) => c.cause)).toEqual(["created"]);
    // Changed twice while the first run is between its reads and its write.
    r.q.add("srv_a", "spec changed");
    r.q.add("srv_a", "observation changed");
    await drainReal();
    expect(r.calls).toHaveLength(1);
    expect(r.q.length).toBe(1);
    first.resolve();
    await r.q.idle();
    expect(r.calls.map((c) => c.cause)).toEqual(["created", "observation changed"]);
    expect(maxActive).toBe(1);
  });

  it("other keys keep running while one key's run is slow", async () => {
    const slow = deferred();
    const r = make(async (key) => {
      if (key === "slow") await slow.promise;
    });
    r.q.add("slow", "x");
    await drainReal();
    for (const k of ["a", "b", "c"]) r.q.add(k, "x");
    await drainReal();
    expect(r.calls.map((c) => c.key)).toEqual(["slow", "a", "b", "c"]);
    expect(r.q.active).toBe(1);
    slow.resolve();
    await r.q.idle();
    expect(r.q.active).toBe(0);
  });

  it("addAndWait during a run resolves after the next run, not the one in progress", async () => {
    const first = deferred();
    const r = make(async (_key, _cause, calls) => {
      if (calls.length === 1) await first.promise;
    });
    r.q.add("srv_a", "resync");
    await drainReal();
    let resolved = false;
    const waited = r.q.addAndWait("srv_a", "started by an API call").then(() => {
      resolved = true;
    });
    first.resolve();
    await drainReal();
    // The run in progress had read the server before the API call changed it.
    expect(r.calls.map((c) => c.cause)).toEqual(["resync", "started by an API call"]);
    await waited;
    expect(resolved).toBe(true);
  });

  it("a rejected run backs off like a thrown one, per key", async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ["setTimeout", "clearTimeout", "Date"] });
    try {
      const r = make(async (key) => {
        await Promise.resolve();
        if (key === "bad") throw new Error("database unavailable");
      }, { baseBackoffMs: 100 });
      r.q.add("bad", "x");
      r.q.add("good", "x");
      await tick(0);
      expect(r.errors.map((e) => [e.key, e.retryInMs])).toEqual([["bad", 100]]);
      await tick(99);
      expect(r.calls.filter((c) => c.key === "bad")).toHaveLength(1);
      await tick(1);
      expect(r.calls.filter((c) => c.key === "bad").map((c) => c.cause)).toEqual(["x", "retry after error (1)"]);
      expect(r.errors.map((e) => e.retryInMs)).toEqual([100, 200]);
      expect(r.calls.filter((c) => c.key === "good")).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it("stop() resolves once the runs in progress are over, and nothing starts after", async () => {
    const slow = deferred();
    const r = make(async (key) => {
      if (key === "a") await slow.promise;
    }, { concurrency: 1 });
    r.q.add("a", "x");
    await drainReal();
    r.q.add("b", "x");
    let stopped = false;
    const done = r.q.stop().then(() => {
      stopped = true;
    });
    await drainReal();
    expect(stopped).toBe(false);
    slow.resolve();
    await done;
    await drainReal();
    expect(r.calls.map((c) => c.key)).toEqual(["a"]);
  });
});

describe("WorkQueue.addAndWait", () => {
  it("resolves after the key's run; a failed run resolves too and is retried with backoff", async () => {
    let fail = true;
    const r = make(() => {
      if (fail) {
        fail = false;
        throw new Error("database busy");
      }
    }, { baseBackoffMs: 30 });
    await r.q.addAndWait("srv_a", "started by an API call");
    expect(r.calls.map((c) => c.cause)).toEqual(["started by an API call"]);
    expect(r.errors).toHaveLength(1);
    await new Promise((res) => setTimeout(res, 80));
    expect(r.calls.map((c) => c.cause)).toEqual(["started by an API call", "retry after error (1)"]);
  });

  it("several callers awaiting one key share its next run; a stopped queue resolves at once", async () => {
    const r = make();
    await Promise.all([r.q.addAndWait("k", "a"), r.q.addAndWait("k", "b")]);
    expect(r.calls).toHaveLength(1);
    r.q.stop();
    await r.q.addAndWait("k", "after stop");
    expect(r.calls).toHaveLength(1);
  });
});
