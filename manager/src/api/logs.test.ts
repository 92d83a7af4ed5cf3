import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, createContextValues, createHandlerContext } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AgentMessageSchema, AgentService, type AgentMessage, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, ServerService, TailLogsRequestSchema, type TailLogsResponse } from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { hashSecret, newSecret } from "../ids.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { AsyncQueue } from "../link/async-queue.js";
import { createLogger } from "../log.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import { newServer, testStore } from "../../testing/store.js";
import { createAgentService } from "./agent-service.js";
import { createTailLogs, LOG_CHUNK_OVERHEAD_BYTES, LOG_WINDOW_BYTES } from "./logs.js";
import { hostToProto } from "./convert.js";
import { ConditionStatus } from "@berth/proto/berth/v1/server_pb.js";

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const TEAM_B: Caller = { tokenId: "tok_b", name: "b", role: "viewer", project: "team-b" };

/** A manager's agent link and TailLogs over an in-memory store, with one connected host. */
async function setup(openTimeoutMs = 2_000) {
  const store = await testStore();
  cleanup.push(() => store.close());
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  cleanup.push(ledger.follow(store));
  const reconciler = { enqueue: () => {}, enqueueHost: () => {}, noteExit: () => {} } as unknown as Reconciler;
  const agents = createAgentService({ store, hub, ledger, reconciler, log: createLogger("silent", "test"), managerId: "mgr_test", heartbeatIntervalSeconds: 5 });
  const tailLogs = createTailLogs({ store, hub, openTimeoutMs });
  const secret = newSecret();
  await store.commit([
    { op: "host.insert", id: "host_aaaa", name: "a", secretHash: hashSecret(secret), createdAt: 1 },
    {
      op: "server.insert",
      server: newServer({ id: "srv_web", name: "web", hostId: "host_aaaa", spec: { desiredState: DesiredState.RUNNING, dataMountPath: "/data" }, dataInitialized: true }),
    },
  ]);

  // The agent: a Connect stream we drive by hand.
  const input = new AsyncQueue<AgentMessage>();
  const actx = createHandlerContext({
    service: AgentService,
    method: AgentService.method.connect,
    protocolName: "grpc",
    requestMethod: "POST",
    url: "http://test/berth.v1.AgentService/Connect",
    requestHeader: { authorization: `Bearer host_aaaa.${secret}` },
  });
  // Drained continuously, as connect-node would: the handler's cleanup runs only when its stream is read to the end.
  const toAgent = new AsyncQueue<ManagerMessage>();
  void (async () => {
    for await (const m of agents.connect(input, actx)) toAgent.push(m as ManagerMessage);
    toAgent.close();
  })().catch(() => toAgent.close());
  const fromManager = toAgent[Symbol.asyncIterator]();
  const agentSend = (body: NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>) => input.push(create(AgentMessageSchema, { body }));
  cleanup.push(() => input.close());
  expect(((await fromManager.next()).value as ManagerMessage).body.case).toBe("welcome");
  agentSend({ case: "hello", value: { hostname: "a", dockerVersion: "28.2.2", dockerReachable: true } });
  agentSend({ case: "inventory", value: { containers: [], dataDirs: [], dockerReachable: true } });
  // Connected once its first inventory is stored: then TailLogs may ask it.
  await vi.waitFor(() => expect(hub.isConnected("host_aaaa")).toBe(true));
  /** The next message the manager sent to the agent. */
  const nextToAgent = async () => ((await fromManager.next()).value as ManagerMessage).body;

  const call = (caller: Caller, req: { id: string; follow?: boolean; tailLines?: number; announceOpen?: boolean }) => {
    const ac = new AbortController();
    const ctx = createHandlerContext({
      service: ServerService,
      method: ServerService.method.tailLogs,
      protocolName: "connect",
      requestMethod: "POST",
      url: "http://test/berth.v1.ServerService/TailLogs",
      requestSignal: ac.signal,
      contextValues: createContextValues().set(callerKey, caller),
    });
    const it = (tailLogs(create(TailLogsRequestSchema, req), ctx) as AsyncIterable<TailLogsResponse>)[Symbol.asyncIterator]();
    return { it, cancel: () => ac.abort() };
  };
  return { store, hub, ledger, agentSend, nextToAgent, call, input };
}

const tick = () => new Promise((r) => setTimeout(r, 10));
const text = (r: IteratorResult<TailLogsResponse>) => (r.done ? "<end>" : `${r.value.stream}:${Buffer.from(r.value.data).toString()}`);

describe("TailLogs through the agent link", () => {
  it("asks the server's agent, relays its chunks in order and ends with the log", async () => {
    const { call, nextToAgent, agentSend, hub } = await setup();
    const { it } = call(ADMIN, { id: "web", follow: false, tailLines: 2 });
    const first = it.next();
    const req = await nextToAgent();
    expect(req.case).toBe("logRequest");
    if (req.case !== "logRequest") return;
    expect(req.value).toMatchObject({ serverId: "srv_web", follow: false, tailLines: 2 });
    const rid = req.value.requestId;
    agentSend({ case: "logChunk", value: { requestId: rid } }); // open
    agentSend({ case: "logChunk", value: { requestId: rid, stream: "stdout", data: Buffer.from("line 1\n") } });
    agentSend({ case: "logChunk", value: { requestId: "log_someoneelse", stream: "stdout", data: Buffer.from("not mine\n") } });
    agentSend({ case: "logChunk", value: { requestId: rid, stream: "stderr", data: Buffer.from("oops\n") } });
    agentSend({ case: "logChunk", value: { requestId: rid, end: true } });
    expect(text(await first)).toBe("stdout:line 1\n");
    expect(text(await it.next())).toBe("stderr:oops\n");
    expect(text(await it.next())).toBe("<end>");
    expect(hub.openLogCount).toBe(0);
  });

  it("with announce_open, says first that the log is open (a silent container is then 'no output yet'), once", async () => {
    const { call, nextToAgent, agentSend } = await setup();
    const { it, cancel } = call(ADMIN, { id: "web", follow: true, announceOpen: true });
    const first = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error(`expected a logRequest, got ${req.case}`);
    const rid = req.value.requestId;
    agentSend({ case: "logChunk", value: { requestId: rid } }); // open
    const opened = await first;
    expect(opened.done).toBe(false);
    expect(opened.value!.opened).toBe(true);
    expect(opened.value!.data.length).toBe(0);
    agentSend({ case: "logChunk", value: { requestId: rid, stream: "stdout", data: Buffer.from("later\n") } });
    const next = await it.next();
    expect(text(next)).toBe("stdout:later\n");
    expect(next.value!.opened).toBe(false);
    cancel();
  });

  it("gives the agent a window and grants credit as the caller reads", async () => {
    const { call, nextToAgent, agentSend } = await setup();
    const { it } = call(ADMIN, { id: "web", follow: true });
    const first = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error(`expected logRequest, got ${req.case}`);
    expect(req.value.windowBytes).toBe(LOG_WINDOW_BYTES);
    const rid = req.value.requestId;
    agentSend({ case: "logChunk", value: { requestId: rid } });
    const chunk = Buffer.alloc(32 * 1024, 120);
    for (let i = 0; i < 4; i++) agentSend({ case: "logChunk", value: { requestId: rid, stream: "stdout", data: chunk } });
    await tick();
    // Nothing is granted until the caller has read: the agent stays at most a window ahead.
    expect((await first).done).toBe(false);
    // A chunk counts as consumed once the caller asks for the next one (it was written out).
    await it.next();
    await it.next();
    const credit = await nextToAgent();
    expect(credit).toMatchObject({ case: "logCredit", value: { requestId: rid, bytes: 2 * (chunk.length + LOG_CHUNK_OVERHEAD_BYTES) } });
  });

  it("holds a bounded amount for a caller that does not read, drops what an agent sends beyond its window and marks the gap", async () => {
    const { call, nextToAgent, agentSend, hub } = await setup();
    const { it } = call(ADMIN, { id: "web", follow: true });
    const first = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error("expected logRequest");
    const rid = req.value.requestId;
    // An agent ignoring the window (one older than LogCredit): 200 x 64 KiB while the caller reads nothing.
    const chunk = Buffer.alloc(64 * 1024, 120);
    for (let i = 0; i < 200; i++) agentSend({ case: "logChunk", value: { requestId: rid, stream: "stdout", data: chunk } });
    await tick();
    agentSend({ case: "logChunk", value: { requestId: rid, stream: "stdout", data: Buffer.from("after the gap\n") } });
    agentSend({ case: "logChunk", value: { requestId: rid, end: true } });
    // Every chunk reached the route (the end closes it) before the caller reads anything: none was held because the caller made room.
    await vi.waitFor(() => expect(hub.openLogCount).toBe(0));
    const got: TailLogsResponse[] = [];
    for (let r = await first; !r.done; r = await it.next()) got.push(r.value);
    const marker = got.findIndex((r) => r.droppedChunks > 0n);
    expect(marker).toBeGreaterThan(0);
    const before = got.slice(0, marker).reduce((n, r) => n + r.data.length, 0);
    // What was held for the caller: the window and a chunk of overshoot, not 12.5 MiB.
    expect(before).toBeLessThanOrEqual(2 * LOG_WINDOW_BYTES);
    expect(got[marker]!.data.length).toBe(0);
    expect(Number(got[marker]!.droppedBytes)).toBe(200 * chunk.length - before);
    expect(Number(got[marker]!.droppedChunks)).toBe(200 - marker);
    expect(got.slice(marker + 1).map((r) => Buffer.from(r.data).toString())).toEqual(["after the gap\n"]);
    expect(hub.openLogCount).toBe(0);
  });

  it("tells the agent to stop when the caller cancels", async () => {
    const { call, nextToAgent, agentSend, hub } = await setup();
    const { it, cancel } = call(ADMIN, { id: "srv_web", follow: true });
    const pending = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error(`expected logRequest, got ${req.case}`);
    agentSend({ case: "logChunk", value: { requestId: req.value.requestId } });
    await tick();
    cancel();
    expect(text(await pending)).toBe("<end>");
    const c = await nextToAgent();
    expect(c).toMatchObject({ case: "logCancel", value: { requestId: req.value.requestId } });
    expect(hub.openLogCount).toBe(0);
  });

  it("tells the agent to stop when the caller goes away while a response waits to be written", async () => {
    const { call, nextToAgent, agentSend, hub } = await setup();
    const { it, cancel } = call(ADMIN, { id: "web", follow: true });
    const first = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error("expected logRequest");
    agentSend({ case: "logChunk", value: { requestId: req.value.requestId, stream: "stdout", data: Buffer.from("hi\n") } });
    // The handler is suspended in `yield`, as while connect-node waits for a caller's HTTP/2
    // window; connect-node then never resumes it, so the cancel must not wait for that.
    expect(text(await first)).toBe("stdout:hi\n");
    cancel();
    expect(await nextToAgent()).toMatchObject({ case: "logCancel", value: { requestId: req.value.requestId } });
    expect(hub.openLogCount).toBe(0);
  });

  it("answers NotFound for a server of another project, without asking any agent", async () => {
    const { call, hub } = await setup();
    const err = await call(TEAM_B, { id: "srv_web" }).it.next().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Code.NotFound });
    const byName = await call(TEAM_B, { id: "web" }).it.next().catch((e: unknown) => e);
    expect(byName).toMatchObject({ code: Code.NotFound });
    expect(hub.openLogCount).toBe(0);
  });

  it("turns the agent's failure into a precise error", async () => {
    const { call, nextToAgent, agentSend } = await setup();
    const { it } = call(ADMIN, { id: "web" });
    const first = it.next().catch((e: unknown) => e);
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error("expected logRequest");
    agentSend({ case: "logChunk", value: { requestId: req.value.requestId, end: true, reason: "ContainerMissing", error: "server srv_web has no container on this host" } });
    expect(await first).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringContaining("start it first") });
  });

  it("ends with Unavailable when the agent disconnects mid-stream", async () => {
    const { call, nextToAgent, agentSend, input, hub } = await setup();
    const { it } = call(ADMIN, { id: "web", follow: true });
    const first = it.next();
    const req = await nextToAgent();
    if (req.case !== "logRequest") throw new Error("expected logRequest");
    agentSend({ case: "logChunk", value: { requestId: req.value.requestId, stream: "stdout", data: Buffer.from("hi\n") } });
    expect(text(await first)).toBe("stdout:hi\n");
    input.close();
    const err = await it.next().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Code.Unavailable });
    expect(hub.openLogCount).toBe(0);
  });

  it("gives up with Unavailable when the agent never opens the stream", async () => {
    const { call, nextToAgent } = await setup(50);
    const { it } = call(ADMIN, { id: "web" });
    const first = it.next().catch((e: unknown) => e);
    await nextToAgent();
    expect(await first).toMatchObject({ code: Code.Unavailable });
  });

  it("answers Unavailable for a server on an offline host", async () => {
    const { call, input, hub } = await setup();
    input.close();
    await vi.waitFor(() => expect(hub.isConnected("host_aaaa")).toBe(false));
    expect(await call(ADMIN, { id: "web" }).it.next().catch((e: unknown) => e)).toMatchObject({ code: Code.Unavailable });
  });
});

describe("what the agent reports about its host", () => {
  it("keeps DockerReachable as a condition with its transition time and records each change once", async () => {
    const { store, hub, agentSend, ledger } = await setup();
    const cond = async () => hostToProto((await store.getHost("host_aaaa"))!, hub.isConnected("host_aaaa"), 0).conditions.find((c) => c.type === "DockerReachable");
    expect(await cond()).toMatchObject({ status: ConditionStatus.TRUE, reason: "Reachable" });
    agentSend({ case: "heartbeat", value: { dockerReachable: false } });
    agentSend({ case: "heartbeat", value: { dockerReachable: false } });
    await vi.waitFor(async () => expect(await cond()).toMatchObject({ status: ConditionStatus.FALSE, reason: "Unreachable" }));
    expect(hostToProto((await store.getHost("host_aaaa"))!, true, 0).dockerReachable).toBe(false);
    // One host's messages are applied in order: once this one is, both unreachable heartbeats were.
    agentSend({ case: "heartbeat", value: { dockerReachable: true } });
    await vi.waitFor(async () => expect(await cond()).toMatchObject({ status: ConditionStatus.TRUE }));
    expect((await ledger.list({})).filter((e) => e.type.startsWith("host.docker_")).map((e) => e.type)).toEqual(["host.docker_unreachable", "host.docker_reachable"]);
    // An empty heartbeat (sent on a state change) does not wipe the disk fact.
    agentSend({ case: "heartbeat", value: { dataRootFreeBytes: 1234n, dockerReachable: true } });
    agentSend({ case: "heartbeat", value: { dockerReachable: true } });
    // A marker after them: once Docker shows unreachable, the empty heartbeat before it was applied.
    agentSend({ case: "heartbeat", value: { dockerReachable: false } });
    await vi.waitFor(async () => expect(await cond()).toMatchObject({ status: ConditionStatus.FALSE }));
    expect((await store.getHost("host_aaaa"))!.facts.dataRootFreeBytes).toBe(1234);
  });

  it("records image pull progress as throttled ledger events, always the last one", async () => {
    const { agentSend, ledger, store } = await setup();
    for (let i = 0; i < 20; i++) agentSend({ case: "pullProgress", value: { serverId: "srv_web", commandId: "cmd_1", image: "busybox", status: `layer ${i}` } });
    agentSend({ case: "pullProgress", value: { serverId: "srv_web", commandId: "cmd_1", image: "busybox", status: "pulled image busybox", done: true } });
    // Another host's server is not this agent's to report on.
    agentSend({ case: "pullProgress", value: { serverId: "srv_other", commandId: "cmd_2", image: "x", status: "s" } });
    // A marker: one host's messages are applied in order, so once this one is, every report above was handled.
    agentSend({ case: "heartbeat", value: { dockerReachable: false } });
    await vi.waitFor(async () => expect((await store.getHost("host_aaaa"))?.facts.dockerReachable).toBe(false));
    const pulls = (await ledger.list({})).filter((e) => e.type === "image.pull_progress");
    expect(pulls.map((e) => e.message)).toEqual(["busybox: layer 0", "busybox: pulled image busybox"]);
    expect(pulls[1]).toMatchObject({ serverId: "srv_web", reason: "PullFinished", correlationId: "cmd_1", actor: "agent" });
  });
});
