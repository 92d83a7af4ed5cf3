import { describe, expect, it } from "vitest";
import { KeyedQueue } from "./keyed-queue.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("KeyedQueue: one task per key at a time", () => {
  it("runs the tasks of one key one after another, in the order queued", async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    const task = (name: string, ms: number) => async () => {
      log.push(`${name} begin`);
      await sleep(ms);
      log.push(`${name} end`);
      return name;
    };
    const results = await Promise.all([q.run("a", task("1", 15)), q.run("a", task("2", 1)), q.run("a", task("3", 5))]);
    expect(results).toEqual(["1", "2", "3"]);
    expect(log).toEqual(["1 begin", "1 end", "2 begin", "2 end", "3 begin", "3 end"]);
  });

  it("does not make different keys wait for each other", async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    let release!: () => void;
    const held = q.run("a", () => new Promise<void>((r) => (release = r)));
    await q.run("b", async () => log.push("b ran"));
    expect(log).toEqual(["b ran"]);
    await sleep(0);
    expect(q.keys).toEqual(["a"]);
    release();
    await held;
  });

  it("rejects only the failed task's caller; the next task of its key still runs", async () => {
    const q = new KeyedQueue();
    const failed = q.run("a", async () => {
      throw new Error("boom");
    });
    const next = q.run("a", async () => "after");
    await expect(failed).rejects.toThrow("boom");
    await expect(next).resolves.toBe("after");
  });

  it("forgets a key once its last task has settled", async () => {
    const q = new KeyedQueue();
    const first = q.run("a", () => sleep(5));
    const second = q.run("a", async () => {
      throw new Error("boom");
    });
    expect(q.keys).toEqual(["a"]);
    await first;
    await second.catch(() => undefined);
    await sleep(0);
    expect(q.keys).toEqual([]);
  });
});
