import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, PortMappingSchema, Protocol, ServerSpecSchema, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase } from "./sqlite/database.js";
import { MIGRATIONS } from "./migrations.js";
import { SqliteTables } from "./sqlite/tables.js";
import { initialStatus, type NewServerRecord, type ServerRecord } from "../domain/records.js";
import { ConflictError, PreconditionError } from "../errors.js";

// Migration 7 brought the invariants the database holds by itself, whichever manager
// writes (one open command per server, a host port held by one server per host, unique
// names per project, a version checked on write): how it upgrades an SQLite database
// that broke them. The invariants themselves, on every engine: store.contract.test.ts.

const T0 = 1_700_000_000_000;
const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

const tcp = (hostPort: number, protocol = Protocol.TCP, containerPort = hostPort): PortMapping => create(PortMappingSchema, { hostPort, containerPort, protocol });
const udp = (hostPort: number): PortMapping => tcp(hostPort, Protocol.UDP);

function server(id: string, o: Partial<NewServerRecord> & { ports?: PortMapping[] } = {}): NewServerRecord {
  const { ports = [], ...rest } = o;
  const name = o.name ?? id.replace(/^srv_/, "s-").replace(/_/g, "-");
  const hostId = o.hostId ?? "host_a";
  return {
    id,
    project: "default",
    name,
    hostId,
    generation: 1,
    spec: create(ServerSpecSchema, { name, hostId, image: "busybox", desiredState: DesiredState.RUNNING, ports }),
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: T0,
    updatedAt: T0,
    deletedAt: null,
    ...rest,
  };
}

function command(id: string, serverId: string) {
  return create(CommandSchema, { id, serverId, kind: CommandKind.ENSURE_RUNNING });
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

/** Every port reservation, as "host port/protocol=server". */
function reservations(store: SqliteTables): string[] {
  const db = (store as unknown as { db: Database.Database }).db;
  return (db.prepare("SELECT host_id, host_port, protocol, server_id FROM server_ports ORDER BY host_id, host_port, protocol").all() as {
    host_id: string;
    host_port: number;
    protocol: string;
    server_id: string;
  }[]).map((r) => `${r.host_id} ${r.host_port}/${r.protocol}=${r.server_id}`);
}

describe("migration 7 on a database built at version 6", () => {
  const spec = (name: string, hostId: string, ports: PortMapping[]) => toJsonString(ServerSpecSchema, create(ServerSpecSchema, { name, hostId, image: "busybox", ports }));

  it("keeps the newest open command of a server and expires the older ones, and reserves ports oldest server first", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-invariants-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "berth.db");
    const old = new Database(path);
    for (const m of MIGRATIONS.slice(0, 6)) old.exec(m.sqlite);
    old.pragma("user_version = 6");
    const srv = old.prepare(
      `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, created_at, updated_at, deleted_at)
       VALUES (?, 'default', ?, ?, 1, ?, '{}', 'RUNNING', ?, ?, ?)`,
    );
    srv.run("srv_old", "old", "host_a", spec("old", "host_a", [tcp(25565), udp(25565), tcp(25565, Protocol.UNSPECIFIED)]), T0, T0, null);
    // Conflicting rows the friendly check should have prevented: the later server loses 25565 only.
    srv.run("srv_later", "later", "host_a", spec("later", "host_a", [tcp(25565), tcp(8080)]), T0 + 1, T0 + 1, null);
    srv.run("srv_deleted", "deleted", "host_a", spec("deleted", "host_a", [tcp(9000)]), T0, T0, T0 + 5);
    srv.run("srv_b", "b", "host_b", spec("b", "host_b", [tcp(25565)]), T0 + 2, T0 + 2, null);
    const cmd = old.prepare(
      "INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at, finished_at) VALUES (?, ?, 'host_a', '1', ?, ?, ?, ?, ?)",
    );
    const payload = (id: string, serverId: string) => Buffer.from(toBinary(CommandSchema, command(id, serverId)));
    cmd.run("cmd_done", "srv_old", payload("cmd_done", "srv_old"), "succeeded", T0, T0 + 1000, T0 + 1);
    cmd.run("cmd_older", "srv_old", payload("cmd_older", "srv_old"), "pending", T0 + 2, T0 + 1000, null);
    cmd.run("cmd_newer", "srv_old", payload("cmd_newer", "srv_old"), "sent", T0 + 3, T0 + 1000, null);
    // Equal creation times: the greater id stays open.
    cmd.run("cmd_tie_a", "srv_later", payload("cmd_tie_a", "srv_later"), "pending", T0 + 4, T0 + 1000, null);
    cmd.run("cmd_tie_b", "srv_later", payload("cmd_tie_b", "srv_later"), "pending", T0 + 4, T0 + 1000, null);
    old.close();

    const before = Date.now();
    const store = new SqliteTables(openDatabase(path));
    cleanup.push(() => store.close());

    expect(store.openCommandForServer("srv_old")).toMatchObject({ id: "cmd_newer", state: "sent" });
    const superseded = store.getCommand("cmd_older")!;
    expect([superseded.state, superseded.reason]).toEqual(["expired", "Superseded"]);
    expect(superseded.finishedAt).toBeGreaterThanOrEqual(before - 1000);
    expect(superseded.finishedAt).toBeLessThanOrEqual(Date.now() + 1000);
    expect(store.getCommand("cmd_done")?.state).toBe("succeeded");
    expect(store.openCommandForServer("srv_later")?.id).toBe("cmd_tie_b");
    expect(store.getCommand("cmd_tie_a")?.state).toBe("expired");
    // The index now refuses a second one.
    expect(caught(() => store.insertCommand({ command: command("cmd_x", "srv_old"), hostId: "host_a", createdAt: T0 + 9, deadlineAt: T0 + 1000 }))).toBeInstanceOf(ConflictError);

    // Every existing server starts at version 1.
    expect(store.listServers({ includeDeleted: true }).map((s: ServerRecord) => s.version)).toEqual([1, 1, 1, 1]);

    expect(reservations(store)).toEqual([
      "host_a 8080/tcp=srv_later",
      "host_a 25565/tcp=srv_old",
      "host_a 25565/udp=srv_old",
      "host_b 25565/tcp=srv_b",
    ]);
    // The reservations hold: 25565/tcp is taken on host_a, the deleted server's 9000 is free.
    expect(caught(() => store.insertServer(server("srv_new", { ports: [tcp(25565)] })))).toBeInstanceOf(PreconditionError);
    store.insertServer(server("srv_new", { ports: [tcp(9000)] }));

    // The server that lost 25565 can still be written as long as its ports stay as they
    // are (stopping it, say); asking for 25565 anew is refused.
    const later = store.getServer("srv_later")!;
    expect(store.updateServerSpec({ ...later, spec: { ...later.spec, desiredState: DesiredState.STOPPED }, generation: 2 })).toBe(2);
    const stopped = store.getServer("srv_later")!;
    expect(caught(() => store.updateServerSpec({ ...stopped, spec: { ...stopped.spec, ports: [tcp(25565)] }, generation: 3 }))).toBeInstanceOf(PreconditionError);
    expect(store.getServer("srv_later")).toEqual(stopped);
    store.updateServerSpec({ ...stopped, spec: { ...stopped.spec, ports: [tcp(8080), tcp(25570)] }, generation: 3 });
    expect(reservations(store)).toContain("host_a 25570/tcp=srv_later");
  });
});
