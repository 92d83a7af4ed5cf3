import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase } from "./database.js";
import { MIGRATIONS } from "../migrations.js";
import { SqliteTables } from "./tables.js";
import { initialStatus, type ServerRecord } from "../../domain/records.js";

const T0 = 1_700_000_000_000;
const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

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

describe("commands and data checks of servers that are gone", () => {
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
});

describe("server pages, newest first", () => {
  it("page after page lists every server once, in order (ties in created_at by id); each page searches an index from its cursor", () => {
    const db = openDatabase(":memory:");
    const t = new SqliteTables(db);
    cleanup.push(() => t.close());
    // Two creation times, so the cursor's tie-break on id is exercised; a second project.
    for (let i = 0; i < 7; i++) t.insertServer(server(`srv_p${i}`, { createdAt: T0 + (i % 2) * 1000, ...(i === 3 ? { project: "team" } : {}) }));
    const sqls: string[] = [];
    const prepare = db.prepare.bind(db);
    db.prepare = ((sql: string) => {
      sqls.push(sql);
      return prepare(sql);
    }) as typeof db.prepare;
    const pages = (project?: string) => {
      const ids: string[] = [];
      for (let before: { createdAt: number; id: string } | undefined; ; ) {
        const page = t.listServers({ limit: 2, ...(project ? { project } : {}), ...(before ? { before } : {}) });
        ids.push(...page.map((s) => s.id));
        if (page.length < 2) return ids;
        before = { createdAt: page[1]!.createdAt, id: page[1]!.id };
      }
    };
    expect(pages()).toEqual(["srv_p5", "srv_p3", "srv_p1", "srv_p6", "srv_p4", "srv_p2", "srv_p0"]);
    expect(pages("default")).toEqual(["srv_p5", "srv_p1", "srv_p6", "srv_p4", "srv_p2", "srv_p0"]);
    // Without an index to search (or with the cursor as an OR), each page scanned and sorted every server:
    // 339 ms a page at 100,000 servers (migration 21).
    const plan = (sql: string, args: unknown[]) => (prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[]).map((r) => r.detail).join("; ");
    const after = sqls.filter((s) => s.includes("(created_at, id) <"));
    expect(plan(after.find((s) => !s.includes("project"))!, [T0, "srv_p1"])).toBe("SEARCH servers USING INDEX servers_created ((created_at,id)<(?,?))");
    expect(plan(after.find((s) => s.includes("project"))!, ["default", T0, "srv_p1"])).toBe("SEARCH servers USING INDEX servers_project_created (project=? AND (created_at,id)<(?,?))");
  });
});
