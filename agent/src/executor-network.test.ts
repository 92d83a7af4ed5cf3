import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, DataPolicy } from "@berth/proto/berth/v1/agent_pb.js";
import { DataRoot } from "./data/data-root.js";
import { Executor } from "./executor.js";
import { SimRuntime } from "../testing/sim-runtime.js";

const FAST = { create: 1, start: 1, stop: 1, kill: 1, remove: 1, pause: 1, unpause: 1, inspect: 0, list: 0, pull: 1 };
const MGR = "mgr_mine";
const NET = "berth-alpha-0123abcd";

describe("Executor: project networks (on a simulated engine)", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function setup() {
    root = await mkdtemp(join(tmpdir(), "berth-exec-net-"));
    const data = new DataRoot(root);
    await data.init();
    const rt = new SimRuntime({ latencies: FAST, images: ["sim/app:1"] });
    const executor = new Executor(rt, data, pino({ level: "silent" }), () => {}, { managerId: () => MGR, now: () => Date.now() });
    let n = 0;
    const run = (serverId: string, name: string, network = NET, project = "alpha") =>
      executor.execute(
        create(CommandSchema, {
          id: `cmd_${++n}`,
          serverId,
          kind: CommandKind.ENSURE_RUNNING,
          dataPolicy: DataPolicy.CREATE,
          container: {
            name: `berth-${name}`,
            image: "sim/app:1",
            specHash: "h1",
            labels: { "berth.server": serverId, "berth.spec-hash": "h1", "berth.manager": MGR },
            network,
            project,
            networkAliases: [name, serverId],
          },
        }),
      );
    const remove = (serverId: string) => executor.execute(create(CommandSchema, { id: `cmd_${++n}`, serverId, kind: CommandKind.ENSURE_REMOVED }));
    return { rt, executor, run, remove };
  }

  it("creates the project network on demand and puts the project's containers on it alone", async () => {
    const { rt, run } = await setup();
    const a = await run("srv_aaaaaaaaaaaa", "web");
    const b = await run("srv_bbbbbbbbbbbb", "db");
    expect(a.success && b.success).toBe(true);
    expect(a.container?.networks).toEqual([NET]);
    expect(b.container?.networks).toEqual([NET]);
    const n = await rt.inspectNetwork(NET);
    expect(n).toMatchObject({ name: NET, labels: { "berth.manager": MGR, "berth.project": "alpha" }, containers: 2 });
  });

  it("removes the network with the project's last container on the host, not before", async () => {
    const { rt, run, remove } = await setup();
    await run("srv_aaaaaaaaaaaa", "web");
    await run("srv_bbbbbbbbbbbb", "db");
    expect(await remove("srv_aaaaaaaaaaaa")).toMatchObject({ success: true });
    expect(await rt.inspectNetwork(NET)).toMatchObject({ containers: 1 });
    expect(await remove("srv_bbbbbbbbbbbb")).toMatchObject({ success: true });
    expect(await rt.inspectNetwork(NET)).toBeUndefined();
  });

  it("a create racing the removal of the emptied network still finds its network", async () => {
    const { rt, run, remove } = await setup();
    await run("srv_aaaaaaaaaaaa", "web");
    // The last container goes while another server of the project is being created.
    const [removed, created] = await Promise.all([remove("srv_aaaaaaaaaaaa"), run("srv_bbbbbbbbbbbb", "db")]);
    expect(removed.success).toBe(true);
    expect(created).toMatchObject({ success: true, container: { networks: [NET], state: "running" } });
    expect(await rt.inspectNetwork(NET)).toMatchObject({ containers: 1 });
  });

  it("moves a container made before project networks (on Docker's bridge) onto its network without recreating it", async () => {
    const { rt, run } = await setup();
    const old = rt.seed({ name: "berth-web", image: "sim/app:1", labels: { "berth.server": "srv_aaaaaaaaaaaa", "berth.spec-hash": "h1", "berth.manager": MGR }, networks: ["bridge"] });
    const r = await run("srv_aaaaaaaaaaaa", "web");
    expect(r).toMatchObject({ success: true, container: { id: old, networks: [NET], state: "running" } });
  });

  it("refuses a network of that name that is not the project's, and any network that is not berth's", async () => {
    const { rt, run } = await setup();
    await rt.ensureNetwork(NET, { "berth.manager": MGR, "berth.project": "beta" });
    expect(await run("srv_aaaaaaaaaaaa", "web")).toMatchObject({ success: false, reason: "NetworkNotBerths" });
    expect(await run("srv_aaaaaaaaaaaa", "web", "host")).toMatchObject({ success: false, reason: "BadCommand" });
    expect(await rt.list()).toEqual([]);
  });

  it("REMOVE_NETWORK: refused while a container is attached, done once it is empty", async () => {
    const { rt, executor, run } = await setup();
    const r = await run("srv_aaaaaaaaaaaa", "web");
    const removeNet = (id: string) => executor.execute(create(CommandSchema, { id, kind: CommandKind.REMOVE_NETWORK, network: NET, orphanAction: true }));
    expect(await removeNet("cmd_rn1")).toMatchObject({ success: false, reason: "NetworkInUse" });
    // Removed outside berth: the agent did not see it go, so the network stays behind.
    rt.simulateExternalRemove(r.container!.id);
    expect(await rt.inspectNetwork(NET)).toMatchObject({ containers: 0 });
    expect(await removeNet("cmd_rn2")).toMatchObject({ success: true });
    expect(await rt.inspectNetwork(NET)).toBeUndefined();
  });

  it("REMOVE_NETWORK never removes a network berth did not make", async () => {
    const { rt, executor } = await setup();
    await rt.ensureNetwork("berth-lookalike", {});
    const r = await executor.execute(create(CommandSchema, { id: "cmd_x", kind: CommandKind.REMOVE_NETWORK, network: "berth-lookalike", orphanAction: true }));
    expect(r).toMatchObject({ success: false, reason: "NotAProjectNetwork" });
    expect(await rt.inspectNetwork("berth-lookalike")).toBeDefined();
  });
});
