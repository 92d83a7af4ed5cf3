import { describe, expect, it } from "vitest";
import type { ContainerRuntime } from "./container-runtime.js";
import { LockedRuntime } from "./locked-runtime.js";

/** A fake engine whose stop/start/kill take as long as the test says and log when they run. */
function fakeEngine() {
  const log: string[] = [];
  const stops = new Map<string, () => void>();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const engine = {
    log,
    async start(id: string) {
      log.push(`start ${id} begin`);
      await sleep(20);
      log.push(`start ${id} end`);
    },
    /** A stop that hangs until the container is killed (a hung process). */
    stop(id: string) {
      log.push(`stop ${id} begin`);
      return new Promise<void>((resolve) => {
        stops.set(id, () => {
          stops.delete(id);
          log.push(`stop ${id} end`);
          resolve();
        });
      });
    },
    async kill(id: string) {
      log.push(`kill ${id}`);
      stops.get(id)?.();
    },
    async pause(id: string) {
      log.push(`pause ${id}`);
    },
    async remove(id: string) {
      log.push(`remove ${id}`);
      stops.get(id)?.();
    },
    async create(spec: { name: string }) {
      log.push(`create ${spec.name} begin`);
      await sleep(10);
      log.push(`create ${spec.name} end`);
      return `id-${spec.name}`;
    },
  };
  return engine as unknown as ContainerRuntime & { log: string[] };
}

describe("LockedRuntime: one operation per container, kill bypasses", () => {
  it("runs operations on one container one after another, in order", async () => {
    const engine = fakeEngine();
    const rt = new LockedRuntime(engine);
    await Promise.all([rt.start("a"), rt.start("a"), rt.pause("a")]);
    expect(engine.log).toEqual(["start a begin", "start a end", "start a begin", "start a end", "pause a"]);
    expect(rt.busy).toEqual([]);
  });

  it("does not make different containers wait for each other", async () => {
    const engine = fakeEngine();
    const rt = new LockedRuntime(engine);
    await Promise.all([rt.start("a"), rt.start("b")]);
    expect(engine.log.slice(0, 2).sort()).toEqual(["start a begin", "start b begin"]);
  });

  it("lets a kill overtake a stop stuck on a hung container; queued work runs after", async () => {
    const engine = fakeEngine();
    const rt = new LockedRuntime(engine, { stopGraceMs: 60_000 });
    const stop = rt.stop("a", 1000);
    const removeAfter = rt.remove("a");
    await new Promise((r) => setTimeout(r, 20));
    expect(engine.log).toEqual(["stop a begin"]);
    expect(rt.busy).toEqual(["a"]);
    await rt.kill("a"); // not queued behind the stop
    await stop;
    await removeAfter;
    expect(engine.log).toEqual(["stop a begin", "kill a", "stop a end", "remove a"]);
  });

  it("escalates a stop that outlives its SIGKILL deadline to a kill by itself", async () => {
    const engine = fakeEngine();
    const escalated: string[] = [];
    const rt = new LockedRuntime(engine, { stopGraceMs: 30, onEscalate: (id) => escalated.push(id) });
    await rt.stop("a", 0);
    expect(engine.log).toEqual(["stop a begin", "kill a", "stop a end"]);
    expect(escalated).toEqual(["a"]);
  });

  it("keeps the queue going after a failed operation", async () => {
    const engine = fakeEngine();
    (engine as unknown as { start: () => Promise<void> }).start = async () => {
      throw new Error("boom");
    };
    const rt = new LockedRuntime(engine);
    await expect(rt.start("a")).rejects.toThrow("boom");
    await rt.pause("a");
    expect(engine.log).toEqual(["pause a"]);
  });

  it("serializes creates of one container name", async () => {
    const engine = fakeEngine();
    const rt = new LockedRuntime(engine);
    const spec = { name: "web", image: "i", command: [], env: {}, labels: {}, ports: [], dataDir: "/d", mountPath: "/data" };
    await Promise.all([rt.create(spec), rt.create(spec)]);
    expect(engine.log).toEqual(["create web begin", "create web end", "create web begin", "create web end"]);
  });
});
