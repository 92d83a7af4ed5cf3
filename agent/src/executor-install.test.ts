/**
 * RUN_INSTALL on a simulated engine: an install container left from before
 * is replaced, the script's exit code and a timeout come back as the
 * result, the install container is removed, and the server's own container
 * is neither taken for it nor touched.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, type Command } from "@berth/proto/berth/v1/agent_pb.js";
import { DataRoot } from "./data/data-root.js";
import { Executor } from "./executor.js";
import { SimRuntime } from "../testing/sim-runtime.js";

const FAST = { create: 1, start: 1, stop: 1, kill: 1, remove: 1, pause: 1, unpause: 1, inspect: 0, list: 0, pull: 1 };
const MGR = "mgr_mine";
const SRV = "srv_installabc";
const LABELS = { "berth.manager": MGR, "berth.server": SRV };

describe("Executor: RUN_INSTALL", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function setup() {
    root = await mkdtemp(join(tmpdir(), "berth-install-"));
    const data = new DataRoot(root);
    await data.init();
    const rt = new SimRuntime({ latencies: FAST, images: ["sim/app:1", "sim/installer:1"] });
    const executor = new Executor(rt, data, pino({ level: "silent" }), () => {}, { managerId: () => MGR, now: () => Date.now() });
    return { rt, executor, data };
  }

  const installCmd = (id: string, timeoutSeconds: number): Command =>
    create(CommandSchema, {
      id,
      serverId: SRV,
      kind: CommandKind.RUN_INSTALL,
      deadline: timestampFromMs(Date.now() + 60_000),
      install: { image: "sim/installer:1", script: "echo hi", timeoutSeconds, env: { A: "1" }, mountPath: "/mnt/server", labels: LABELS },
    });

  const installers = async (rt: SimRuntime) => (await rt.list(SRV)).filter((c) => c.labels["berth.role"] === "install");

  it("replaces a leftover install container, reports the script's exit code, removes its container and leaves the server's alone", async () => {
    const { rt, executor } = await setup();
    const server = await rt.create({ name: "berth-web", image: "sim/app:1", command: [], env: {}, labels: LABELS, ports: [], dataDir: root!, mountPath: "/data" });
    await rt.start(server);
    const old = await rt.create({ name: "berth-install-old", image: "sim/installer:1", command: [], env: {}, labels: { ...LABELS, "berth.role": "install" }, ports: [], dataDir: root!, mountPath: "/mnt/server" });
    await rt.start(old);

    const run = executor.execute(installCmd("cmd_i1", 30));
    let current: string | undefined;
    for (let i = 0; i < 100 && !current; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const found = (await installers(rt)).filter((c) => c.id !== old && c.state === "running");
      current = found[0]?.id;
    }
    expect(current).toBeDefined();
    // Never two at once: the leftover went before the new one was made.
    expect((await installers(rt)).map((c) => c.id)).toEqual([current]);
    const made = (await rt.inspect(current!))!;
    expect(made.name).toBe(`berth-install-${SRV}`);
    expect(made.labels).toMatchObject({ ...LABELS, "berth.role": "install" });
    rt.simulateExit(current!, 3);

    const result = await run;
    expect(result).toMatchObject({ success: false, reason: "InstallFailed", install: { exitCode: 3, timedOut: false } });
    expect(result.message).toMatch(/exited with code 3/);
    expect(await installers(rt)).toEqual([]);
    expect((await rt.inspect(server))?.state).toBe("running");
  });

  it("kills a script past its timeout: timed out, container removed", async () => {
    const { rt, executor } = await setup();
    const t0 = Date.now();
    const result = await executor.execute(installCmd("cmd_i2", 1));
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(result).toMatchObject({ success: false, reason: "InstallFailed", install: { timedOut: true, exitCode: 137 } });
    expect(result.message).toMatch(/timeout of 1 s/);
    expect(await installers(rt)).toEqual([]);
  });

  it("succeeds on exit code 0", async () => {
    const { rt, executor } = await setup();
    const run = executor.execute(installCmd("cmd_i3", 30));
    let current: string | undefined;
    for (let i = 0; i < 100 && !current; i++) {
      await new Promise((r) => setTimeout(r, 20));
      current = (await installers(rt)).find((c) => c.state === "running")?.id;
    }
    rt.simulateExit(current!, 0);
    expect(await run).toMatchObject({ success: true, install: { exitCode: 0, timedOut: false } });
  });
});
