/**
 * Sizes an operator can reach through the API, end to end on real Docker:
 * what CreateServer accepts can be created, and a host whose servers carry
 * large environments stays connected (its inventory once went over the
 * manager's 4 MiB message cap: refused forever, the agent redialling every
 * 0.3-0.5 s, every server on the host Unknown).
 */
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { DockerRuntime } from "../agent/src/runtime/docker-runtime.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "exec sleep 100000"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("host limits on real Docker", () => {
  const socketPath = testDockerHost().replace(/^unix:\/\//, "");
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  let hostId: string;
  const servers: string[] = [];
  const containers: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("host-limits");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: servers, containerIds: containers });
    await removeTestDir(dir);
  });

  function hostEvents(type: string): number {
    const db = new Database(manager.dbPath, { readonly: true, fileMustExist: true });
    try {
      return (db.prepare("SELECT COUNT(*) AS n FROM events WHERE host_id = ? AND type = ?").get(hostId, type) as { n: number }).n;
    } finally {
      db.close();
    }
  }

  it("the agent's runtime creates a container with 2 MB of environment (dockerode put it in the URL: 431)", async () => {
    const root = await tempDir("limits");
    try {
      const rt = new DockerRuntime({ socketPath });
      const env = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`BIG${i}`, String(i % 10).repeat(32 * 1024)]));
      const id = await rt.create({ name: `berth-limits-${Date.now().toString(36)}`, image: TEST_IMAGE, command: SLEEPER, env, labels: { "berth.test": "host-limits" }, ports: [], dataDir: root, mountPath: "/data" });
      containers.push(id);
      const info = await docker.getContainer(id).inspect();
      expect(info.Config.Env.find((e) => e.startsWith("BIG63="))).toBe(`BIG63=${"3".repeat(32 * 1024)}`);
    } finally {
      await removeTestDir(root);
    }
  });

  it("CreateServer refuses an environment over 256 KiB in total, naming spec.env", async () => {
    const env = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`V${i}`, "x".repeat(30 * 1024)]));
    const err = await manager.servers
      .createServer({ spec: { name: "too-much-env", hostId, image: TEST_IMAGE, env } as unknown as ServerSpec })
      .then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/^spec\.env: .*more than 262144 \(256 KiB\)/);
  });

  it("18 servers with 240 KiB of env each (4.3 MB, over the 4 MiB message cap together) all run; the host stays connected through resyncs", async () => {
    // Just under the cap: 8 values of 30 KiB (+ names) per server.
    const env = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`BLOB${i}`, String.fromCharCode(97 + i).repeat(30 * 1024)]));
    const stamp = Date.now().toString(36);
    for (let i = 0; i < 18; i++) {
      const { server } = await manager.servers.createServer({ spec: { name: `env-${stamp}-${i}`, hostId, image: TEST_IMAGE, command: SLEEPER, env } as unknown as ServerSpec });
      servers.push(server!.id);
    }
    for (const id of servers) await waitForPhase(manager, id, Phase.RUNNING, 120_000);
    const disconnectsBefore = hostEvents("host.disconnected");
    // Full inventories now carry all 18 (the agent sends one on resync and every 30 s).
    for (let i = 0; i < 3; i++) {
      await manager.hosts.resyncHost({ id: hostId });
      await sleep(1_500);
    }
    const { host } = await manager.hosts.getHost({ id: hostId });
    expect(host?.state).toBe(HostState.ONLINE);
    expect(hostEvents("host.disconnected")).toBe(disconnectsBefore);
    for (const id of servers) expect((await manager.servers.getServer({ id })).server?.status?.phase).toBe(Phase.RUNNING);
    // The environment is on the containers, as the spec says.
    const [c] = await docker.listContainers({ all: true, filters: { label: [`berth.server=${servers[0]}`] } });
    const info = await docker.getContainer(c!.Id).inspect();
    expect(info.Config.Env.filter((e) => e.startsWith("BLOB"))).toHaveLength(8);
  }, 300_000);
});
