import { afterEach, describe, expect, it } from "vitest";
import { create, toJsonString } from "@bufbuild/protobuf";
import { pino } from "pino";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  CommandKind,
  ContainerInfoSchema,
  DataPolicy,
  type Command,
  type ContainerInfo,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";
import {
  ConditionStatus,
  DesiredState,
  Phase,
  ServerStatusSchema,
  type ServerStatus,
} from "@berth/proto/berth/v1/server_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub, type AgentSession } from "../link/agent-hub.js";
import { ManagerMetrics } from "../metrics/metrics.js";
import type { Store, WriteOp } from "../store/store.js";
import type { DataDirRecord, ServerRecord } from "../domain/records.js";
import { newServer, testStore } from "../../testing/store.js";
import { COMMAND_DEADLINE_MS } from "./plan.js";
import { noteCommandFinished, Reconciler, type ContainerLogDefaults } from "./reconciler.js";
import { specHash } from "./spec-hash.js";

const HOST = "host_aaaaaaaaaaaa";
const SERVER = "srv_bbbbbbbbbbbb";
const T0 = 1_700_000_000_000;

interface Harness {
  store: Store;
  hub: AgentHub;
  rec: Reconciler;
  managerId: string;
  sent: ManagerMessage[];
  changed: string[];
  clock: { now: number };
  server: ServerRecord;
  session: AgentSession | undefined;
}

const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) {
    await h.rec.stop();
    await h.store.close();
  }
});

async function setup(
  opts: {
    session?: "ready" | "not-ready" | "none";
    desired?: DesiredState;
    spec?: { capAdd?: string[]; logMaxSizeBytes?: number; logMaxFiles?: number };
    containerLogs?: ContainerLogDefaults;
    /** Wraps the store the reconciler sees (to act between its reads and its commit). */
    wrap?: (c: Store) => Store;
  } = {},
): Promise<Harness> {
  const store = await testStore();
  const hub = new AgentHub();
  const sent: ManagerMessage[] = [];
  const changed: string[] = [];
  const clock = { now: T0 };
  const managerId = await store.clusterId();
  await store.commit([{ op: "host.insert", id: HOST, name: "host-a", secretHash: "x".repeat(64), createdAt: T0 }]);
  // What WatchServers hears: every committed write of a server record.
  store.onCommit((c) => changed.push(...c.serverIds));
  let session: AgentSession | undefined;
  const mode = opts.session ?? "ready";
  if (mode !== "none") {
    session = { hostId: HOST, ready: mode === "ready", lastSeen: T0, send: (m) => sent.push(m), close() {} };
    hub.attach(session);
  }
  const server: ServerRecord = {
    ...newServer({
      id: SERVER,
      hostId: HOST,
      name: "mc",
      at: T0,
      spec: {
        image: "itzg/minecraft-server:latest",
        env: { EULA: "TRUE" },
        ports: [{ hostPort: 25565, containerPort: 25565 }],
        dataMountPath: "/data",
        desiredState: opts.desired ?? DesiredState.RUNNING,
        ...opts.spec,
      },
    }),
    version: 1,
  };
  await store.commit([{ op: "server.insert", server }]);
  changed.length = 0;
  const rec = new Reconciler({
    store: opts.wrap ? opts.wrap(store) : store,
    hub,
    log: pino({ level: "silent" }),
    managerId,
    now: () => clock.now,
    ...(opts.containerLogs ? { containerLogs: opts.containerLogs } : {}),
  });
  const h = { store, hub, rec, managerId, sent, changed, clock, server, session };
  open.push(h);
  return h;
}

/** What an agent's reports write (agent-service's batches, reduced to the rows). */
async function write(h: Harness, ...ops: WriteOp[]): Promise<void> {
  await h.store.commit(ops);
}
const observe = (h: Harness, container: ContainerInfo, at = h.clock.now): WriteOp => ({ op: "container.upsert", hostId: HOST, container, at });
const dataDir = (d: DataDirRecord): WriteOp => ({ op: "dataDir.upsert", dataDir: d });
const finish = (id: string, at: number, state: "succeeded" | "failed" = "succeeded"): WriteOp => ({ op: "command.finish", id, state, at, reason: "", message: "" });
const specWrite = (s: ServerRecord, change: { updatedAt: number; deletedAt?: number | null }): WriteOp => ({
  op: "server.spec",
  id: s.id,
  spec: s.spec,
  generation: s.generation,
  hostId: s.hostId,
  deletedAt: change.deletedAt === undefined ? s.deletedAt : change.deletedAt,
  updatedAt: change.updatedAt,
});

function sentCommands(h: Harness): Command[] {
  return h.sent.flatMap((m) => (m.body.case === "command" ? [m.body.value] : []));
}

async function statusJson(h: Harness): Promise<string> {
  return toJsonString(ServerStatusSchema, await status(h));
}

async function status(h: Harness): Promise<ServerStatus> {
  return (await h.store.getServer(SERVER))!.status;
}

function condition(s: ServerStatus, type: string) {
  const c = s.conditions.find((x) => x.type === type);
  if (!c) throw new Error(`no condition ${type}`);
  return c;
}

/** The ledger, oldest first: every event, or the server's. */
async function allEvents(h: Harness, serverId?: string) {
  return h.store.readForward({ project: null, ...(serverId ? { serverId } : {}), afterId: 0, upToId: await h.store.lastEventId(), limit: 10_000 });
}

function events(h: Harness) {
  return allEvents(h, SERVER);
}

function runningContainer(h: Harness, managerId = h.managerId): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: "d".repeat(64),
    name: "berth-mc-bbbbbbbbbbbb",
    image: h.server.spec.image,
    state: "running",
    labels: {
      "berth.manager": managerId,
      "berth.server": SERVER,
      "berth.spec-hash": specHash(h.server.spec),
      "berth.generation": "1",
    },
  });
}

describe("Reconciler", () => {
  it("sends the capabilities given back and the log rotation: the spec's, else the manager's defaults", async () => {
    const byDefault = await setup();
    await byDefault.rec.reconcile(SERVER, "created");
    expect(sentCommands(byDefault)[0]!.container).toMatchObject({ capAdd: [], logMaxSizeBytes: 10 * 1024 * 1024, logMaxFiles: 3 });

    const configured = await setup({ containerLogs: { maxSizeBytes: 1 << 20, maxFiles: 2 } });
    await configured.rec.reconcile(SERVER, "created");
    expect(sentCommands(configured)[0]!.container).toMatchObject({ logMaxSizeBytes: 1 << 20, logMaxFiles: 2 });

    const own = await setup({ spec: { capAdd: ["NET_RAW"], logMaxSizeBytes: 65536, logMaxFiles: 5 }, containerLogs: { maxSizeBytes: 1 << 20, maxFiles: 2 } });
    await own.rec.reconcile(SERVER, "created");
    expect(sentCommands(own)[0]!.container).toMatchObject({ capAdd: ["NET_RAW"], logMaxSizeBytes: 65536, logMaxFiles: 5 });
  });

  it("issues one command, is idempotent, and reaches Running from observations", async () => {
    const h = await setup();

    // First run: one ensure-running, stored as open and marked sent.
    await h.rec.reconcile(SERVER, "created");
    const cmds = sentCommands(h);
    expect(cmds).toHaveLength(1);
    const cmd = cmds[0]!;
    expect(CommandKind[cmd.kind]).toBe("ENSURE_RUNNING");
    expect(cmd.serverId).toBe(SERVER);
    expect(cmd.dataPolicy).toBe(DataPolicy.CREATE);
    expect(cmd.container?.labels).toEqual({
      "berth.manager": h.managerId,
      "berth.server": SERVER,
      "berth.generation": "1",
      "berth.spec-hash": specHash(h.server.spec),
    });
    expect(cmd.container?.specHash).toBe(specHash(h.server.spec));
    const openCmd = await h.store.openCommandForServer(SERVER);
    expect(openCmd?.id).toBe(cmd.id);
    expect(openCmd?.state).toBe("sent");
    expect(openCmd?.deadlineAt).toBe(T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING]);
    expect(Phase[(await status(h)).phase]).toBe("CREATING");
    expect((await events(h)).map((e) => e.type).sort()).toEqual(["command.issued", "phase.changed"]);
    expect(h.changed).toEqual([SERVER]);

    // Second run with nothing new: nothing at all changes.
    const evCount = (await events(h)).length;
    const before = await statusJson(h);
    h.clock.now += 1_000;
    const r2 = await h.rec.reconcile(SERVER, "resync");
    expect(sentCommands(h)).toHaveLength(1);
    expect(await events(h)).toHaveLength(evCount);
    expect(await statusJson(h)).toBe(before);
    expect((await h.store.openCommandForServer(SERVER))?.id).toBe(cmd.id);
    expect(h.changed).toEqual([SERVER]);
    expect(r2.requeueAfterMs).toBe(T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING] - h.clock.now);

    // The agent reports the running container, the data directory and the result.
    h.clock.now += 5_000;
    // One batch, as agent-service writes a result; it rejects if the command were no longer open.
    await write(h, observe(h, runningContainer(h)), dataDir({ hostId: HOST, serverId: SERVER, present: true, sizeBytes: 4096, checkedAt: h.clock.now }), finish(cmd.id, h.clock.now));
    await h.rec.reconcile(SERVER, "command result");
    const s = await status(h);
    expect(Phase[s.phase]).toBe("RUNNING");
    expect(s.reason).toBe("Running");
    expect(s.containerId).toBe("d".repeat(64));
    expect(s.containerState).toBe("running");
    expect(s.dataExists).toBe(true);
    expect(s.dataSizeBytes).toBe(4096n);
    expect(s.observedGeneration).toBe(1n);
    expect(s.lastChangeCause).toBe("command result");
    expect(condition(s, "Ready").status).toBe(ConditionStatus.TRUE);
    expect(condition(s, "SpecApplied").status).toBe(ConditionStatus.TRUE);
    expect(condition(s, "DataPresent").status).toBe(ConditionStatus.TRUE);
    expect((await h.store.getServer(SERVER))!.dataInitialized).toBe(true);
    expect(sentCommands(h)).toHaveLength(1);
    const newEvents = (await events(h)).slice(evCount);
    expect(newEvents.map((e) => e.type)).toEqual(["phase.changed"]);
    expect(JSON.parse(newEvents[0]!.payloadJson)).toEqual({ from: "CREATING", to: "RUNNING", cause: "command result" });

    // Again: level-based, nothing new → nothing written.
    const evCount2 = (await events(h)).length;
    const running = await statusJson(h);
    const changedCount = h.changed.length;
    h.clock.now += 60_000;
    expect(await h.rec.reconcile(SERVER, "resync")).toEqual({});
    expect(await events(h)).toHaveLength(evCount2);
    expect(await statusJson(h)).toBe(running);
    expect(sentCommands(h)).toHaveLength(1);
    expect(h.changed).toHaveLength(changedCount);
  });

  it("keeps a condition's transition time when its status does not change", async () => {
    const h = await setup();
    await h.rec.reconcile(SERVER);
    const hc1 = condition(await status(h), "HostConnected").lastTransitionTime;
    h.clock.now += 5_000;
    await write(h, observe(h, runningContainer(h)), finish(sentCommands(h)[0]!.id, h.clock.now));
    await h.rec.reconcile(SERVER);
    const s = await status(h);
    expect(condition(s, "HostConnected").lastTransitionTime).toEqual(hc1);
    expect(Number(condition(s, "Ready").lastTransitionTime!.seconds)).toBe(Math.floor(h.clock.now / 1000));
  });

  it("reports Docker's start time of the running container (the dashboard's uptime), writes it again only when it changes, and drops it once the container is down", async () => {
    const h = await setup();
    await h.rec.reconcile(SERVER);
    const started = (ms: number) => create(ContainerInfoSchema, { ...runningContainer(h), startedTime: timestampFromMs(ms) });
    h.clock.now += 5_000;
    await write(h, observe(h, started(T0 + 4_000)), finish(sentCommands(h)[0]!.id, h.clock.now));
    await h.rec.reconcile(SERVER);
    expect(timestampMs((await status(h)).startedTime!)).toBe(T0 + 4_000);
    const before = await statusJson(h);
    const changedCount = h.changed.length;
    h.clock.now += 60_000;
    await write(h, observe(h, started(T0 + 4_000)));
    await h.rec.reconcile(SERVER, "resync");
    expect(await statusJson(h)).toBe(before);
    expect(h.changed.length).toBe(changedCount); // no status write
    // Restarted by Docker behind berth's back (still running): a new start time.
    await write(h, observe(h, started(T0 + 70_000)));
    await h.rec.reconcile(SERVER, "inventory");
    expect(timestampMs((await status(h)).startedTime!)).toBe(T0 + 70_000);
    // Down: no start time to count from.
    await write(h, observe(h, create(ContainerInfoSchema, { ...started(T0 + 70_000), state: "exited" })));
    await h.rec.reconcile(SERVER, "inventory");
    expect((await status(h)).startedTime).toBeUndefined();
  });

  it.each(["none", "not-ready"] as const)("host session %s → Unknown and no command", async (mode) => {
    const h = await setup({ session: mode });
    await h.rec.reconcile(SERVER, "created");
    expect(h.sent).toHaveLength(0);
    expect(await h.store.openCommandForServer(SERVER)).toBeUndefined();
    const s = await status(h);
    expect(Phase[s.phase]).toBe("UNKNOWN");
    expect(condition(s, "HostConnected").status).toBe(ConditionStatus.FALSE);
    expect((await events(h)).map((e) => e.type)).toEqual(["phase.changed"]);
    // And again: still nothing.
    await h.rec.reconcile(SERVER, "resync");
    expect(await events(h)).toHaveLength(1);
    expect(await h.store.openCommandForServer(SERVER)).toBeUndefined();
  });

  it("a host that becomes ready gets the command", async () => {
    const h = await setup({ session: "not-ready" });
    await h.rec.reconcile(SERVER);
    expect(h.sent).toHaveLength(0);
    h.session!.ready = true;
    await h.rec.reconcile(SERVER, "host connected");
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["ENSURE_RUNNING"]);
  });

  it("expires a command past its deadline: Failed/StartTimeout, and it stays that way", async () => {
    const h = await setup();
    await h.rec.reconcile(SERVER);
    const cmd = sentCommands(h)[0]!;
    const deadline = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING];

    // 1 ms before the deadline: still waiting.
    h.clock.now = deadline - 1;
    const evCount = (await events(h)).length;
    expect(await h.rec.reconcile(SERVER)).toEqual({ requeueAfterMs: 1 });
    expect((await h.store.getCommand(cmd.id))?.state).toBe("sent");
    expect(await events(h)).toHaveLength(evCount);

    // Past it: expired, with an event, and the server failed.
    h.clock.now = deadline + 1;
    expect(await h.rec.reconcile(SERVER, "deadline")).toEqual({ requeueAfterMs: 0 });
    const expired = (await h.store.getCommand(cmd.id))!;
    expect(expired.state).toBe("expired");
    expect(expired.finishedAt).toBe(deadline + 1);
    expect(await h.store.openCommandForServer(SERVER)).toBeUndefined();
    const ev = (await events(h)).slice(evCount);
    const exp = ev.find((e) => e.type === "command.expired");
    expect(exp?.correlationId).toBe(cmd.id);
    expect(exp?.reason).toBe("StartTimeout");
    expect(ev.filter((e) => e.type === "phase.changed")).toHaveLength(1);
    let s = await status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(sentCommands(h)).toHaveLength(1);

    // The queue reconciles again at once (requeueAfterMs 0): the failure stands, with the
    // same reason and message and no new event (this run may still record that the
    // generation is now observed: the expiry run was not a settled one).
    const evCount2 = (await events(h)).length;
    const failedMessage = s.message;
    h.clock.now += 10;
    expect(await h.rec.reconcile(SERVER, "deadline")).toEqual({});
    s = await status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(s.message).toBe(failedMessage);
    expect(await events(h)).toHaveLength(evCount2);
    expect(sentCommands(h)).toHaveLength(1);
    // And from then on it is stable: nothing written at all.
    const failed = await statusJson(h);
    const changedCount = h.changed.length;
    h.clock.now += 60_000;
    await h.rec.reconcile(SERVER, "resync");
    expect(await statusJson(h)).toBe(failed);
    expect(await events(h)).toHaveLength(evCount2);
    expect(h.changed).toHaveLength(changedCount);

    // The operator acts again (start): retried with a new command.
    h.clock.now += 1_000;
    const srv = (await h.store.getServer(SERVER))!;
    await write(h, specWrite(srv, { updatedAt: h.clock.now }));
    await h.rec.reconcile(SERVER, "start requested");
    const cmds = sentCommands(h);
    expect(cmds).toHaveLength(2);
    expect(cmds[1]!.id).not.toBe(cmd.id);
    expect(Phase[(await status(h)).phase]).toBe("CREATING");
  });

  it("its command events carry the command to the metrics: issued and expired counted by kind, timed from the issue, without reading the command", async () => {
    const h = await setup();
    const ledger = new Ledger(h.store);
    const unfollow = ledger.follow(h.store);
    const metrics = new ManagerMetrics({ hosts: async () => [], serverCounts: async () => [], firingAlerts: async () => [], queueDepth: () => 0, now: () => h.clock.now }, "test");
    ledger.subscribe(metrics.onEvent);
    try {
      await h.rec.reconcile(SERVER, "created");
      const deadline = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING];
      h.clock.now = deadline + 1;
      await h.rec.reconcile(SERVER, "deadline");
      expect((await events(h)).map((e) => e.type)).toContain("command.expired");
      const body = (await metrics.render()).body;
      expect(body).toContain('berth_commands_issued_total{kind="ensure-running"} 1\n');
      expect(body).toContain('berth_commands_finished_total{kind="ensure-running",outcome="expired"} 1\n');
      expect(body).toContain(`berth_command_duration_seconds_sum{kind="ensure-running",outcome="expired"} ${(deadline + 1 - T0) / 1000}\n`);
    } finally {
      unfollow();
    }
  });

  it("a command that expires while the host is offline leaves Failed/StartTimeout once it is back", async () => {
    const h = await setup();
    await h.rec.reconcile(SERVER);
    const cmd = sentCommands(h)[0]!;
    h.hub.detach(h.session!);
    h.clock.now = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING] + 1;
    await h.rec.reconcile(SERVER, "timer");
    expect((await h.store.getCommand(cmd.id))?.state).toBe("expired");
    expect(Phase[(await status(h)).phase]).toBe("UNKNOWN");
    const back = { ...h.session!, ready: true };
    h.hub.attach(back);
    await h.rec.reconcile(SERVER, "host connected");
    const s = await status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(sentCommands(h)).toHaveLength(1);
    expect(s.lastKnownPhase).toBe(Phase.UNSPECIFIED); // back: nothing "last seen" any more

    // Away again: Unknown keeps what was seen before, through every reconcile while away.
    h.hub.detach(back);
    await h.rec.reconcile(SERVER, "host disconnected");
    await h.rec.reconcile(SERVER, "resync");
    expect(await status(h)).toMatchObject({ phase: Phase.UNKNOWN, lastKnownPhase: Phase.FAILED, lastKnownReason: "StartTimeout" });
  });

  it("ignores containers labelled with another manager's id", async () => {
    const h = await setup();
    await write(h, observe(h, runningContainer(h, "mgr_someoneelse"), T0));
    // The store does associate it with the server: the reconciler must filter it out.
    expect(await h.store.containersForServer(HOST, SERVER)).toHaveLength(1);
    await h.rec.reconcile(SERVER);
    const s = await status(h);
    expect(Phase[s.phase]).toBe("CREATING");
    expect(s.containerId).toBe("");
    expect(condition(s, "ContainerExists").status).toBe(ConditionStatus.FALSE);
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["ENSURE_RUNNING"]);
  });

  it("uses containers labelled with its own manager id (control for the test above)", async () => {
    const h = await setup();
    await write(h, observe(h, runningContainer(h), T0));
    await h.rec.reconcile(SERVER);
    expect(Phase[(await status(h)).phase]).toBe("RUNNING");
    expect(h.sent).toHaveLength(0);
  });

  it("does nothing for an unknown server", async () => {
    const h = await setup();
    expect(await h.rec.reconcile("srv_doesnotexist")).toEqual({});
    expect(h.sent).toHaveLength(0);
    expect(await allEvents(h)).toHaveLength(0);
  });

  it("a soft-deleted server's container is removed, then it rests as Deleted", async () => {
    const h = await setup();
    await write(h, observe(h, runningContainer(h), T0));
    await h.rec.reconcile(SERVER);
    h.clock.now += 1_000;
    const srv = (await h.store.getServer(SERVER))!;
    await write(h, specWrite(srv, { updatedAt: h.clock.now, deletedAt: h.clock.now }));
    await h.rec.reconcile(SERVER, "deleted");
    const cmds = sentCommands(h);
    expect(cmds.map((c) => CommandKind[c.kind])).toEqual(["ENSURE_REMOVED"]);
    expect(Phase[(await status(h)).phase]).toBe("DELETED");
    await write(h, { op: "container.remove", hostId: HOST, containerId: "d".repeat(64) }, finish(cmds[0]!.id, h.clock.now));
    await h.rec.reconcile(SERVER, "command result");
    const s = await status(h);
    expect(Phase[s.phase]).toBe("DELETED");
    expect(s.reason).toBe("Deleted");
    expect(sentCommands(h)).toHaveLength(1);
  });
});

/** A store whose commits run `before` first (once armed): another writer acting between a reconcile's reads and its commit. */
function racing(outcomes: string[]): { wrap: (c: Store) => Store; arm: (before: () => Promise<void>) => void } {
  let before: (() => Promise<void>) | undefined;
  return {
    arm: (fn) => {
      before = fn;
    },
    wrap: (c) =>
      new Proxy(c, {
        get(target, key) {
          if (key === "commit") {
            return async (ops: readonly WriteOp[]) => {
              const run = before;
              before = undefined;
              if (run) await run();
              try {
                const r = await target.commit(ops);
                outcomes.push("committed");
                return r;
              } catch (err) {
                outcomes.push(`refused: ${(err as Error).name}`);
                throw err;
              }
            };
          }
          const v = Reflect.get(target, key, target) as unknown;
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
  };
}

describe("Reconciler against concurrent writers", () => {
  it("an agent result finishing the in-flight command between a reconcile's reads and its commit refuses that commit; the server is reconciled again; one command was ever open", async () => {
    const outcomes: string[] = [];
    const race = racing(outcomes);
    const h = await setup({ wrap: race.wrap });
    let maxOpen = 0;
    // After every commit, how many commands the host has open.
    const counted: Promise<void>[] = [];
    h.store.onCommit(() => {
      counted.push(h.store.openCommandsForHost(HOST).then((l) => void (maxOpen = Math.max(maxOpen, l.length))));
    });
    h.rec.enqueue(SERVER, "created");
    await h.rec.queue.idle();
    const cmd = sentCommands(h)[0]!;
    expect((await h.store.getCommand(cmd.id))?.state).toBe("sent");

    // Past the deadline: the next reconcile reads the command still open and decides to expire it.
    // Its result arrives while that reconcile is between its reads and its commit.
    h.clock.now = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING] + 1;
    outcomes.length = 0;
    race.arm(async () => {
      await write(h, observe(h, runningContainer(h)), finish(cmd.id, h.clock.now), { op: "event.append", event: { type: "command.succeeded", serverId: SERVER, correlationId: cmd.id }, at: h.clock.now });
      h.rec.enqueue(SERVER, "ENSURE_RUNNING succeeded");
    });
    h.rec.enqueue(SERVER, "deadline");
    await h.rec.queue.idle();

    // The expiry was refused whole (nothing of it written), and the next run saw the result.
    expect(outcomes[0]).toBe("refused: ConflictError");
    expect(outcomes.slice(1)).toContain("committed");
    expect((await h.store.getCommand(cmd.id))?.state).toBe("succeeded");
    expect((await events(h)).map((e) => e.type)).not.toContain("command.expired");
    expect(Phase[(await status(h)).phase]).toBe("RUNNING");
    expect((await events(h)).filter((e) => e.type === "command.issued")).toHaveLength(1);
    expect(sentCommands(h)).toHaveLength(1);
    await Promise.all(counted);
    expect(maxOpen).toBe(1);
    expect(await h.store.openCommandForServer(SERVER)).toBeUndefined();
  });

  it("an API write between a reconcile's reads and its commit refuses the commit (version), and the server is reconciled again at once, not after a backoff", async () => {
    const outcomes: string[] = [];
    const race = racing(outcomes);
    const h = await setup({ wrap: race.wrap });
    await write(h, observe(h, runningContainer(h), T0));
    const errors: unknown[] = [];
    (h.rec as unknown as { deps: { log: { error: (o: unknown) => void } } }).deps.log.error = (o) => errors.push(o);
    // RestartServer lands while the first reconcile is about to write Running.
    race.arm(async () => {
      const s = (await h.store.getServer(SERVER))!;
      await write(h, { op: "server.lifecycle", id: SERVER, lifecycle: { ...s.lifecycle, restartRequestedAt: h.clock.now }, expectVersion: s.version });
    });
    h.rec.enqueue(SERVER, "inventory");
    await h.rec.queue.idle();
    expect(outcomes[0]).toBe("refused: ConflictError");
    expect(errors).toEqual([]);
    // Decided again from the new version: the restart, at once.
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["RESTART"]);
    expect((await status(h)).reason).toBe("Restarting");
  });

  it("a successful restart satisfies the request in the same batch as the next decision: no second restart", async () => {
    const h = await setup();
    await write(h, observe(h, runningContainer(h), T0));
    await h.rec.reconcile(SERVER, "inventory");
    h.clock.now += 1_000;
    const s = (await h.store.getServer(SERVER))!;
    await write(h, { op: "server.lifecycle", id: SERVER, lifecycle: { ...s.lifecycle, restartRequestedAt: h.clock.now } });
    h.clock.now += 1;
    await h.rec.reconcile(SERVER, "restart requested");
    const restart = sentCommands(h)[0]!;
    expect(CommandKind[restart.kind]).toBe("RESTART");
    h.clock.now += 2_000;
    await write(h, observe(h, runningContainer(h)), finish(restart.id, h.clock.now));
    await h.rec.reconcile(SERVER, "RESTART succeeded");
    expect((await h.store.getServer(SERVER))!.lifecycle.restartDoneAt).toBe((await h.store.getCommand(restart.id))!.createdAt);
    expect(Phase[(await status(h)).phase]).toBe("RUNNING");
    const writes = h.changed.length;
    h.clock.now += 60_000;
    await h.rec.reconcile(SERVER, "resync");
    expect(sentCommands(h)).toHaveLength(1);
    expect(h.changed).toHaveLength(writes);
  });

  it("dropRecord removes the record with its event once; a second drop answers false and records nothing", async () => {
    const h = await setup();
    const why = { actor: "user:admin", reason: "Purged", message: "purged" };
    expect(await h.rec.dropRecord(h.server, why, "purge")).toBe(true);
    expect(await h.store.getServer(SERVER)).toBeUndefined();
    expect((await events(h)).map((e) => e.type)).toEqual(["server.purged"]);
    expect(await h.rec.dropRecord(h.server, why, "purge")).toBe(false);
    expect(await events(h)).toHaveLength(1);
  });
});

describe("noteCommandFinished", () => {
  const cmd = (kind: CommandKind, recreate = false) => ({ kind, recreate });
  it.each([
    { name: "a start satisfies earlier restart requests", lc: { restartRequestedAt: 5 }, c: cmd(CommandKind.ENSURE_RUNNING), at: 10, want: { restartRequestedAt: 5, restartDoneAt: 10 } },
    { name: "a restart too", lc: {}, c: cmd(CommandKind.RESTART), at: 10, want: { restartDoneAt: 10 } },
    { name: "an older command changes nothing", lc: { restartDoneAt: 20 }, c: cmd(CommandKind.RESTART), at: 10, want: undefined },
    { name: "a recreating command satisfies rebuilds", lc: {}, c: cmd(CommandKind.ENSURE_CONTAINER, true), at: 10, want: { rebuildDoneAt: 10 } },
    { name: "a stop satisfies nothing", lc: { restartRequestedAt: 5 }, c: cmd(CommandKind.ENSURE_STOPPED), at: 10, want: undefined },
  ])("$name", ({ lc, c, at, want }) => {
    expect(noteCommandFinished(lc, c, at)).toEqual(want);
  });
});

describe("Reconciler: a command decided without a status change", () => {
  it("is refused when the spec changed between the reads and the commit (version check), and decided again from the new spec", async () => {
    const outcomes: string[] = [];
    const race = racing(outcomes);
    const h = await setup({ wrap: race.wrap });
    // Running on Docker's default bridge: berth moves it onto the project network, keeping it running.
    const onBridge = () => create(ContainerInfoSchema, { ...runningContainer(h), networks: ["bridge"] });
    await write(h, observe(h, onBridge(), T0));
    await h.rec.reconcile(SERVER, "inventory");
    const join = sentCommands(h)[0]!;
    expect(CommandKind[join.kind]).toBe("ENSURE_CONTAINER");
    // Done, yet still seen on the bridge: after the hold the same command is due again, status unchanged.
    h.clock.now += 1_000;
    await write(h, finish(join.id, h.clock.now));
    await h.rec.reconcile(SERVER, "ENSURE_CONTAINER succeeded");
    h.clock.now += 60_000;
    outcomes.length = 0;
    // StopServer lands between that reconcile's reads and its commit.
    race.arm(async () => {
      const s = (await h.store.getServer(SERVER))!;
      await write(h, { op: "server.spec", id: SERVER, spec: { ...s.spec, desiredState: DesiredState.STOPPED }, generation: s.generation + 1, hostId: HOST, deletedAt: null, updatedAt: h.clock.now, expectVersion: s.version });
    });
    h.rec.enqueue(SERVER, "hold over");
    await h.rec.queue.idle();
    expect(outcomes[0]).toBe("refused: ConflictError");
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["ENSURE_CONTAINER", "ENSURE_STOPPED"]);
  });
});
