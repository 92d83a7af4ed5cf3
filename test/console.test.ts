/**
 * The console of a server (issue 19), end to end against real Docker: a
 * busybox main process that reads its stdin answers SendConsoleCommand on
 * WatchConsole, which starts with a backlog and goes on across a restart
 * (markers between runs); each line sent is a ledger event; bad input and
 * roles are refused with precise codes.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { Phase, ServerService, type ServerSpec, type WatchConsoleResponse } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const ECHO = ["sh", "-c", 'echo "ready $$"; while read l; do echo "got $l"; [ "$l" = oops ] && echo "bad: $l" >&2; done'];

/** A WatchConsole call collecting what it receives; `text()` is its output so far, markers as [marker: message]. */
function watch(servers: ReturnType<typeof createClient<typeof ServerService>>, id: string, backlogLines: number) {
  const ac = new AbortController();
  const got: WatchConsoleResponse[] = [];
  let error: unknown;
  const done = (async () => {
    try {
      for await (const m of servers.watchConsole({ id, backlogLines }, { signal: ac.signal })) got.push(m);
    } catch (err) {
      if (!ac.signal.aborted) error = err;
    }
  })();
  const text = () => got.map((m) => (m.marker ? `[${m.marker}: ${m.message}]\n` : `${m.stream === "stderr" ? "ERR " : ""}${Buffer.from(m.data).toString()}`)).join("");
  return { got, text, error: () => error, stop: async () => (ac.abort(), await done) };
}

describe("console", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  const ids: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("console");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  async function create(spec: Partial<ServerSpec>) {
    const { server } = await manager.servers.createServer({ spec: { name: `con-${uid()}`, image: TEST_IMAGE, command: ECHO, ...spec } as ServerSpec });
    ids.push(server!.id);
    await waitForPhase(manager, server!.id, Phase.RUNNING, 60_000);
    return server!;
  }

  it("a line sent reaches the main process's stdin; WatchConsole shows the backlog, the answer, stderr marked, and goes on across a restart", async () => {
    const s = await create({ console: true });
    const w = watch(manager.servers, s.id, 10);
    await waitFor("the backlog", async () => /ready \d+/.test(w.text()), 15_000);
    await manager.servers.sendConsoleCommand({ id: s.spec!.name, line: "say hello world" });
    await waitFor("the answer", async () => w.text().includes("got say hello world\n"), 15_000);
    await manager.servers.sendConsoleCommand({ id: s.id, line: "oops" });
    await waitFor("stderr", async () => w.text().includes("ERR bad: oops\n"), 15_000);
    const before = w.text().match(/ready (\d+)/)![1];

    await manager.servers.restartServer({ id: s.id });
    await waitFor("a new run's first line", async () => (w.text().match(/ready \d+/g) ?? []).length >= 2, 60_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; the console said:\n${w.text()}`);
    });
    const t = w.text();
    expect(t).toMatch(/\[container_stopped: container [0-9a-f]{12} exited with code \d+\]\n(.*\n)*\[container_started: container [0-9a-f]{12} started\]\nready \d+\n/);
    expect(w.error()).toBeUndefined();
    // The new run answers too, on the same stream.
    await manager.servers.sendConsoleCommand({ id: s.id, line: "again" });
    await waitFor("the new run's answer", async () => w.text().includes("got again\n"), 15_000);
    await w.stop();
    expect(before).toBeTruthy();

    // Every line sent is in the ledger with who sent it; the output is not.
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const { events: sent } = await events.listEvents({ serverId: s.id, typePrefix: "console." });
    expect(sent.map((e) => e.message).sort()).toEqual(["console: again", "console: oops", "console: say hello world"]);
    expect(new Set(sent.map((e) => e.actor)).size).toBe(1);

    // A new watch with no backlog starts quiet and sees only what comes after it.
    const quiet = watch(manager.servers, s.id, 0);
    await new Promise((r) => setTimeout(r, 1_000));
    await manager.servers.sendConsoleCommand({ id: s.id, line: "later" });
    await waitFor("the answer after opening", async () => quiet.text().includes("got later\n"), 15_000);
    expect(quiet.text()).not.toContain("ready");
    await quiet.stop();
  });

  it("StopServer writes the stop command to the console: the process exits by itself; one that ignores it gets SIGTERM after the timeout; the ledger says which", async () => {
    // Both ignore SIGTERM (init forwards it to sh, which traps it): only the stop command, or SIGKILL, ends them.
    const polite = await create({ console: true, stopCommand: "stop", command: ["sh", "-c", 'trap "" TERM; echo up; while read l; do echo "got $l"; [ "$l" = stop ] && exit 0; done'] });
    const deaf = await create({ console: true, stopCommand: "stop", command: ["sh", "-c", 'trap "" TERM; echo up; while read l; do echo "ignored $l"; done'] });
    await manager.servers.stopServer({ id: polite.id, timeoutSeconds: 20 });
    await manager.servers.stopServer({ id: deaf.id, timeoutSeconds: 2 });
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const said = async (id: string) => (await events.listEvents({ serverId: id, typePrefix: "command.succeeded" })).events.map((e) => e.message).join("\n");
    await waitFor("the polite server stopped", async () => /stopped by its stop command "stop" in \d+\.\d s/.test(await said(polite.id)), 60_000);
    await waitFor("the deaf server stopped", async () => /did not exit within 2 s of its stop command "stop": sent SIGTERM/.test(await said(deaf.id)), 60_000);
    const exit = async (id: string) => (await docker.listContainers({ all: true, filters: { label: [`berth.server=${id}`] } }))[0]!.Status;
    // Exited by itself (0), not killed (137).
    expect(await exit(polite.id)).toMatch(/^Exited \(0\)/);
    expect(await exit(deaf.id)).toMatch(/^Exited \(137\)/);
    // A stop command needs a console.
    const bad = ConnectError.from(await manager.servers.createServer({ spec: { name: `con-${uid()}`, image: TEST_IMAGE, stopCommand: "stop" } as ServerSpec }).catch((e: unknown) => e));
    expect([Code[bad.code], bad.rawMessage]).toEqual(["InvalidArgument", expect.stringMatching(/spec.stop_command: is written to the console/)]);
  });

  it("ExecCommand runs a one-off command: its output and exit code, stdin given, a timeout kills it; it is in the ledger with its argv", async () => {
    const s = await create({ command: ["sh", "-c", "exec sleep 100000"] });
    const run = async (req: { argv: string[]; timeoutSeconds?: number; stdin?: Uint8Array }) => {
      let out = "";
      let end: { exitCode: number; timedOut: boolean } | undefined;
      for await (const m of manager.servers.execCommand({ id: s.id, ...req })) {
        if (m.exited) end = { exitCode: m.exitCode, timedOut: m.timedOut };
        else out += `${m.stream === "stderr" ? "ERR " : ""}${Buffer.from(m.data).toString()}`;
      }
      return { out, end };
    };
    expect(await run({ argv: ["sh", "-c", "echo out; echo err >&2; exit 7"] })).toEqual({ out: expect.stringMatching(/out\n[^]*ERR err\n|ERR err\n[^]*out\n/), end: { exitCode: 7, timedOut: false } });
    expect(await run({ argv: ["sh", "-c", "tr a-z A-Z"], stdin: new TextEncoder().encode("hello stdin\n") })).toEqual({ out: "HELLO STDIN\n", end: { exitCode: 0, timedOut: false } });
    // Killed at its timeout: SIGKILL's 137, not sleep's 0 a minute later.
    const slow = await run({ argv: ["sh", "-c", "echo started; exec sleep 60"], timeoutSeconds: 2 });
    expect(slow).toEqual({ out: "started\n", end: { exitCode: 137, timedOut: true } });
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const { events: ran } = await events.listEvents({ serverId: s.id, typePrefix: "exec." });
    expect(ran.map((e) => e.message).sort()).toEqual(['exec: ["sh","-c","echo out; echo err >&2; exit 7"]', 'exec: ["sh","-c","echo started; exec sleep 60"]', 'exec: ["sh","-c","tr a-z A-Z"]']);

    // Refusals: a viewer, no argv, a stopped server.
    const code = async (p: AsyncIterable<unknown>) => {
      try {
        for await (const _ of p) void _;
        return "OK";
      } catch (err) {
        return Code[ConnectError.from(err).code];
      }
    };
    const viewer = (await manager.access.createToken({ name: `v-${uid()}`, role: Role.VIEWER, project: "default" })).secret;
    expect(await code(createClient(ServerService, manager.transport(viewer)).execCommand({ id: s.id, argv: ["true"] }))).toBe("PermissionDenied");
    expect(await code(manager.servers.execCommand({ id: s.id, argv: [] }))).toBe("InvalidArgument");
    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await waitForPhase(manager, s.id, Phase.STOPPED, 60_000);
    expect(await code(manager.servers.execCommand({ id: s.id, argv: ["true"] }))).toBe("FailedPrecondition");
  });

  it("refuses what it cannot do, with codes that say why", async () => {
    const plain = await create({ command: ["sh", "-c", "exec sleep 100000"] });
    const code = async (p: Promise<unknown>) => ConnectError.from(await p.then(() => new Error("accepted"), (e: unknown) => e));
    const noConsole = await code(manager.servers.sendConsoleCommand({ id: plain.id, line: "x" }));
    expect([Code[noConsole.code], noConsole.rawMessage]).toEqual(["FailedPrecondition", expect.stringMatching(/has no console: set spec.console/)]);
    for (const line of ["two\nlines", "nul\0", "x".repeat(4097)]) {
      expect(Code[(await code(manager.servers.sendConsoleCommand({ id: plain.id, line }))).code]).toBe("InvalidArgument");
    }
    const viewer = (await manager.access.createToken({ name: `v-${uid()}`, role: Role.VIEWER, project: "default" })).secret;
    const asViewer = createClient(ServerService, manager.transport(viewer));
    expect(Code[(await code(asViewer.sendConsoleCommand({ id: plain.id, line: "x" }))).code]).toBe("PermissionDenied");
    expect(Code[(await code(manager.servers.sendConsoleCommand({ id: "no-such-server", line: "x" }))).code]).toBe("NotFound");

    // A console server that is stopped: FailedPrecondition naming the state.
    const stopped = await create({ console: true });
    await manager.servers.stopServer({ id: stopped.id });
    await waitForPhase(manager, stopped.id, Phase.STOPPED, 60_000);
    const off = await code(manager.servers.sendConsoleCommand({ id: stopped.id, line: "x" }));
    expect([Code[off.code], off.rawMessage]).toEqual(["FailedPrecondition", expect.stringMatching(/exited|start it/)]);
    // Its console still shows the last run's final lines.
    const w = watch(asViewer, stopped.id, 5);
    await waitFor("the last run's lines", async () => /ready \d+/.test(w.text()), 15_000);
    await w.stop();
  });
});
