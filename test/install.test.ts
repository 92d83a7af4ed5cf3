/**
 * Install scripts end to end on real Docker (docs/templates.md, "Install
 * scripts"): a template's install runs before the server's first start with
 * the data directory at /mnt/server and the variables (secret ones too) in
 * its environment; its output is kept (GetInstallLog); a failed install
 * leaves the server Failed/InstallFailed with no container until
 * ReinstallServer; a script past its timeout is killed and leaves no install
 * container behind.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { InstallState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { join } from "node:path";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}

describe("install scripts on real Docker", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let dbPath: string;
  let manager: ManagerProc;
  let agent: Proc;
  let hostId: string;
  let templates: Client<typeof TemplateService>;
  const servers: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("install");
    dbPath = join(dir, "berth.db");
    manager = await startManager({ dir, dbPath });
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

  /** The types of the server's install events (and its reinstall request), oldest first. */
  const installEvents = async (serverId: string) =>
    (await createClient(EventService, manager.transport(manager.adminToken)).listEvents({ serverId, pageSize: 500 })).events
      .filter((e) => e.type.startsWith("install.") || e.type === "server.reinstall_requested")
      .map((e) => e.type)
      .reverse();

  /** Every container labelled with the server (its own and any install container), as Docker has them. */
  const containersOf = async (serverId: string) => docker.listContainers({ all: true, filters: { label: [`berth.server=${serverId}`] } });

  async function readInContainer(containerId: string, path: string): Promise<string> {
    const exec = await docker.getContainer(containerId).exec({ Cmd: ["cat", path], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    return new Promise<string>((resolve) => {
      let text = "";
      stream.on("data", (b: Buffer) => (text += b.toString("latin1")));
      stream.on("end", () => resolve(text));
    });
  }

  it("runs a template's install before the first start: the server sees what it wrote, the log keeps its output", async () => {
    const { template: t } = await templates.createTemplate({
      template: {
        project: "default",
        name: "installed",
        images: [{ image: TEST_IMAGE }],
        startup: "sleep 3600",
        variables: [
          { env: "GREETING", defaultValue: "hello", userEditable: true },
          { env: "TOKEN", defaultValue: "", userEditable: true, secret: true },
        ],
        install: {
          image: TEST_IMAGE,
          script: 'echo "installing $GREETING"\necho "$GREETING" > /mnt/server/installed.txt\necho "$TOKEN" > /mnt/server/token.txt\necho to-stderr >&2',
          timeoutSeconds: 60,
        },
      },
    });
    const { server: created } = await manager.servers.createServer({ spec: { name: "inst-ok", hostId }, template: { templateId: t!.id, variables: { GREETING: "bonjour", TOKEN: "s3cr3t-value" } } });
    servers.push(created!.id);
    expect(created!.spec!.install).toMatchObject({ image: TEST_IMAGE, timeoutSeconds: 60 });

    const running = await waitForPhase(manager, created!.id, Phase.RUNNING);
    expect(running.status!.install).toMatchObject({ state: InstallState.SUCCEEDED, attempt: 1, exitCode: 0, timedOut: false });
    // The server's container sees what the install wrote into its data directory (mounted at /data there).
    expect(await readInContainer(running.status!.containerId, "/data/installed.txt")).toContain("bonjour");
    expect(await readInContainer(running.status!.containerId, "/data/token.txt")).toContain("s3cr3t-value");

    const { attempts } = await manager.servers.getInstallLog({ id: "inst-ok" });
    expect(attempts.map((a) => [a.attempt, a.exitCode, a.timedOut])).toEqual([[1, 0, false]]);
    const log = new TextDecoder().decode(attempts[0]!.log);
    expect(log).toContain("installing bonjour");
    expect(log).toContain("to-stderr");
    // Only the server's own container is left: the install container was removed.
    expect((await containersOf(created!.id)).map((c) => c.Id)).toEqual([running.status!.containerId]);
  });

  it("a failed install leaves the server Failed/InstallFailed with no container, its log kept; ReinstallServer runs it again", async () => {
    // Fails the first time only: the second run finds the marker the first one left.
    const script = "if [ -e /mnt/server/marker ]; then echo second run; exit 0; fi\ntouch /mnt/server/marker\necho first run fails\nexit 3";
    const { server: created } = await manager.servers.createServer({
      spec: { name: "inst-fail", hostId, image: TEST_IMAGE, command: ["sleep", "3600"], install: { image: TEST_IMAGE, script, timeoutSeconds: 60 } },
    });
    servers.push(created!.id);
    // Pending when recorded; the reconcile CreateServer waits for may have started it already.
    expect([InstallState.PENDING, InstallState.RUNNING]).toContain(created!.status!.install?.state);

    const failed = await waitForPhase(manager, created!.id, Phase.FAILED);
    expect(failed.status!.reason).toBe("InstallFailed");
    expect(failed.status!.message).toMatch(/exited with code 3.*GetInstallLog.*ReinstallServer/);
    expect(failed.status!.install).toMatchObject({ state: InstallState.FAILED, attempt: 1, exitCode: 3, timedOut: false });
    // No retry in a loop, and no server container was made.
    await new Promise((r) => setTimeout(r, 1500));
    const still = (await manager.servers.getServer({ id: created!.id })).server!;
    expect([still.status!.phase, still.status!.install!.attempt]).toEqual([Phase.FAILED, 1]);
    expect(await containersOf(created!.id)).toEqual([]);
    const first = (await manager.servers.getInstallLog({ id: created!.id })).attempts;
    expect(first.map((a) => [a.attempt, a.exitCode])).toEqual([[1, 3]]);
    expect(new TextDecoder().decode(first[0]!.log)).toContain("first run fails");

    await manager.servers.reinstallServer({ id: created!.id });
    const running = await waitForPhase(manager, created!.id, Phase.RUNNING);
    expect(running.status!.install).toMatchObject({ state: InstallState.SUCCEEDED, attempt: 2, exitCode: 0 });
    const both = (await manager.servers.getInstallLog({ id: created!.id })).attempts;
    expect(both.map((a) => [a.attempt, a.exitCode])).toEqual([[2, 0], [1, 3]]);
    expect(new TextDecoder().decode(both[0]!.log)).toContain("second run");

    const types = await installEvents(created!.id);
    // Newest first or oldest first, the ledger holds each step once.
    expect([...types].sort()).toEqual(["install.failed", "install.started", "install.started", "install.succeeded", "server.reinstall_requested"]);

    // A server whose install succeeded must be stopped before it is installed again.
    const err = await refusal(manager.servers.reinstallServer({ id: created!.id }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/must be stopped.*StopServer/);
  });

  it("kills a script past its timeout: Failed with timed_out, no install container left behind", async () => {
    const { server: created } = await manager.servers.createServer({
      spec: { name: "inst-slow", hostId, image: TEST_IMAGE, command: ["sleep", "3600"], install: { image: TEST_IMAGE, script: "echo starting\nsleep 60", timeoutSeconds: 2 } },
    });
    servers.push(created!.id);
    const failed = await waitForPhase(manager, created!.id, Phase.FAILED);
    expect(failed.status!.reason).toBe("InstallFailed");
    expect(failed.status!.message).toMatch(/timed out/);
    expect(failed.status!.install).toMatchObject({ state: InstallState.FAILED, timedOut: true });
    const started = Number(failed.status!.install!.startedTime!.seconds);
    const finished = Number(failed.status!.install!.finishedTime!.seconds);
    expect(finished - started).toBeLessThan(30);
    await waitFor("no install container left", async () => (await containersOf(created!.id)).length === 0, 10_000);
    const [attempt] = (await manager.servers.getInstallLog({ id: created!.id })).attempts;
    expect(attempt!.timedOut).toBe(true);
    expect(new TextDecoder().decode(attempt!.log)).toContain("starting");
  });

  it("deleting a server during its install stops the install: its container goes, the server is Deleted", async () => {
    const { server: created } = await manager.servers.createServer({
      spec: { name: "inst-del", hostId, image: TEST_IMAGE, command: ["sleep", "3600"], install: { image: TEST_IMAGE, script: "echo working\nsleep 120", timeoutSeconds: 300 } },
    });
    servers.push(created!.id);
    await waitFor("the install container to run", async () => (await containersOf(created!.id)).some((c) => c.Labels["berth.role"] === "install" && c.State === "running"), 20_000);
    await manager.servers.deleteServer({ id: created!.id });
    await waitFor("the install container to be removed", async () => (await containersOf(created!.id)).length === 0, 20_000);
    // Deleted once the agent's answer (InstallCancelled) came in; "Removing" until then.
    await waitFor("the server to be Deleted", async () => {
      const s = (await manager.servers.getServer({ id: created!.id })).server!;
      return s.status!.phase === Phase.DELETED && s.status!.reason === "Deleted";
    }, 20_000);
    // Not run again while deleted: it waits for a restore and a start.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await containersOf(created!.id)).toEqual([]);
    expect((await manager.servers.getServer({ id: created!.id })).server!.status!.install?.state).toBe(InstallState.PENDING);
  });

  it("refuses ReinstallServer for a server without an install script", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: "inst-none", hostId, image: TEST_IMAGE, command: ["sleep", "3600"] } });
    servers.push(server!.id);
    expect(server!.status!.install).toBeUndefined();
    const err = await refusal(manager.servers.reinstallServer({ id: server!.id }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/no install script/);
  });

  it("a manager restart during an install does not run it twice: one attempt, one install.started", async () => {
    const { server: created } = await manager.servers.createServer({
      spec: { name: "inst-restart", hostId, image: TEST_IMAGE, command: ["sleep", "3600"], install: { image: TEST_IMAGE, script: "echo run-start\nsleep 5\necho run-end", timeoutSeconds: 120 } },
    });
    servers.push(created!.id);
    await waitFor("the install container to run", async () => (await containersOf(created!.id)).some((c) => c.Labels["berth.role"] === "install" && c.State === "running"), 20_000);
    await manager.kill();
    manager = await startManager({ dir, dbPath, port: Number(new URL(manager.url).port) });
    const running = await waitForPhase(manager, created!.id, Phase.RUNNING, 60_000);
    expect(running.status!.install).toMatchObject({ state: InstallState.SUCCEEDED, attempt: 1 });
    const { attempts } = await manager.servers.getInstallLog({ id: created!.id });
    expect(attempts.map((a) => a.attempt)).toEqual([1]);
    expect(new TextDecoder().decode(attempts[0]!.log).match(/run-start/g)).toHaveLength(1);
    expect((await installEvents(created!.id)).filter((t) => t === "install.started")).toHaveLength(1);
  });
});
