/**
 * Ready patterns and stop signals end to end on real Docker (docs/templates.md,
 * "Ready pattern" and "Stop signal"): a server from a template whose ready
 * pattern matches a line printed after a while is Starting until then and
 * Running after; a restart waits for the line again; a pattern that never
 * matches leaves the container running and the server Starting; a server
 * without a pattern is ready at once; an agent restarted while a server is
 * ready finds the line again without showing it Starting. A stop signal
 * becomes the container's StopSignal, and StopServer sends it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { ConditionStatus, Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { eventsFor } from "./harness/ledger.js";
import { removeTestDir, runAgent, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const PATTERN = "Done \\(.*\\)!";
/** Prints "loading", then after 2 s the line a Minecraft server prints once it has loaded, then runs on. */
const LOADS_IN_2S = 'echo loading; sleep 2; echo "Done (1.2s)! For help, type \\"help\\""; exec sleep 3600';

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}

const readyOf = (s: Server) => s.status!.conditions.find((c) => c.type === "Ready")!;
/** Docker's Config.StopSignal (dockerode's types leave it out). */
const stopSignalOf = (info: { Config: object }) => (info.Config as { StopSignal?: string }).StopSignal;

describe("ready patterns and stop signals on real Docker", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { stateDir: string; dataRoot: string };
  let hostId: string;
  let templates: Client<typeof TemplateService>;
  const servers: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("ready");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
    templates = createClient(TemplateService, manager.transport(manager.adminToken));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: servers });
    await removeTestDir(dir);
  });

  const get = async (id: string) => (await manager.servers.getServer({ id })).server!;

  /**
   * Polls the server until it is Running and Ready; returns every (phase, Ready reason) seen
   * on the way, in order, without repeats.
   */
  async function watchUntilReady(id: string, timeoutMs = 30_000): Promise<string[]> {
    const seen: string[] = [];
    await waitFor(
      `server ${id} Running and Ready`,
      async () => {
        const s = await get(id);
        const r = readyOf(s);
        const step = `${Phase[s.status!.phase]}/${r.reason}`;
        if (seen[seen.length - 1] !== step) seen.push(step);
        return s.status!.phase === Phase.RUNNING && r.status === ConditionStatus.TRUE;
      },
      timeoutMs,
      50,
    );
    return seen;
  }

  let mc: Server;

  it("a server from a template with a ready pattern is Starting until the line comes, then Running and Ready", async () => {
    const { template: t } = await templates.createTemplate({
      template: { project: "default", name: "slow-loader", images: [{ image: TEST_IMAGE }], startup: LOADS_IN_2S, startupShell: true, readyPattern: PATTERN, stopSignal: "SIGINT" },
    });
    const { server } = await manager.servers.createServer({ spec: { name: "ready-mc", hostId }, template: { templateId: t!.id } });
    servers.push(server!.id);
    expect([server!.spec!.readyPattern, server!.spec!.stopSignal]).toEqual([PATTERN, "SIGINT"]);

    // STARTING/Starting comes first (the start command in flight, even once Docker says running);
    // then, until the line, STARTING/WaitingForReady.
    const starting = await waitFor(
      "the container running, the server waiting for its line",
      async () => {
        const s = await get(server!.id);
        return s.status!.containerState === "running" && s.status!.phase === Phase.STARTING && s.status!.reason === "WaitingForReady" ? s : undefined;
      },
      30_000,
      50,
    );
    expect([readyOf(starting).status, readyOf(starting).reason]).toEqual([ConditionStatus.FALSE, "Starting"]);
    expect(readyOf(starting).message).toBe(`the container is running; waiting for a line matching /${PATTERN}/ in its output`);
    const seen = await watchUntilReady(server!.id);
    expect(seen[seen.length - 1]).toBe("RUNNING/Running");
    mc = await get(server!.id);
    // Not before the line: the container had been running for about 2 s by then.
    const readySince = Number(readyOf(mc).lastTransitionTime!.seconds) * 1000;
    const startedAt = Number(mc.status!.startedTime!.seconds) * 1000;
    expect(readySince - startedAt).toBeGreaterThanOrEqual(1000);
    // The template's stop signal is the container's.
    const info = await docker.getContainer(mc.status!.containerId).inspect();
    expect(stopSignalOf(info)).toBe("SIGINT");
    expect(info.Config.Labels["berth.ready-pattern"]).toBe(PATTERN);
  });

  it("a restart waits for the line again", async () => {
    await manager.servers.restartServer({ id: mc.id });
    const seen = await watchUntilReady(mc.id, 60_000);
    // Not ready from the moment the restart began until the new run printed its line.
    expect(seen).toContain("STARTING/Starting");
    expect(seen[0]).not.toBe("RUNNING/Running");
    const after = await get(mc.id);
    expect(after.status!.containerId).toBe(mc.status!.containerId);
    expect(after.status!.startedTime!.seconds).toBeGreaterThan(mc.status!.startedTime!.seconds);
    mc = after;
  });

  it("an agent restarted while the server is ready finds the line again: never Starting", async () => {
    const before = eventsFor(manager.dbPath, mc.id).length;
    await agent.stop();
    await waitForPhase(manager, mc.id, Phase.UNKNOWN, 30_000);
    const restarted = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot });
    agent = { ...restarted, stateDir: agent.stateDir, dataRoot: agent.dataRoot };
    await watchUntilReady(mc.id, 60_000);
    const changes = eventsFor(manager.dbPath, mc.id)
      .slice(before)
      .filter((e) => e.type === "phase.changed")
      .map((e) => e.message.split(":")[0]);
    expect(changes).toEqual(["RUNNING → UNKNOWN", "UNKNOWN → RUNNING"]);
  });

  it("a pattern no line matches: the container runs, the server stays Starting and not Ready", async () => {
    const { server } = await manager.servers.createServer({
      spec: { name: "ready-never", hostId, image: TEST_IMAGE, command: ["sh", "-c", "echo loading; echo still loading; exec sleep 3600"], readyPattern: "^never printed$" },
    });
    servers.push(server!.id);
    const running = await waitFor("the container running", async () => {
      const s = await get(server!.id);
      return s.status!.containerState === "running" ? s : undefined;
    });
    // Its output was seen long since; it stays so.
    await new Promise((r) => setTimeout(r, 4_000));
    const s = await get(server!.id);
    expect([Phase[s.status!.phase], s.status!.reason]).toEqual(["STARTING", "WaitingForReady"]);
    expect([readyOf(s).status, readyOf(s).reason]).toEqual([ConditionStatus.FALSE, "Starting"]);
    expect(readyOf(s).message).toContain("/^never printed$/");
    expect((await docker.getContainer(running.status!.containerId).inspect()).State.Running).toBe(true);
  });

  it("a server without a pattern is Running and Ready at once (as before)", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: "ready-plain", hostId, image: TEST_IMAGE, command: ["sleep", "3600"] } });
    servers.push(server!.id);
    const seen = await watchUntilReady(server!.id);
    expect(seen.some((x) => x.startsWith("STARTING/Starting") || x.includes("WaitingForReady"))).toBe(false);
    const s = await get(server!.id);
    expect(stopSignalOf(await docker.getContainer(s.status!.containerId).inspect()) ?? "").not.toBe("SIGINT");
  });

  it("a stop signal (INT, stored as SIGINT) is the container's StopSignal, and StopServer sends it", async () => {
    const script = 'trap "echo got INT; exit 0" INT; trap "echo got TERM; exit 0" TERM; echo started; sleep 3600 & wait';
    const { server } = await manager.servers.createServer({ spec: { name: "stop-int", hostId, image: TEST_IMAGE, command: ["sh", "-c", script], stopSignal: "INT" } });
    servers.push(server!.id);
    expect(server!.spec!.stopSignal).toBe("SIGINT");
    const running = await waitForPhase(manager, server!.id, Phase.RUNNING);
    const id = running.status!.containerId;
    expect(stopSignalOf(await docker.getContainer(id).inspect())).toBe("SIGINT");
    await manager.servers.stopServer({ id: server!.id });
    const stopped = await waitForPhase(manager, server!.id, Phase.STOPPED);
    const out = (await docker.getContainer(id).logs({ stdout: true, stderr: true })).toString("latin1");
    expect(out).toContain("got INT");
    expect(out).not.toContain("got TERM");
    // It exited by itself on the signal (exit 0), not killed after the timeout.
    expect(stopped.status!.message).toBe("exited with code 0");
  });

  it("refuses a bad ready pattern or stop signal naming the field, and a template's fields in the spec", async () => {
    const bad = await refusal(manager.servers.createServer({ spec: { name: "ready-bad", hostId, image: TEST_IMAGE, readyPattern: "^(a+)+$" } }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/^spec\.ready_pattern: refused: .*nested quantifier/);
    const sig = await refusal(manager.servers.createServer({ spec: { name: "ready-bad", hostId, image: TEST_IMAGE, stopSignal: "SIGSTOP" } }));
    expect(sig.code).toBe(Code.InvalidArgument);
    expect(sig.rawMessage).toMatch(/^spec\.stop_signal: .*SIGTERM, SIGINT/);
    const tpl = (await templates.listTemplates({ pageSize: 1000 })).templates.find((t) => t.name === "slow-loader")!;
    const given = await refusal(manager.servers.createServer({ spec: { name: "ready-bad", hostId, readyPattern: "x" }, template: { templateId: tpl.id } }));
    expect(given.code).toBe(Code.InvalidArgument);
    expect(given.rawMessage).toMatch(/^spec\.ready_pattern: comes from the template/);
    expect((await manager.servers.listServers({})).servers.some((s) => s.spec!.name === "ready-bad")).toBe(false);
  });
});
