import { afterEach, describe, expect, it } from "vitest";
import { create, toJsonString } from "@bufbuild/protobuf";
import { pino } from "pino";
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
  ServerSpecSchema,
  ServerStatusSchema,
  type ServerStatus,
} from "@berth/proto/berth/v1/server_pb.js";
import { AgentHub, type AgentSession } from "../link/agent-hub.js";
import { openDatabase } from "../store/database.js";
import { Store } from "../store/store.js";
import { initialStatus, type ServerRecord } from "../domain/records.js";
import { COMMAND_DEADLINE_MS } from "./plan.js";
import { Reconciler, type ContainerLogDefaults } from "./reconciler.js";
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
afterEach(() => {
  for (const h of open.splice(0)) {
    h.rec.stop();
    h.store.close();
  }
});

function setup(
  opts: { session?: "ready" | "not-ready" | "none"; desired?: DesiredState; spec?: { capAdd?: string[]; logMaxSizeBytes?: number; logMaxFiles?: number }; containerLogs?: ContainerLogDefaults } = {},
): Harness {
  const store = new Store(openDatabase(":memory:"));
  const hub = new AgentHub();
  const sent: ManagerMessage[] = [];
  const changed: string[] = [];
  const clock = { now: T0 };
  const managerId = store.managerId();
  store.insertHost({ id: HOST, name: "host-a", secretHash: "x".repeat(64), createdAt: T0 });
  let session: AgentSession | undefined;
  const mode = opts.session ?? "ready";
  if (mode !== "none") {
    session = { hostId: HOST, ready: mode === "ready", lastSeen: T0, send: (m) => sent.push(m), close() {} };
    hub.attach(session);
  }
  const spec = create(ServerSpecSchema, {
    name: "mc",
    hostId: HOST,
    image: "itzg/minecraft-server:latest",
    env: { EULA: "TRUE" },
    ports: [{ hostPort: 25565, containerPort: 25565 }],
    dataMountPath: "/data",
    desiredState: opts.desired ?? DesiredState.RUNNING,
    ...opts.spec,
  });
  const server: ServerRecord = {
    id: SERVER,
    project: "default",
    name: "mc",
    hostId: HOST,
    generation: 1,
    spec,
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: T0,
    updatedAt: T0,
    deletedAt: null,
    version: 1,
  };
  store.insertServer(server);
  const rec = new Reconciler({
    store,
    hub,
    log: pino({ level: "silent" }),
    managerId,
    now: () => clock.now,
    onServerChanged: (id) => changed.push(id),
    ...(opts.containerLogs ? { containerLogs: opts.containerLogs } : {}),
  });
  const h = { store, hub, rec, managerId, sent, changed, clock, server, session };
  open.push(h);
  return h;
}

function sentCommands(h: Harness): Command[] {
  return h.sent.flatMap((m) => (m.body.case === "command" ? [m.body.value] : []));
}

function statusJson(h: Harness): string {
  return toJsonString(ServerStatusSchema, h.store.getServer(SERVER)!.status);
}

function status(h: Harness): ServerStatus {
  return h.store.getServer(SERVER)!.status;
}

function condition(s: ServerStatus, type: string) {
  const c = s.conditions.find((x) => x.type === type);
  if (!c) throw new Error(`no condition ${type}`);
  return c;
}

function events(h: Harness) {
  return h.store.listEvents({ serverId: SERVER });
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
  it("sends the capabilities given back and the log rotation: the spec's, else the manager's defaults", () => {
    const byDefault = setup();
    byDefault.rec.reconcile(SERVER, "created");
    expect(sentCommands(byDefault)[0]!.container).toMatchObject({ capAdd: [], logMaxSizeBytes: 10 * 1024 * 1024, logMaxFiles: 3 });

    const configured = setup({ containerLogs: { maxSizeBytes: 1 << 20, maxFiles: 2 } });
    configured.rec.reconcile(SERVER, "created");
    expect(sentCommands(configured)[0]!.container).toMatchObject({ logMaxSizeBytes: 1 << 20, logMaxFiles: 2 });

    const own = setup({ spec: { capAdd: ["NET_RAW"], logMaxSizeBytes: 65536, logMaxFiles: 5 }, containerLogs: { maxSizeBytes: 1 << 20, maxFiles: 2 } });
    own.rec.reconcile(SERVER, "created");
    expect(sentCommands(own)[0]!.container).toMatchObject({ capAdd: ["NET_RAW"], logMaxSizeBytes: 65536, logMaxFiles: 5 });
  });

  it("issues one command, is idempotent, and reaches Running from observations", () => {
    const h = setup();

    // First run: one ensure-running, stored as open and marked sent.
    h.rec.reconcile(SERVER, "created");
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
    const openCmd = h.store.openCommandForServer(SERVER);
    expect(openCmd?.id).toBe(cmd.id);
    expect(openCmd?.state).toBe("sent");
    expect(openCmd?.deadlineAt).toBe(T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING]);
    expect(Phase[status(h).phase]).toBe("CREATING");
    expect(events(h).map((e) => e.type).sort()).toEqual(["command.issued", "phase.changed"]);
    expect(h.changed).toEqual([SERVER]);

    // Second run with nothing new: nothing at all changes.
    const evCount = events(h).length;
    const before = statusJson(h);
    h.clock.now += 1_000;
    const r2 = h.rec.reconcile(SERVER, "resync");
    expect(sentCommands(h)).toHaveLength(1);
    expect(events(h)).toHaveLength(evCount);
    expect(statusJson(h)).toBe(before);
    expect(h.store.openCommandForServer(SERVER)?.id).toBe(cmd.id);
    expect(h.changed).toEqual([SERVER]);
    expect(r2.requeueAfterMs).toBe(T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING] - h.clock.now);

    // The agent reports the running container, the data directory and the result.
    h.clock.now += 5_000;
    h.store.upsertContainer(HOST, runningContainer(h), h.clock.now);
    h.store.upsertDataDir({ hostId: HOST, serverId: SERVER, present: true, sizeBytes: 4096, checkedAt: h.clock.now });
    expect(h.store.finishCommand(cmd.id, "succeeded", h.clock.now, "", "")).toBe(true);
    h.rec.reconcile(SERVER, "command result");
    const s = status(h);
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
    expect(h.store.getServer(SERVER)!.dataInitialized).toBe(true);
    expect(sentCommands(h)).toHaveLength(1);
    const newEvents = events(h).slice(evCount);
    expect(newEvents.map((e) => e.type)).toEqual(["phase.changed"]);
    expect(JSON.parse(newEvents[0]!.payloadJson)).toEqual({ from: "CREATING", to: "RUNNING", cause: "command result" });

    // Again: level-based, nothing new → nothing written.
    const evCount2 = events(h).length;
    const running = statusJson(h);
    const changedCount = h.changed.length;
    h.clock.now += 60_000;
    expect(h.rec.reconcile(SERVER, "resync")).toEqual({});
    expect(events(h)).toHaveLength(evCount2);
    expect(statusJson(h)).toBe(running);
    expect(sentCommands(h)).toHaveLength(1);
    expect(h.changed).toHaveLength(changedCount);
  });

  it("keeps a condition's transition time when its status does not change", () => {
    const h = setup();
    h.rec.reconcile(SERVER);
    const hc1 = condition(status(h), "HostConnected").lastTransitionTime;
    h.clock.now += 5_000;
    h.store.upsertContainer(HOST, runningContainer(h), h.clock.now);
    h.store.finishCommand(sentCommands(h)[0]!.id, "succeeded", h.clock.now, "", "");
    h.rec.reconcile(SERVER);
    const s = status(h);
    expect(condition(s, "HostConnected").lastTransitionTime).toEqual(hc1);
    expect(Number(condition(s, "Ready").lastTransitionTime!.seconds)).toBe(Math.floor(h.clock.now / 1000));
  });

  it.each(["none", "not-ready"] as const)("host session %s → Unknown and no command", (mode) => {
    const h = setup({ session: mode });
    h.rec.reconcile(SERVER, "created");
    expect(h.sent).toHaveLength(0);
    expect(h.store.openCommandForServer(SERVER)).toBeUndefined();
    const s = status(h);
    expect(Phase[s.phase]).toBe("UNKNOWN");
    expect(condition(s, "HostConnected").status).toBe(ConditionStatus.FALSE);
    expect(events(h).map((e) => e.type)).toEqual(["phase.changed"]);
    // And again: still nothing.
    h.rec.reconcile(SERVER, "resync");
    expect(events(h)).toHaveLength(1);
    expect(h.store.openCommandForServer(SERVER)).toBeUndefined();
  });

  it("a host that becomes ready gets the command", () => {
    const h = setup({ session: "not-ready" });
    h.rec.reconcile(SERVER);
    expect(h.sent).toHaveLength(0);
    h.session!.ready = true;
    h.rec.reconcile(SERVER, "host connected");
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["ENSURE_RUNNING"]);
  });

  it("expires a command past its deadline: Failed/StartTimeout, and it stays that way", () => {
    const h = setup();
    h.rec.reconcile(SERVER);
    const cmd = sentCommands(h)[0]!;
    const deadline = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING];

    // 1 ms before the deadline: still waiting.
    h.clock.now = deadline - 1;
    const evCount = events(h).length;
    expect(h.rec.reconcile(SERVER)).toEqual({ requeueAfterMs: 1 });
    expect(h.store.getCommand(cmd.id)?.state).toBe("sent");
    expect(events(h)).toHaveLength(evCount);

    // Past it: expired, with an event, and the server failed.
    h.clock.now = deadline + 1;
    expect(h.rec.reconcile(SERVER, "deadline")).toEqual({ requeueAfterMs: 0 });
    const expired = h.store.getCommand(cmd.id)!;
    expect(expired.state).toBe("expired");
    expect(expired.finishedAt).toBe(deadline + 1);
    expect(h.store.openCommandForServer(SERVER)).toBeUndefined();
    const ev = events(h).slice(evCount);
    const exp = ev.find((e) => e.type === "command.expired");
    expect(exp?.correlationId).toBe(cmd.id);
    expect(exp?.reason).toBe("StartTimeout");
    expect(ev.filter((e) => e.type === "phase.changed")).toHaveLength(1);
    let s = status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(sentCommands(h)).toHaveLength(1);

    // The queue reconciles again at once (requeueAfterMs 0): the failure stands, with the
    // same reason and message and no new event (this run may still record that the
    // generation is now observed: the expiry run was not a settled one).
    const evCount2 = events(h).length;
    const failedMessage = s.message;
    h.clock.now += 10;
    expect(h.rec.reconcile(SERVER, "deadline")).toEqual({});
    s = status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(s.message).toBe(failedMessage);
    expect(events(h)).toHaveLength(evCount2);
    expect(sentCommands(h)).toHaveLength(1);
    // And from then on it is stable: nothing written at all.
    const failed = statusJson(h);
    const changedCount = h.changed.length;
    h.clock.now += 60_000;
    h.rec.reconcile(SERVER, "resync");
    expect(statusJson(h)).toBe(failed);
    expect(events(h)).toHaveLength(evCount2);
    expect(h.changed).toHaveLength(changedCount);

    // The operator acts again (start): retried with a new command.
    h.clock.now += 1_000;
    const srv = h.store.getServer(SERVER)!;
    h.store.updateServerSpec({ ...srv, updatedAt: h.clock.now });
    h.rec.reconcile(SERVER, "start requested");
    const cmds = sentCommands(h);
    expect(cmds).toHaveLength(2);
    expect(cmds[1]!.id).not.toBe(cmd.id);
    expect(Phase[status(h).phase]).toBe("CREATING");
  });

  it("a command that expires while the host is offline leaves Failed/StartTimeout once it is back", () => {
    const h = setup();
    h.rec.reconcile(SERVER);
    const cmd = sentCommands(h)[0]!;
    h.hub.detach(h.session!);
    h.clock.now = T0 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_RUNNING] + 1;
    h.rec.reconcile(SERVER, "timer");
    expect(h.store.getCommand(cmd.id)?.state).toBe("expired");
    expect(Phase[status(h).phase]).toBe("UNKNOWN");
    h.hub.attach({ ...h.session!, ready: true });
    h.rec.reconcile(SERVER, "host connected");
    const s = status(h);
    expect(Phase[s.phase]).toBe("FAILED");
    expect(s.reason).toBe("StartTimeout");
    expect(sentCommands(h)).toHaveLength(1);
  });

  it("ignores containers labelled with another manager's id", () => {
    const h = setup();
    h.store.upsertContainer(HOST, runningContainer(h, "mgr_someoneelse"), T0);
    // The store does associate it with the server: the reconciler must filter it out.
    expect(h.store.containersForServer(HOST, SERVER)).toHaveLength(1);
    h.rec.reconcile(SERVER);
    const s = status(h);
    expect(Phase[s.phase]).toBe("CREATING");
    expect(s.containerId).toBe("");
    expect(condition(s, "ContainerExists").status).toBe(ConditionStatus.FALSE);
    expect(sentCommands(h).map((c) => CommandKind[c.kind])).toEqual(["ENSURE_RUNNING"]);
  });

  it("uses containers labelled with its own manager id (control for the test above)", () => {
    const h = setup();
    h.store.upsertContainer(HOST, runningContainer(h), T0);
    h.rec.reconcile(SERVER);
    expect(Phase[status(h).phase]).toBe("RUNNING");
    expect(h.sent).toHaveLength(0);
  });

  it("does nothing for an unknown server", () => {
    const h = setup();
    expect(h.rec.reconcile("srv_doesnotexist")).toEqual({});
    expect(h.sent).toHaveLength(0);
    expect(h.store.listEvents()).toHaveLength(0);
  });

  it("a soft-deleted server's container is removed, then it rests as Deleted", () => {
    const h = setup();
    h.store.upsertContainer(HOST, runningContainer(h), T0);
    h.rec.reconcile(SERVER);
    h.clock.now += 1_000;
    const srv = h.store.getServer(SERVER)!;
    h.store.updateServerSpec({ ...srv, updatedAt: h.clock.now, deletedAt: h.clock.now });
    h.rec.reconcile(SERVER, "deleted");
    const cmds = sentCommands(h);
    expect(cmds.map((c) => CommandKind[c.kind])).toEqual(["ENSURE_REMOVED"]);
    expect(Phase[status(h).phase]).toBe("DELETED");
    h.store.removeContainer(HOST, "d".repeat(64));
    h.store.finishCommand(cmds[0]!.id, "succeeded", h.clock.now, "", "");
    h.rec.reconcile(SERVER, "command result");
    const s = status(h);
    expect(Phase[s.phase]).toBe("DELETED");
    expect(s.reason).toBe("Deleted");
    expect(sentCommands(h)).toHaveLength(1);
  });
});
