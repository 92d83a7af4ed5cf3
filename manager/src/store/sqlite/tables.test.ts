import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase, type Db } from "./database.js";
import { MIGRATIONS } from "../migrations.js";
import { SqliteTables } from "./tables.js";
import { initialStatus, type ServerRecord } from "../../domain/records.js";

const T0 = 1_700_000_000_000;
const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function memStore(): { db: Db; store: SqliteTables } {
  const db = openDatabase(":memory:");
  const store = new SqliteTables(db);
  cleanup.push(() => store.close());
  return { db, store };
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-store-test-"));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function server(id: string, o: Partial<ServerRecord> = {}): ServerRecord {
  const name = o.name ?? id.replace(/^srv_/, "s-").replace(/_/g, "-");
  return {
    id,
    project: "default",
    name,
    hostId: "host_a",
    generation: 1,
    spec: create(ServerSpecSchema, { name, hostId: o.hostId ?? "host_a", image: "busybox", desiredState: DesiredState.RUNNING, dataMountPath: "/data" }),
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: T0,
    updatedAt: T0,
    deletedAt: null,
    version: 1,
    ...o,
  };
}

function ctr(id: string, serverId: string | null, state = "running", managerId = "mgr_me"): ContainerInfo {
  const labels: Record<string, string> = {};
  if (serverId) {
    labels["berth.server"] = serverId;
    labels["berth.manager"] = managerId;
  }
  return create(ContainerInfoSchema, { id, name: id, image: "busybox", state, labels });
}

function command(id: string, serverId: string, kind = CommandKind.ENSURE_RUNNING) {
  return create(CommandSchema, { id, serverId, kind, deadline: timestampFromMs(T0 + 1000) });
}

describe("database and migrations", () => {
  it("migrates a new file database, and a reopen keeps data and user_version", () => {
    const path = join(tempDir(), "nested", "berth.db");
    const db1 = openDatabase(path);
    expect(db1.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    expect(db1.pragma("journal_mode", { simple: true })).toBe("wal");
    const s1 = new SqliteTables(db1);
    const mgr = s1.managerId();
    s1.insertHost({ id: "host_a", name: "a", secretHash: "h", createdAt: T0 });
    s1.insertServer(server("srv_one", { status: { ...initialStatus(), phase: Phase.RUNNING, reason: "Running" } }));
    const evId = s1.appendEvent({ type: "server.created", serverId: "srv_one", payload: { n: 1 } }, T0);
    s1.close();

    // Reopening does not re-run migration 1 (it would fail on CREATE TABLE) and loses nothing.
    const db2 = openDatabase(path);
    const s2 = new SqliteTables(db2);
    cleanup.push(() => s2.close());
    expect(db2.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    expect(s2.managerId()).toBe(mgr);
    expect(s2.getHost("host_a")?.name).toBe("a");
    const srv = s2.getServer("srv_one")!;
    expect(srv.spec.image).toBe("busybox");
    expect(srv.status.phase).toBe(Phase.RUNNING);
    expect(srv.status.reason).toBe("Running");
    const events = s2.listEvents();
    expect(events.map((e) => [e.id, e.type, e.payloadJson])).toEqual([[evId, "server.created", '{"n":1}']]);
    // New event ids continue after the old ones.
    expect(s2.appendEvent({ type: "x" }, T0)).toBeGreaterThan(evId);
  });

  it("refuses a database from a newer schema", () => {
    const path = join(tempDir(), "berth.db");
    const db = openDatabase(path);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    expect(() => openDatabase(path)).toThrow(/newer than this manager knows/);
  });
});

describe("SqliteTables", () => {
  it("round-trips a server record", () => {
    const { store } = memStore();
    const rec = server("srv_rt", { generation: 7, dataInitialized: true, lifecycle: { stopTimeoutSeconds: 30, restartRequestedAt: T0 + 1 }, deletedAt: T0 + 5, updatedAt: T0 + 3 });
    store.insertServer(rec);
    const got = store.getServer("srv_rt")!;
    expect(got).toEqual(rec);
    expect(store.findServerByName("default", rec.name)?.id).toBe("srv_rt");
    expect(store.findServerByName("other", rec.name)).toBeUndefined();
  });

  it("replaceHostInventory drops containers no longer reported and returns touched servers", () => {
    const { db, store } = memStore();
    store.upsertContainer("host_a", ctr("c1", "srv_a"), T0);
    store.upsertContainer("host_a", ctr("c2", "srv_b"), T0);
    store.upsertContainer("host_a", ctr("c3", null), T0); // not berth's
    store.upsertContainer("host_b", ctr("c4", "srv_c"), T0); // another host
    store.upsertDataDir({ hostId: "host_a", serverId: "srv_a", present: true, sizeBytes: 1, checkedAt: T0 });

    const touched = store.replaceHostInventory(
      "host_a",
      [ctr("c1", "srv_a", "exited"), ctr("c5", "srv_e")],
      [{ hostId: "host_a", serverId: "srv_d", present: false, sizeBytes: 0, checkedAt: T0 + 1 }],
      T0 + 1,
    );

    // srv_a changed, srv_b lost its container, srv_d has a data report, srv_e is new.
    expect([...touched].sort()).toEqual(["srv_a", "srv_b", "srv_d", "srv_e"]);
    expect(store.containersForServer("host_a", "srv_b")).toEqual([]);
    const a = store.containersForServer("host_a", "srv_a");
    expect(a.map((c) => [c.containerId, c.state, c.info.state, c.observedAt, c.managerId])).toEqual([["c1", "exited", "exited", T0 + 1, "mgr_me"]]);
    const onHostA = (db.prepare("SELECT container_id FROM observed_containers WHERE host_id = 'host_a' ORDER BY container_id").all() as { container_id: string }[]).map((r) => r.container_id);
    expect(onHostA).toEqual(["c1", "c5"]);
    // Other hosts are untouched.
    expect(store.containersForServer("host_b", "srv_c").map((c) => c.containerId)).toEqual(["c4"]);
    expect(store.getDataDir("host_a", "srv_d")).toEqual({ hostId: "host_a", serverId: "srv_d", present: false, sizeBytes: 0, checkedAt: T0 + 1 });
  });

  it("replaceHostInventory with an empty inventory clears the host", () => {
    const { store } = memStore();
    store.upsertContainer("host_a", ctr("c1", "srv_a"), T0);
    const touched = store.replaceHostInventory("host_a", [], [], T0 + 1);
    expect([...touched]).toEqual(["srv_a"]);
    expect(store.containersForServer("host_a", "srv_a")).toEqual([]);
  });

  it("upsertContainer updates in place and removeContainer forgets", () => {
    const { store } = memStore();
    expect(store.upsertContainer("host_a", ctr("c1", "srv_a"), T0)).toBe("srv_a");
    expect(store.upsertContainer("host_a", ctr("c1", "srv_a", "paused"), T0 + 1)).toBe("srv_a");
    expect(store.containersForServer("host_a", "srv_a").map((c) => c.state)).toEqual(["paused"]);
    expect(store.upsertContainer("host_a", ctr("cx", null), T0)).toBeNull();
    expect(store.removeContainer("host_a", "c1")).toBe("srv_a");
    expect(store.removeContainer("host_a", "c1")).toBeNull();
    expect(store.containersForServer("host_a", "srv_a")).toEqual([]);
  });

  it("finishCommand finishes an open command once; a replayed result returns false", () => {
    const { store } = memStore();
    store.insertCommand({ command: command("cmd_1", "srv_a"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 1000 });
    expect(store.openCommandForServer("srv_a")?.id).toBe("cmd_1");
    store.markCommandSent("cmd_1", T0 + 1);
    expect(store.getCommand("cmd_1")?.state).toBe("sent");

    expect(store.finishCommand("cmd_1", "failed", T0 + 2, "ImagePullFailed", "no such image")).toBe(true);
    expect(store.finishCommand("cmd_1", "succeeded", T0 + 3, "", "")).toBe(false);
    expect(store.finishCommand("cmd_1", "expired", T0 + 4, "DeadlineExceeded", "")).toBe(false);
    store.markCommandSent("cmd_1", T0 + 5);

    const c = store.getCommand("cmd_1")!;
    expect([c.state, c.finishedAt, c.reason, c.message, c.sentAt]).toEqual(["failed", T0 + 2, "ImagePullFailed", "no such image", T0 + 1]);
    expect(c.command.kind).toBe(CommandKind.ENSURE_RUNNING);
    expect(store.openCommandForServer("srv_a")).toBeUndefined();
    expect(store.lastFinishedCommand("srv_a")?.id).toBe("cmd_1");
    expect(store.finishCommand("cmd_unknown", "succeeded", T0, "", "")).toBe(false);
  });

  it("lastFinishedCommand is the most recently finished, openCommandsForHost lists open ones", () => {
    const { store } = memStore();
    // One open command per server: cmd_1 finishes before cmd_2 is issued, yet by the
    // clocks recorded cmd_1 finished last (a result that came late).
    store.insertCommand({ command: command("cmd_1", "srv_a"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 10 });
    store.finishCommand("cmd_1", "failed", T0 + 6, "X", "");
    store.insertCommand({ command: command("cmd_2", "srv_a", CommandKind.ENSURE_STOPPED), hostId: "host_a", createdAt: T0 + 1, deadlineAt: T0 + 10 });
    store.insertCommand({ command: command("cmd_3", "srv_b"), hostId: "host_a", createdAt: T0 + 2, deadlineAt: T0 + 10 });
    store.finishCommand("cmd_2", "succeeded", T0 + 5, "", "");
    expect(store.lastFinishedCommand("srv_a")?.id).toBe("cmd_1");
    expect(store.openCommandsForHost("host_a").map((c) => c.id)).toEqual(["cmd_3"]);
    expect(store.openCommandsForHost("host_b")).toEqual([]);
  });

  it("useEnrollmentToken is single-use", () => {
    const { db, store } = memStore();
    store.insertEnrollmentToken({ id: "enr_1", tokenHash: "hash1", createdAt: T0, expiresAt: T0 + 3600_000 });
    expect(store.getEnrollmentToken("hash1")).toEqual({ id: "enr_1", expiresAt: T0 + 3600_000, usedAt: null });
    expect(store.useEnrollmentToken("enr_1", "host_a", T0 + 10)).toBe(true);
    expect(store.useEnrollmentToken("enr_1", "host_b", T0 + 20)).toBe(false);
    expect(store.useEnrollmentToken("enr_1", "host_a", T0 + 30)).toBe(false);
    expect(store.getEnrollmentToken("hash1")?.usedAt).toBe(T0 + 10);
    expect(db.prepare("SELECT used_by FROM enrollment_tokens WHERE id = 'enr_1'").get()).toEqual({ used_by: "host_a" });
    expect(store.useEnrollmentToken("enr_nope", "host_a", T0)).toBe(false);
    expect(store.getEnrollmentToken("nope")).toBeUndefined();
  });

  it("event ids strictly increase, and listEvents resumes after an id", () => {
    const { store } = memStore();
    const ids: number[] = [];
    for (let i = 0; i < 50; i++) {
      // Time going backwards must not matter: ids order events, not clocks.
      ids.push(store.appendEvent({ type: "t", serverId: i % 2 ? "srv_odd" : "srv_even", message: String(i) }, T0 - i));
    }
    for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!);
    const after = store.listEvents({ afterId: ids[39]! });
    expect(after.map((e) => e.id)).toEqual(ids.slice(40));
    expect(after.map((e) => e.message)).toEqual(["40", "41", "42", "43", "44", "45", "46", "47", "48", "49"]);
    const odd = store.listEvents({ serverId: "srv_odd", limit: 3 });
    expect(odd.map((e) => e.message)).toEqual(["1", "3", "5"]);
    expect(store.listEvents({ limit: 5 }).map((e) => e.id)).toEqual(ids.slice(0, 5));
  });

  it("listServers keyset pagination has no duplicates or gaps, even with equal created_at", () => {
    const { store } = memStore();
    const all: string[] = [];
    for (let i = 0; i < 25; i++) {
      const id = `srv_${String.fromCharCode(97 + ((i * 7) % 26))}${i}`;
      // Groups of up to 4 servers share a creation time.
      store.insertServer(server(id, { name: `s${i}`, createdAt: T0 + Math.floor(i / 4) }));
      all.push(id);
    }
    store.insertServer(server("srv_deleted", { name: "gone", createdAt: T0 + 2, deletedAt: T0 + 100 }));
    store.insertServer(server("srv_otherproj", { name: "other", project: "p2", createdAt: T0 + 2 }));

    const expected = store.listServers({ project: "default" }).map((s) => s.id);
    expect([...expected].sort()).toEqual([...all].sort());

    for (const pageSize of [1, 4, 7, 25, 30]) {
      const seen: string[] = [];
      let before: { createdAt: number; id: string } | undefined;
      for (let guard = 0; guard < 100; guard++) {
        const page = store.listServers({ project: "default", before, limit: pageSize });
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(pageSize);
        seen.push(...page.map((s) => s.id));
        const last = page[page.length - 1]!;
        before = { createdAt: last.createdAt, id: last.id };
      }
      expect(seen, `page size ${pageSize}`).toEqual(expected);
      expect(new Set(seen).size).toBe(seen.length);
    }

    // Newest first, ties broken by id descending.
    const rows = store.listServers({ project: "default" });
    for (let i = 1; i < rows.length; i++) {
      const a = rows[i - 1]!;
      const b = rows[i]!;
      expect(a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id)).toBe(true);
    }
    expect(store.listServers({ project: "default", includeDeleted: true }).map((s) => s.id)).toContain("srv_deleted");
    expect(store.listServers().map((s) => s.id)).toContain("srv_otherproj");
  });

  it("updateServerStatus and updateServerSpec touch only their columns", () => {
    const { store } = memStore();
    store.insertServer(server("srv_u"));
    store.updateServerStatus("srv_u", { ...initialStatus(), phase: Phase.STOPPED, reason: "Stopped" }, true);
    const s1 = store.getServer("srv_u")!;
    expect([s1.status.phase, s1.dataInitialized, s1.generation, s1.updatedAt]).toEqual([Phase.STOPPED, true, 1, T0]);
    store.updateServerSpec({ ...s1, spec: { ...s1.spec, image: "alpine" }, generation: 2, updatedAt: T0 + 9 });
    const s2 = store.getServer("srv_u")!;
    expect([s2.spec.image, s2.generation, s2.updatedAt, s2.status.phase, s2.dataInitialized]).toEqual(["alpine", 2, T0 + 9, Phase.STOPPED, true]);
  });

  it("serverIdsOnHost includes soft-deleted servers", () => {
    const { store } = memStore();
    store.insertServer(server("srv_1", { name: "one" }));
    store.insertServer(server("srv_2", { name: "two", deletedAt: T0 }));
    store.insertServer(server("srv_3", { name: "three", hostId: "host_b" }));
    expect(store.serverIdsOnHost("host_a").sort()).toEqual(["srv_1", "srv_2"]);
    expect(store.countServersByHost()).toEqual(new Map([["host_a", 1], ["host_b", 1]]));
  });
});

describe("commands and data checks of servers that are gone", () => {
  it("deleteServerRecord takes the server's commands with it, finished and open; others stay", () => {
    const { store } = memStore();
    store.insertServer(server("srv_gone"));
    store.insertServer(server("srv_kept", { name: "kept" }));
    store.insertCommand({ command: command("cmd_done", "srv_gone"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 1000 });
    store.finishCommand("cmd_done", "succeeded", T0 + 1, "", "");
    store.insertCommand({ command: command("cmd_open", "srv_gone"), hostId: "host_a", createdAt: T0 + 2, deadlineAt: T0 + 1000 });
    store.insertCommand({ command: command("cmd_other", "srv_kept"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 1000 });
    store.deleteServerRecord("srv_gone");
    expect(store.getCommand("cmd_done")).toBeUndefined();
    expect(store.getCommand("cmd_open")).toBeUndefined();
    expect(store.openCommandsForHost("host_a").map((c) => c.id)).toEqual(["cmd_other"]);
  });

  it("an upgraded database loses the finished commands older versions left for purged servers (migration 6)", () => {
    const path = join(tempDir(), "berth.db");
    // As a version before migration 6 left it.
    const old = new Database(path);
    for (const m of MIGRATIONS.slice(0, 5)) old.exec(m.sqlite);
    old.pragma("user_version = 5");
    old.prepare(
      `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, created_at, updated_at)
       VALUES ('srv_here', 'default', 'here', 'host_a', 1, '{}', '{}', 'PENDING', ?, ?)`,
    ).run(T0, T0);
    const cmd = old.prepare("INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at, finished_at) VALUES (?, ?, 'host_a', '1', ?, ?, ?, ?, ?)");
    for (const [id, serverId] of [["cmd_left", "srv_purged"], ["cmd_mine", "srv_here"]] as const) {
      cmd.run(id, serverId, Buffer.from(toBinary(CommandSchema, command(id, serverId))), "succeeded", T0, T0 + 1000, T0 + 1);
    }
    cmd.run("cmd_open_left", "srv_purged", Buffer.from(toBinary(CommandSchema, command("cmd_open_left", "srv_purged"))), "pending", T0, T0 + 1000, null);
    old.close();

    const db = openDatabase(path);
    const s2 = new SqliteTables(db);
    cleanup.push(() => s2.close());
    expect(s2.getCommand("cmd_left")).toBeUndefined();
    expect(s2.getCommand("cmd_mine")?.state).toBe("succeeded");
    // Open commands were never retention's: they stay as they were.
    expect(s2.getCommand("cmd_open_left")?.state).toBe("pending");
    expect(db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'commands_finished'").get()).toEqual({ name: "commands_finished" });
  });

  it("replaceHostInventory forgets checks of other servers' directories once the host no longer lists them", () => {
    const { store } = memStore();
    store.insertServer(server("srv_mine"));
    const check = (serverId: string) => ({ hostId: "host_a", serverId, present: true, sizeBytes: 10, checkedAt: T0 });
    store.replaceHostInventory("host_a", [], [check("srv_mine"), check("srv_foreign"), check("srv_later")], T0);
    expect(store.getDataDir("host_a", "srv_foreign")?.present).toBe(true);

    // srv_later was observed after this inventory was taken: its check stays as it is.
    store.replaceHostInventory("host_a", [], [check("srv_mine")], T0 + 1, undefined, new Set(["srv_later"]));
    expect(store.getDataDir("host_a", "srv_foreign")).toBeUndefined();
    expect(store.getDataDir("host_a", "srv_later")?.present).toBe(true);
    expect(store.getDataDir("host_a", "srv_mine")?.present).toBe(true);

    // The host's own server's directory gone from the list is recorded as gone, not forgotten.
    store.replaceHostInventory("host_a", [], [], T0 + 2);
    expect(store.getDataDir("host_a", "srv_mine")).toMatchObject({ present: false });
    expect(store.getDataDir("host_a", "srv_later")).toBeUndefined();
  });
});
