/**
 * Resource limits against a real Docker engine: a memory limit is enforced
 * and its OOM kill recognised, a pids limit stops a fork bomb, a CPU limit
 * shows in the usage samples, limits change live without a restart, and a
 * limit removed takes a new container at the next restart.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { Phase, ResourceLimitsSchema, type Server, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const MiB = 1024n * 1024n;

async function codeOf(p: Promise<unknown>): Promise<[string, string]> {
  try {
    await p;
    return ["OK", ""];
  } catch (err) {
    const e = ConnectError.from(err);
    return [Code[e.code], e.rawMessage];
  }
}

describe("resource limits", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let usage: Client<typeof UsageService>;
  let events: Client<typeof EventService>;
  const ids: string[] = [];

  const create = async (name: string, command: string, resources?: MessageInitShape<typeof ResourceLimitsSchema>): Promise<Server> => {
    const { server } = await manager.servers.createServer({
      spec: { name: `${name}-${uid()}`, image: TEST_IMAGE, command: ["sh", "-c", command], dataMountPath: "/data", ...(resources ? { resources } : {}) } as ServerSpec,
    });
    ids.push(server!.id);
    return server!;
  };
  const hostConfig = async (id: string) => {
    const s = (await manager.servers.getServer({ id })).server!;
    const c = await docker.getContainer(s.status!.containerId).inspect();
    return { id: c.Id, startedAt: c.State.StartedAt, hc: c.HostConfig };
  };
  /** A failed wait's context: the server's status, its ledger and its container as Docker has it. */
  const whatHappened = async (id: string): Promise<string> => {
    const status = (await manager.servers.getServer({ id })).server!.status!;
    const ledger = (await events.listEvents({ serverId: id })).events.map((e) => `  ${e.type} ${e.reason}: ${e.message}`);
    const state = status.containerId ? JSON.stringify((await docker.getContainer(status.containerId).inspect().catch((e: Error) => ({ State: e.message }))).State) : "no container";
    return [`status: phase ${Phase[status.phase]} reason ${status.reason}: ${status.message}`, "ledger:", ...ledger, `container: ${state}`].join("\n");
  };
  const condition = async (id: string, type: string) => (await manager.servers.getServer({ id })).server!.status!.conditions.find((c) => c.type === type);

  beforeAll(async () => {
    dir = await tempDir("limits");
    // A long crash backoff: the OOM-killed server stays in its backoff (reason OOMKilled) while the test looks.
    manager = await startManager({ dir, args: ["--crash-backoff", "120", "--alert-interval", "1"] });
    // Sizes and inventories every second or two: the disk quota test sees a changed directory within seconds.
    agent = await startAgent({ manager, dir, extraArgs: ["--usage-interval", "1", "--inventory-interval", "2", "--data-size-interval", "1"] });
    await waitForHostOnline(manager);
    usage = createClient(UsageService, manager.transport(manager.adminToken));
    events = createClient(EventService, manager.transport(manager.adminToken));
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  it("a process allocating past its memory limit is OOM-killed, reported as OOMKilled with the limit, and counted as a crash", async () => {
    // The shell holds the command substitution's 200 MB output in its own memory.
    const s = await create("oom", "echo started; sleep 1; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", { memoryBytes: 32n * MiB });
    const died = await waitFor(
      "the OOM kill in the ledger",
      async () => (await events.listEvents({ serverId: s.id, typePrefix: "container.died" })).events.find((e) => e.reason === "OOMKilled"),
      60_000,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await whatHappened(s.id)}`);
    });
    expect(died.message).toBe("killed for exceeding its 32 MiB memory limit (exit code 137)");
    const server = await waitFor("the phase reason", async () => {
      const x = (await manager.servers.getServer({ id: s.id })).server!;
      return x.status!.reason === "OOMKilled" ? x : undefined;
    }, 30_000);
    expect(server.status!.phase).toBe(Phase.STARTING);
    expect(server.status!.message).toMatch(/^killed for exceeding its 32 MiB memory limit \(exit code 137\); restarting in \d+s \(crash 1 of 5\)$/);
    expect(server.status!.crash?.recent).toBe(1);
    const { hc } = await hostConfig(s.id);
    expect(hc.Memory).toBe(32 * 1024 * 1024);
    expect(hc.MemorySwap).toSatisfy((v: number) => v === 32 * 1024 * 1024 || v === -1); // -1: the kernel does not account swap
  }, 120_000);

  it("a pids limit stops a fork bomb; the server without one gets the manager's default of 512", async () => {
    // The bomb runs in a child shell (a shell that cannot fork gives up); the server's own shell goes on.
    const bomb = await create("bomb", "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 100000 & i=$((i+1)); done'; echo bomb ended with $?; exec sleep 100000", { pidsLimit: 20n });
    const plain = await create("plain", "exec sleep 100000");
    await waitForPhase(manager, bomb.id, Phase.RUNNING, 60_000);
    await waitForPhase(manager, plain.id, Phase.RUNNING, 60_000);
    expect((await hostConfig(bomb.id)).hc.PidsLimit).toBe(20);
    expect((await hostConfig(plain.id)).hc.PidsLimit).toBe(512);
    // The processes stop at the limit: what the usage samples count never goes past it.
    const sample = await waitFor("a usage sample at the limit", async () => {
      const l = (await usage.getUsage({ subject: { case: "server", value: bomb.id } })).latest;
      return l?.pids !== undefined && l.pids >= 15 ? l : undefined;
    }, 30_000);
    expect(sample.pids!).toBeLessThanOrEqual(20);
    expect(sample.pidsLimit).toBe(20n);
    const logs = (await docker.getContainer((await hostConfig(bomb.id)).id).logs({ stdout: true, stderr: true })).toString();
    expect(logs).toMatch(/can't fork/);
    expect(logs).toMatch(/bomb ended with 2/);
  }, 120_000);

  it("a CPU limit shows in usage, changes live without a restart, and a limit removed takes a new container at the restart", async () => {
    const s = await create("cpu", "while :; do :; done", { cpus: 0.25 });
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    const before = await hostConfig(s.id);
    expect(before.hc.NanoCpus).toBe(250_000_000);
    // Three samples after the first: a busy loop held to a quarter of a core.
    const cpu = new Map<bigint, number>();
    await waitFor("three CPU samples", async () => {
      const l = (await usage.getUsage({ subject: { case: "server", value: s.id } })).latest;
      if (l?.cpuPercent !== undefined && l.time) cpu.set(l.time.seconds * 1000n + BigInt(Math.floor(l.time.nanos / 1e6)), l.cpuPercent);
      return cpu.size >= 3;
    }, 30_000);
    for (const f of cpu.values()) expect(f).toBeLessThan(35);

    // Raised live: the same container, not restarted, Docker holds the new value.
    const spec = (await manager.servers.getServer({ id: s.id })).server!.spec!;
    await manager.servers.updateServer({ id: s.id, spec: { ...spec, resources: { ...spec.resources!, cpus: 0.75 } } });
    await waitFor("the new CPU limit on the container", async () => (await hostConfig(s.id)).hc.NanoCpus === 750_000_000, 30_000);
    const after = await hostConfig(s.id);
    expect(after.id).toBe(before.id);
    expect(after.startedAt).toBe(before.startedAt);
    await waitFor("SpecApplied true", async () => (await condition(s.id, "SpecApplied"))?.status === 1 /* TRUE */, 30_000);

    // Removed: docker update cannot take a limit away; SpecApplied says so until the restart makes a new container.
    const now = (await manager.servers.getServer({ id: s.id })).server!.spec!;
    await manager.servers.updateServer({ id: s.id, spec: { ...now, resources: { ...now.resources!, cpus: 0 } } });
    const pending = await waitFor("SpecApplied PendingRestart", async () => {
      const c = await condition(s.id, "SpecApplied");
      return c?.reason === "PendingRestart" ? c : undefined;
    }, 30_000);
    expect(pending.message).toMatch(/removing the cpus limit takes a new container/);
    await manager.servers.restartServer({ id: s.id });
    await waitFor("a new container without a CPU limit", async () => {
      const h = await hostConfig(s.id).catch(() => undefined);
      return h && h.id !== before.id && h.hc.NanoCpus === 0 ? h : undefined;
    }, 60_000);
    await waitFor("SpecApplied true again", async () => (await condition(s.id, "SpecApplied"))?.status === 1, 30_000);
    await manager.servers.stopServer({ id: s.id });
  }, 180_000);

  it("a disk quota: uploads that do not fit are refused, crossing it alerts and (with the policy) stops the server until it is under again", async () => {
    const files = createClient(FileService, manager.transport(manager.adminToken));
    const alerts = createClient(AlertService, manager.transport(manager.adminToken));
    const s = await create("quota", "exec sleep 100000", { diskQuotaBytes: 2n * MiB, stopOverDiskQuota: true });
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    // 3 MiB cannot fit in 2: refused before a byte is written, naming the quota.
    const [code, message] = await codeOf(files.writeFile({ server: s.id, path: "big.bin", size: BigInt(3 * 1024 * 1024), data: new Uint8Array(1024) }));
    expect(code).toBe("ResourceExhausted");
    expect(message).toMatch(/uses 0 bytes of its 2 MiB disk quota \(resources.disk_quota_bytes, as last measured\), so this does not fit; nothing was written/);
    // Written behind berth's back (as the server itself would), then a file operation marks the directory changed.
    await writeFile(join(agent.dataRoot, s.id, "world.bin"), Buffer.alloc(3 * 1024 * 1024, 7));
    await files.makeDirectory({ server: s.id, path: "logs" });
    const stopped = await waitFor("stopped over its quota", async () => {
      const x = (await manager.servers.getServer({ id: s.id })).server!;
      return x.status!.phase === Phase.STOPPED && x.status!.reason === "DiskQuotaExceeded" ? x : undefined;
    }, 60_000);
    expect(stopped.status!.message).toMatch(/^stopped: its data directory uses 3(\.0)? MiB of its 2 MiB disk quota; it starts again once under it/);
    const alert = await waitFor("the disk_quota alert", async () => (await alerts.listAlerts({})).alerts.find((a) => a.rule === "disk_quota" && a.subject === `server:${s.id}`), 30_000);
    expect(alert.message).toMatch(/uses 3(\.0)? MiB of its 2 MiB disk quota/);
    // Under it again: the server starts by itself (its desired state was kept), the alert resolves.
    await files.deleteFile({ server: s.id, path: "world.bin" });
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    await waitFor("the alert resolved", async () => !(await alerts.listAlerts({})).alerts.some((a) => a.rule === "disk_quota" && a.subject === `server:${s.id}`), 30_000);
  }, 180_000);

  it("refuses limits that make no sense, naming the field", async () => {
    const bad = (resources: MessageInitShape<typeof ResourceLimitsSchema>) => codeOf(manager.servers.createServer({ spec: { name: `bad-${uid()}`, image: TEST_IMAGE, dataMountPath: "/data", resources } as ServerSpec }));
    const [code, message] = await bad({ memoryBytes: 1024n });
    expect(code).toBe("InvalidArgument");
    expect(message).toMatch(/memory_bytes/);
    expect((await bad({ memorySwapBytes: 64n * MiB }))[1]).toMatch(/memory_swap_bytes/);
    expect((await bad({ cpus: -1 }))[0]).toBe("InvalidArgument");
    expect((await bad({ cpusetCpus: "0;rm" }))[1]).toMatch(/cpuset_cpus/);
    expect((await bad({ pidsLimit: -5n }))[1]).toMatch(/pids_limit/);
  });
});
