import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createHandlerContext } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AgentService, CommandKind, CommandSchema, ContainerInfoSchema, EnrollRequestSchema, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { UnauthenticatedError } from "../errors.js";
import { hashSecret } from "../ids.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import { ManagerMetrics } from "../metrics/metrics.js";
import type { CommitResult, Store, WriteOp } from "../store/store.js";
import { addHost, openAgentStream, stubReconciler, type AgentBody } from "../../testing/agent-stream.js";
import { newServer, testStore } from "../../testing/store.js";
import { createAgentService } from "./agent-service.js";

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

/**
 * The store contract with a gate on `commit`: batches `hold` matches wait
 * until `release()`; the batches that reached the database are kept in
 * `applied`, in the order they did.
 */
function gatedContract(inner: Store) {
  let hold: (ops: readonly WriteOp[]) => boolean = () => false;
  let open: () => void = () => {};
  let gate: Promise<void> = Promise.resolve();
  const applied: (readonly WriteOp[])[] = [];
  const held: string[][] = [];
  const contract = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop !== "commit") {
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      }
      return async (ops: readonly WriteOp[]): Promise<CommitResult> => {
        if (hold(ops)) {
          held.push(ops.map((o) => o.op));
          await gate;
        }
        const r = await target.commit(ops);
        applied.push(ops);
        return r;
      };
    },
  });
  return {
    contract,
    applied,
    held,
    /** From now on, batches `match` accepts wait for `release()`. */
    holdWhen(match: (ops: readonly WriteOp[]) => boolean) {
      gate = new Promise((r) => (open = r));
      hold = match;
    },
    release() {
      hold = () => false;
      open();
    },
  };
}

async function setup() {
  const store = await testStore();
  const gated = gatedContract(store);
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const unfollow = ledger.follow(store);
  cleanup.push(async () => {
    unfollow();
    await store.close();
  });
  const service = createAgentService({ store: gated.contract, hub, ledger, reconciler: stubReconciler(), log: createLogger("silent", "test"), managerId: "mgr_test", heartbeatIntervalSeconds: 5 });
  const secrets: Record<string, string> = {};
  for (const id of ["host_aaaa", "host_bbbb"]) secrets[id] = await addHost(store, id);
  /** Opens an agent stream as `hostId` (its welcome not yet read). */
  const connect = async (hostId: string, secret?: string) => openAgentStream(service, hostId, secret ?? secrets[hostId]!);
  /**
   * Sends a heartbeat reporting `freeBytes` as host `hostId`'s agent and waits until it is stored:
   * one host's messages are applied in order, so everything sent before it was handled too.
   */
  const marker = async (stream: { send: (b: AgentBody) => void }, hostId: string, freeBytes: number) => {
    stream.send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: BigInt(freeBytes) } });
    await vi.waitFor(async () => expect((await store.getHost(hostId))?.facts.dataRootFreeBytes).toBe(freeBytes));
  };
  return { store, gated, hub, ledger, service, connect, marker };
}

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));

/**
 * Server srv_aaaaaaaaaaaa on host_aaaa with ENSURE_RUNNING `commandId` open, and host_aaaa's
 * agent connected (its welcome read, an empty inventory sent).
 */
async function openStart(s: Awaited<ReturnType<typeof setup>>, commandId: string) {
  const at = Date.now();
  await s.store.commit([
    { op: "server.insert", server: newServer({ id: "srv_aaaaaaaaaaaa", name: "web", hostId: "host_aaaa", dataInitialized: true, at }) },
    { op: "command.insert", command: create(CommandSchema, { id: commandId, serverId: "srv_aaaaaaaaaaaa", kind: CommandKind.ENSURE_RUNNING }), hostId: "host_aaaa", createdAt: at, deadlineAt: at + 60_000 },
  ]);
  const a = await s.connect("host_aaaa");
  await a.output.next();
  a.send({ case: "inventory", value: { dockerReachable: true } });
  return { a, at };
}

describe("AgentService.Connect", () => {
  it("ignores a command result for another host's command; applies the owner's", async () => {
    const { store, ledger, connect, marker } = await setup();
    const cmd = create(CommandSchema, { id: "cmd_of_b", serverId: "srv_b", kind: CommandKind.ENSURE_RUNNING });
    await store.commit([{ op: "command.insert", command: cmd, hostId: "host_bbbb", createdAt: 1, deadlineAt: Date.now() + 60_000 }]);

    const a = await connect("host_aaaa");
    expect(((await a.output.next()).value as ManagerMessage).body.case).toBe("welcome");
    a.send({ case: "inventory", value: { containers: [], dataDirs: [], dockerReachable: true } });
    a.send({ case: "commandResult", value: { commandId: "cmd_of_b", success: true, message: "forged" } });
    await marker(a, "host_aaaa", 4242);
    expect((await store.getCommand("cmd_of_b"))?.state).toBe("pending");
    expect((await ledger.list({})).some((e) => e.type === "command.succeeded")).toBe(false);

    const b = await connect("host_bbbb");
    await b.output.next();
    b.send({ case: "inventory", value: { containers: [], dataDirs: [], dockerReachable: true } });
    b.send({ case: "commandResult", value: { commandId: "cmd_of_b", success: true, message: "done" } });
    await vi.waitFor(async () => expect((await store.getCommand("cmd_of_b"))?.state).toBe("succeeded"));
    expect((await ledger.list({})).find((e) => e.type === "command.succeeded")).toMatchObject({ hostId: "host_bbbb", actor: "agent" });
    a.close();
    b.close();
  });

  it("a result replayed after it was applied: its observation is stored, the command finishes and is recorded once", async () => {
    const s = await setup();
    const { store, ledger } = s;
    const { a } = await openStart(s, "cmd_run");
    const container = (state: string) => create(ContainerInfoSchema, { id: "c".repeat(64), state, labels: { "berth.server": "srv_aaaaaaaaaaaa", "berth.manager": "mgr_test" } });
    a.send({ case: "commandResult", value: { commandId: "cmd_run", success: true, container: container("running") } });
    // The replay carries a newer observation of the container: stored, nothing else again.
    a.send({ case: "commandResult", value: { commandId: "cmd_run", success: false, reason: "Late", container: container("exited") } });
    await vi.waitFor(async () => expect((await store.containersForServer("host_aaaa", "srv_aaaaaaaaaaaa"))[0]?.state).toBe("exited"));
    expect((await store.getCommand("cmd_run"))?.state).toBe("succeeded");
    expect((await ledger.list({})).filter((e) => e.correlationId === "cmd_run").map((e) => e.type)).toEqual(["command.succeeded"]);
    a.close();
  });

  it("a command result's snapshot taken before the container died, arriving after the die event, does not show it running again", async () => {
    const s = await setup();
    const { store } = s;
    const { a, at } = await openStart(s, "cmd_start");
    const started = timestampFromMs(at - 1_000);
    const container = (state: string) =>
      create(ContainerInfoSchema, { id: "c".repeat(64), state, startedTime: started, ...(state === "exited" ? { finishedTime: timestampFromMs(at - 900), exitCode: 1 } : {}), labels: { "berth.server": "srv_aaaaaaaaaaaa", "berth.manager": "mgr_test" } });
    // The agent's executor started the container and inspected it (running); it crashed at once,
    // and the event queue reported the "die" before the executor sent its result.
    a.send({ case: "containerEvent", value: { action: "die", exitCause: "crash", removed: false, container: container("exited") } });
    a.send({ case: "commandResult", value: { commandId: "cmd_start", success: true, container: container("running") } });
    await vi.waitFor(async () => expect((await store.getCommand("cmd_start"))?.state).toBe("succeeded"));
    expect((await store.containersForServer("host_aaaa", "srv_aaaaaaaaaaaa")).map((c) => c.state)).toEqual(["exited"]);
    a.close();
  });

  it("a result's event carries its command to the metrics: counted by kind and timed from its issue, once, without reading the command", async () => {
    const { store, ledger, connect, marker } = await setup();
    const at = Date.now();
    const createdAt = at - 60_000;
    const metrics = new ManagerMetrics({ hosts: async () => [], serverCounts: async () => [], firingAlerts: async () => [], queueDepth: () => 0, now: () => createdAt + 2_500 }, "test");
    cleanup.push(ledger.subscribe(metrics.onEvent));
    await store.commit([
      { op: "server.insert", server: newServer({ id: "srv_aaaaaaaaaaaa", name: "web", hostId: "host_aaaa", dataInitialized: true, at }) },
      { op: "command.insert", command: create(CommandSchema, { id: "cmd_stop", serverId: "srv_aaaaaaaaaaaa", kind: CommandKind.ENSURE_STOPPED }), hostId: "host_aaaa", createdAt, deadlineAt: at + 60_000 },
    ]);
    const a = await connect("host_aaaa");
    await a.output.next();
    a.send({ case: "inventory", value: { dockerReachable: true } });
    a.send({ case: "commandResult", value: { commandId: "cmd_stop", success: false, reason: "DockerError", message: "no such container" } });
    // A replay after a reconnect records nothing again, so counts nothing again.
    a.send({ case: "commandResult", value: { commandId: "cmd_stop", success: false, reason: "DockerError", message: "no such container" } });
    await marker(a, "host_aaaa", 4242);
    expect((await store.getCommand("cmd_stop"))?.state).toBe("failed");
    expect((await ledger.list({})).filter((e) => e.type === "command.failed")).toHaveLength(1);
    const body = (await metrics.render()).body;
    expect(body).toContain('berth_commands_finished_total{kind="ensure-stopped",outcome="failed"} 1\n');
    expect(body).toContain('berth_command_duration_seconds_sum{kind="ensure-stopped",outcome="failed"} 2.5\n');
    expect(body).toContain('berth_command_duration_seconds_count{kind="ensure-stopped",outcome="failed"} 1\n');
    a.close();
  });

  it("applies one host's messages in order: the next is not applied, nor read, before the previous one's batch committed; other hosts go on", async () => {
    const { store, gated, connect } = await setup();
    const a = await connect("host_aaaa");
    const b = await connect("host_bbbb");
    await a.output.next();
    await b.output.next();
    // Host A's heartbeat commits slowly (a busy database).
    gated.holdWhen((ops) => ops.some((o) => o.op === "host.heartbeat" && o.id === "host_aaaa"));
    a.send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: 111n } });
    a.send({ case: "containerEvent", value: { action: "create", container: { id: "d".repeat(64), state: "created" } } });
    // An agent that keeps sending meanwhile: the manager does not read ahead (the transport holds them).
    for (let i = 0; i < 500; i++) a.send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: BigInt(1000 + i) } });
    b.send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: 222n } });
    // A's first batch reaches the store and is held there (how soon depends on the machine's load:
    // waited for, not assumed after B's), and B is served while it is.
    await vi.waitFor(() => expect(gated.held).toEqual([["host.heartbeat"]]));
    await vi.waitFor(async () => expect((await store.getHost("host_bbbb"))?.facts.dataRootFreeBytes, "host B served meanwhile").toBe(222));
    // Time for a handler that reads ahead or applies out of order to show it.
    await tick(50);
    expect(gated.held).toEqual([["host.heartbeat"]]);
    expect(await store.observedContainer("host_aaaa", "d".repeat(64)), "A's second message waits for its first").toBeUndefined();
    expect(a.unread(), "messages the handler has not taken").toBe(501);

    gated.release();
    // 501 batches, one after another: a round trip each on PostgreSQL.
    await vi.waitFor(() => expect(a.unread()).toBe(0), { timeout: 20_000 });
    await vi.waitFor(async () => expect((await store.getHost("host_aaaa"))?.facts.dataRootFreeBytes).toBe(1499), { timeout: 20_000 });
    expect(await store.observedContainer("host_aaaa", "d".repeat(64))).toBeDefined();
    // In the order sent: the held heartbeat, then the container, then the later heartbeats.
    const ofA = gated.applied.map((ops) => ops[0]!).filter((o) => (o.op === "host.heartbeat" && o.id === "host_aaaa") || o.op === "container.upsert");
    expect(ofA.slice(0, 3).map((o) => (o.op === "host.heartbeat" ? o.facts.dataRootFreeBytes : o.op))).toEqual([111, "container.upsert", 1000]);
    a.close();
    b.close();
  }, 30_000);

  it("the agent goes away while a message commits: the host is marked offline after that message, not before", async () => {
    const { store, ledger, gated, connect } = await setup();
    const a = await connect("host_aaaa");
    await a.output.next();
    a.send({ case: "hello", value: { hostname: "a", dockerReachable: true } });
    a.send({ case: "inventory", value: { dockerReachable: true } });
    // The inventory's batch (which carries a host.heartbeat op too) committed, not only the hello's.
    await vi.waitFor(async () => expect((await ledger.list({})).map((e) => e.type)).toContain("host.connected"));
    gated.holdWhen((ops) => ops.some((o) => o.op === "host.heartbeat"));
    a.send({ case: "heartbeat", value: { dockerReachable: false } });
    await vi.waitFor(() => expect(gated.held).toHaveLength(1));
    // The response side ends (the agent's connection dropped).
    const ended = a.output.return!();
    await tick(30);
    expect((await store.getHost("host_aaaa"))?.online, "not offline while the last message is still committing").toBe(true);
    gated.release();
    await ended;
    await vi.waitFor(async () => expect((await store.getHost("host_aaaa"))?.online).toBe(false));
    const types = (await ledger.list({})).map((e) => e.type);
    expect(types.slice(types.indexOf("host.docker_unreachable"))).toEqual(["host.docker_unreachable", "host.disconnected"]);
  });

  it("refuses a wrong secret and a removed host", async () => {
    const { connect, store } = await setup();
    const wrong = await connect("host_aaaa", "not-the-secret");
    await expect(wrong.output.next()).rejects.toMatchObject({ code: Code.Unauthenticated });
    await store.commit([{ op: "host.remove", id: "host_aaaa", at: 5 }]);
    expect((await store.getHost("host_aaaa"))?.removedAt).toBe(5);
    const removed = await connect("host_aaaa");
    const err = await removed.output.next().then(() => undefined, (e: unknown) => e as ConnectError);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect((err as Error | undefined)?.message).toMatch(/this host was removed from berth/);
  });

  it("ends a live stream with Unauthenticated when the hub revokes the host", async () => {
    const { connect, hub } = await setup();
    const a = await connect("host_aaaa");
    await a.output.next();
    const next = a.output.next();
    hub.disconnect("host_aaaa", "this host was removed", { revoked: true });
    const err = await next.then(() => undefined, (e: unknown) => e as ConnectError);
    expect(err?.code).toBe(Code.Unauthenticated);
    a.close();
  });

  it("a pull progress message cut at 500 code units never splits an emoji: the cut drops the whole pair", async () => {
    const { store, ledger, connect } = await setup();
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_pull", name: "web", hostId: "host_aaaa", dataInitialized: true, at: Date.now() }) }]);
    const a = await connect("host_aaaa");
    await a.output.next();
    // "busybox: " and 490 x's are 499 code units: the 500th is the first half of the emoji.
    const kept = `busybox: ${"x".repeat(490)}`;
    a.send({ case: "pullProgress", value: { serverId: "srv_pull", commandId: "cmd_pull", image: "busybox", status: `${"x".repeat(490)}😀 and more`, done: true } });
    // A message that fits is kept whole, its emoji included.
    a.send({ case: "pullProgress", value: { serverId: "srv_pull", commandId: "cmd_pull", image: "busybox", status: "done 😀", done: true } });
    await vi.waitFor(async () => expect((await ledger.list({})).filter((e) => e.type === "image.pull_progress")).toHaveLength(2));
    const messages = (await ledger.list({})).filter((e) => e.type === "image.pull_progress").map((e) => e.message);
    expect(messages.sort()).toEqual([kept, "busybox: done 😀"].sort());
    a.close();
  });
});

describe("AgentService.Enroll", () => {
  const ctx = () =>
    createHandlerContext({ service: AgentService, method: AgentService.method.enroll, protocolName: "connect", requestMethod: "POST", url: "http://test/berth.v1.AgentService/Enroll" });

  it("two agents racing with one token: one host enrolled, the other told the token was used", async () => {
    const { store, ledger, service } = await setup();
    const at = Date.now();
    await store.commit([{ op: "enrollment.insert", id: "enr_one", tokenHash: hashSecret("enr_secret"), createdAt: at, expiresAt: at + 60_000 }]);
    const hostsBefore = (await store.listHosts()).length;
    const results = await Promise.allSettled(["h1", "h2"].map((hostname) => service.enroll(create(EnrollRequestSchema, { token: "enr_secret", hostname }), ctx())));
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toBeInstanceOf(UnauthenticatedError);
    expect((lost[0]!.reason as Error).message).toBe("this enrollment token was already used; create a new one");
    expect(await store.listHosts()).toHaveLength(hostsBefore + 1);
    expect((await ledger.list({})).filter((e) => e.type === "host.enrolled").map((e) => e.correlationId)).toEqual(["enr_one"]);
  });
});
