import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, DataPolicy } from "@berth/proto/berth/v1/agent_pb.js";
import { DataRoot } from "../src/data/data-root.js";
import { Executor } from "../src/executor.js";
import type { CreateContainerSpec, RuntimeEvent } from "../src/runtime/container-runtime.js";
import { SimRuntime } from "./sim-runtime.js";

const FAST = { create: 1, start: 1, stop: 1, kill: 1, remove: 1, pause: 1, unpause: 1, inspect: 0, list: 0, pull: 1 };

function spec(name: string, serverId = "srv_aaaaaaaaaaaa"): CreateContainerSpec {
  return { name, image: "sim/app:1", command: [], env: {}, labels: { "berth.server": serverId }, ports: [], dataDir: "/data/x", mountPath: "/data" };
}

/** Subscribes and collects "action" per event. */
async function recorder(rt: SimRuntime) {
  const events: RuntimeEvent[] = [];
  const ac = new AbortController();
  const { closed } = await rt.subscribe((e) => events.push(e), ac.signal);
  const settle = () => new Promise((r) => setImmediate(r));
  return { events, actions: () => events.map((e) => e.action), ac, closed, settle };
}

describe("SimRuntime: an in-memory engine for load tests", () => {
  it("emits Docker's events in Docker's order for create, start, stop and rm -f", async () => {
    const rt = new SimRuntime({ latencies: FAST });
    const r = await recorder(rt);
    const id = await rt.create(spec("a"));
    await rt.start(id);
    await rt.stop(id, 10);
    await r.settle();
    expect(r.actions()).toEqual(["create", "start", "kill", "die", "stop"]);
    expect((await rt.inspect(id))?.state).toBe("exited");
    expect((await rt.inspect(id))?.exitCode).toBe(143);

    await rt.start(id);
    await rt.remove(id);
    await r.settle();
    expect(r.actions().slice(5)).toEqual(["start", "kill", "die", "destroy"]);
    expect(await rt.inspect(id)).toBeUndefined();
    expect(r.events.at(-1)?.labels["berth.server"]).toBe("srv_aaaaaaaaaaaa");
  });

  it("takes its configured latency per call", async () => {
    const rt = new SimRuntime({ latencies: { create: 30, start: 50 } });
    const t0 = performance.now();
    const id = await rt.create(spec("a"));
    const t1 = performance.now();
    await rt.start(id);
    const t2 = performance.now();
    expect(t1 - t0).toBeGreaterThanOrEqual(25);
    expect(t2 - t1).toBeGreaterThanOrEqual(45);
  });

  it("refuses a duplicate name and lists only berth's containers, by server", async () => {
    const rt = new SimRuntime({ latencies: FAST });
    await rt.create(spec("a", "srv_aaaaaaaaaaaa"));
    await rt.create(spec("b", "srv_bbbbbbbbbbbb"));
    rt.seed({ name: "not-berth", image: "x", labels: {} });
    await expect(rt.create(spec("a"))).rejects.toMatchObject({ reason: "CreateFailed" });
    expect((await rt.list()).map((c) => c.name).sort()).toEqual(["a", "b"]);
    expect((await rt.list("srv_bbbbbbbbbbbb")).map((c) => c.name)).toEqual(["b"]);
  });

  it("simulates what happens outside berth: an exit, an operator's docker stop, a broken engine", async () => {
    const rt = new SimRuntime({ latencies: FAST });
    const r = await recorder(rt);
    const id = rt.seed({ name: "a", image: "x", labels: { "berth.server": "srv_aaaaaaaaaaaa" } });
    rt.simulateExit(id, 3);
    rt.simulateExit(id, 4);
    await r.settle();
    expect(r.actions()).toEqual(["die", "die"]);
    // Like Docker's, a die event's attributes carry the exit code.
    expect(r.events.map((e) => e.labels.exitCode)).toEqual(["3", "4"]);
    expect((await rt.inspect(id))?.exitCode).toBe(4);

    await rt.start(id);
    rt.simulateExternalStop(id);
    await r.settle();
    expect(r.actions().slice(2)).toEqual(["start", "kill", "die", "stop"]);

    rt.setReachable(false);
    await expect(r.closed).rejects.toThrow(/went away/);
    await expect(rt.list()).rejects.toMatchObject({ reason: "DockerUnreachable" });
    expect(await rt.acceptsConnections()).toBe(false);
  });

  it("serves the agent's executor: ENSURE_RUNNING creates and starts a labelled container", async () => {
    const root = await mkdtemp(join(tmpdir(), "berth-sim-"));
    try {
      const data = new DataRoot(root);
      await data.init();
      const rt = new SimRuntime({ latencies: FAST, images: [] });
      const executor = new Executor(rt, data, pino({ level: "silent" }));
      const cmd = create(CommandSchema, {
        id: "cmd_1",
        serverId: "srv_aaaaaaaaaaaa",
        kind: CommandKind.ENSURE_RUNNING,
        dataPolicy: DataPolicy.CREATE,
        container: { name: "berth-a", image: "sim/app:1", specHash: "h1", labels: { "berth.server": "srv_aaaaaaaaaaaa", "berth.spec-hash": "h1" } },
      });
      const result = await executor.execute(cmd);
      expect(result.success).toBe(true);
      expect(result.container?.state).toBe("running");
      expect(result.data?.exists).toBe(true);
      // The image was missing, so it was pulled first.
      expect(await rt.imageExists("sim/app:1")).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
