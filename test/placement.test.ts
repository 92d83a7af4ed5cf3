/**
 * Capacity-aware placement across two real Docker hosts: host A is an agent on
 * the shared engine, host B an agent on a private dockerd. Capacity is set
 * with SetHostCapacity (a reserve that leaves A little memory to give), then:
 * a named host without room is refused naming what is short and the host
 * with room; CreateServer without a host puts the server where there is room,
 * and its container runs there with the limit; when no host has room the
 * answer says so; the least full host is chosen; raising a server's limits
 * past its host's room is refused and changes nothing.
 */
import type Docker from "dockerode";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clone, create } from "@bufbuild/protobuf";
import { Phase, ResourceLimitsSchema, ServerSpecSchema, type Server, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, ensureTestImage, removeBerthContainers, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { testDockerHost } from "./harness/engine.js";

const MiB = 1024n * 1024n;
const uid = Date.now().toString(36);

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: Code[e.code], message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("capacity-aware placement on two real hosts", () => {
  let dir: string;
  let manager: ManagerProc;
  let engineB: DockerEngine;
  const docker: Record<"a" | "b", Docker> = {} as never;
  const agents: Proc[] = [];
  const hostIds = { a: "", b: "" };
  const hostMemory = { a: 0n, b: 0n };

  const place = async (name: string, memoryMiB: bigint, hostId = ""): Promise<Server> => {
    const { server } = await manager.servers.createServer({
      spec: { name: `${name}-${uid}`, hostId, image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"], dataMountPath: "/data", resources: { memoryBytes: memoryMiB * MiB } } as ServerSpec,
    });
    return server!;
  };
  /** The host whose engine holds the server's container, and the container's memory limit there. */
  const runsOn = async (id: string): Promise<{ key: "a" | "b"; memory: number }> => {
    const s = await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    for (const key of ["a", "b"] as const) {
      const found = await docker[key].listContainers({ all: true, filters: { label: [`berth.server=${id}`] } });
      if (found.length > 0) {
        const c = await docker[key].getContainer(found[0]!.Id).inspect();
        expect(c.Id).toBe(s.status!.containerId);
        return { key, memory: c.HostConfig.Memory ?? 0 };
      }
    }
    throw new Error(`no container for server ${id} on either engine`);
  };
  /** Leaves `freeMiB` of a host's memory to servers: a reserve of the rest. */
  const leave = async (key: "a" | "b", freeMiB: bigint) => {
    await manager.hosts.setHostCapacity({ id: hostIds[key], reservedMemoryBytes: hostMemory[key] - freeMiB * MiB });
    const { host } = await manager.hosts.getHost({ id: hostIds[key] });
    expect(host!.allocatableMemoryBytes).toBe(freeMiB * MiB);
  };

  beforeAll(async () => {
    dir = await tempDir("placement");
    engineB = await startPrivateDockerd("placement-b");
    docker.a = dockerClient(testDockerHost());
    docker.b = dockerClient(engineB.dockerHost);
    await ensureTestImage(docker.b);
    manager = await startManager({ dir });
    for (const [key, dockerHost] of [["a", testDockerHost()], ["b", engineB.dockerHost]] as const) {
      const before = new Set((await manager.hosts.listHosts({})).hosts.map((h) => h.id));
      mkdirSync(join(dir, key), { recursive: true });
      agents.push(await startAgent({ manager, dir: join(dir, key), dockerHost, dataRoot: join(dir, `${key}-data`) }));
      const h = await waitFor(`host ${key} online with its size`, async () => (await manager.hosts.listHosts({})).hosts.find((x) => !before.has(x.id) && x.state === 1 && x.memoryBytes > 0n), 30_000);
      hostIds[key] = h.id;
      hostMemory[key] = h.memoryBytes;
    }
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) await a.stop();
    await manager?.stop();
    if (manager?.managerId) for (const d of Object.values(docker)) await removeBerthContainers(d, { managerId: manager.managerId }).catch(() => {});
    await engineB?.stop();
    await removeTestDir(dir);
  });

  it("refuses a named host without room, places where there is room, says when no host has any, and picks the least full", async () => {
    await leave("a", 256n);
    await leave("b", 1024n);

    // Host A named, 512 MiB asked of its 256: refused, naming what is short and the host with room.
    const refused = await failure(place("named", 512n, hostIds.a));
    expect(refused.code).toBe("FailedPrecondition");
    expect(refused.message).toMatch(/has no room for this server's limits \(memory: 512 MiB asked, 256 MiB free of 256 MiB allocatable\); hosts with room: /);
    expect((await manager.servers.listServers({})).servers.filter((s) => s.spec!.name.startsWith("named-"))).toEqual([]);

    // No host named: it goes to B, the one with room, and runs there with its limit.
    const big = await place("big", 512n);
    expect(big.spec!.hostId).toBe(hostIds.b);
    expect(await runsOn(big.id)).toEqual({ key: "b", memory: 512 * 1024 * 1024 });
    const b = (await manager.hosts.getHost({ id: hostIds.b })).host!;
    expect(b.allocatedMemoryBytes).toBe(512n * MiB);

    // 768 MiB: A has 256, B 512 left: no host has room, and the answer says what is short.
    const none = await failure(place("none", 768n));
    expect(none.code).toBe("FailedPrecondition");
    expect(none.message).toMatch(/^no connected host has room for this server's limits \(least full, host .+: memory: 768 MiB asked, 512 MiB free of 1 GiB allocatable\)/);

    // 128 MiB fits on both: A would be 50 % full, B (640 of 1024) 62.5 %: A, the least full.
    const small = await place("small", 128n);
    expect(small.spec!.hostId).toBe(hostIds.a);
    expect(await runsOn(small.id)).toEqual({ key: "a", memory: 128 * 1024 * 1024 });

    // Raising the small server to 512 MiB does not fit A (256 allocatable): refused, and its container keeps 128 MiB.
    const raised = clone(ServerSpecSchema, small.spec!);
    raised.resources = create(ResourceLimitsSchema, { memoryBytes: 512n * MiB });
    const raise = await failure(manager.servers.updateServer({ id: small.id, spec: raised }));
    expect(raise.code, raise.message).toBe("FailedPrecondition");
    expect(raise.message).toMatch(/memory: 512 MiB asked/);
    expect((await manager.servers.getServer({ id: small.id })).server!.spec!.resources!.memoryBytes).toBe(128n * MiB);
    expect(await runsOn(small.id)).toEqual({ key: "a", memory: 128 * 1024 * 1024 });
  }, 180_000);
});
