import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, PortMappingSchema, Protocol, ServerSpecSchema, ServerStatusSchema, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase } from "./sqlite/database.js";
import { MIGRATIONS } from "./migrations.js";
import { SqliteTables } from "./sqlite/tables.js";
import { initialStatus, type NewServerRecord, type ServerRecord } from "../domain/records.js";
import { findPortConflicts } from "../domain/port-conflicts.js";
import { AlreadyExistsError, ConflictError, NotFoundError, PreconditionError, toConnectError } from "../errors.js";

// The invariants the database holds by itself (migration 7), whichever manager writes:
// one open command per server, a host port held by one server per host, unique names
// per project, and a version checked on write.

const T0 = 1_700_000_000_000;
const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function memStore(): SqliteTables {
  const store = new SqliteTables(openDatabase(":memory:"));
  cleanup.push(() => store.close());
  return store;
}

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

describe("one open command per server", () => {
  it("refuses a second open command with ConflictError (Aborted) and keeps the first as it was", () => {
    const store = memStore();
    store.insertCommand({ command: command("cmd_1", "srv_a"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 1000 });
    const err = caught(() => store.insertCommand({ command: command("cmd_2", "srv_a"), hostId: "host_a", createdAt: T0 + 1, deadlineAt: T0 + 1000 }));
    expect(err).toBeInstanceOf(ConflictError);
    expect(toConnectError(err).code).toBe(Code.Aborted);
    expect((err as Error).message).toBe("server srv_a already has an open command (cmd_1); wait for it to finish or expire, then retry");
    expect(store.getCommand("cmd_2")).toBeUndefined();
    expect(store.openCommandForServer("srv_a")).toMatchObject({ id: "cmd_1", state: "pending" });

    // Sent is still open.
    store.markCommandSent("cmd_1", T0 + 2);
    expect(caught(() => store.insertCommand({ command: command("cmd_3", "srv_a"), hostId: "host_a", createdAt: T0 + 3, deadlineAt: T0 + 1000 }))).toBeInstanceOf(ConflictError);
    // Another server is not concerned.
    store.insertCommand({ command: command("cmd_b", "srv_b"), hostId: "host_a", createdAt: T0 + 3, deadlineAt: T0 + 1000 });

    // Once finished, the next one goes in.
    store.finishCommand("cmd_1", "succeeded", T0 + 4, "", "");
    store.insertCommand({ command: command("cmd_4", "srv_a"), hostId: "host_a", createdAt: T0 + 5, deadlineAt: T0 + 1000 });
    expect(store.openCommandForServer("srv_a")?.id).toBe("cmd_4");
  });

  it("a refused command rolls back with the transaction it was part of", () => {
    const store = memStore();
    store.insertServer(server("srv_a"));
    store.insertCommand({ command: command("cmd_1", "srv_a"), hostId: "host_a", createdAt: T0, deadlineAt: T0 + 1000 });
    const before = store.getServer("srv_a");
    expect(
      caught(() =>
        store.transaction(() => {
          store.updateLifecycle("srv_a", { restartRequestedAt: T0 + 1 });
          store.insertCommand({ command: command("cmd_2", "srv_a"), hostId: "host_a", createdAt: T0 + 1, deadlineAt: T0 + 1000 });
        }),
      ),
    ).toBeInstanceOf(ConflictError);
    expect(store.getServer("srv_a")).toEqual(before);
  });
});

describe("host ports: one server per host port and protocol", () => {
  it("refuses a server whose port another server on the host holds, and leaves no row of it behind", () => {
    const store = memStore();
    store.insertServer(server("srv_first", { ports: [tcp(25565), udp(25565)] }));
    const err = caught(() => store.insertServer(server("srv_second", { ports: [tcp(8080), tcp(25565)] })));
    expect(err).toBeInstanceOf(PreconditionError);
    expect(toConnectError(err).code).toBe(Code.FailedPrecondition);
    expect((err as Error).message).toBe("port conflict on host host_a: host port 25565/tcp is already taken by another server; choose another host port (or free this one) and retry");
    // No partial write: no server row, and 8080 (reserved before 25565 failed) is not held.
    expect(store.getServer("srv_second")).toBeUndefined();
    expect(reservations(store)).toEqual(["host_a 25565/tcp=srv_first", "host_a 25565/udp=srv_first"]);
    store.insertServer(server("srv_third", { ports: [tcp(8080)] }));
  });

  it("matches the domain's rule: same host, same port, same protocol (unspecified is tcp), whatever the container port", () => {
    const cases: { held: PortMapping[]; heldHost?: string; wanted: PortMapping[]; conflict: boolean }[] = [
      { held: [tcp(25565)], wanted: [tcp(25565)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25565, Protocol.TCP, 1)], conflict: true },
      { held: [tcp(25565, Protocol.UNSPECIFIED)], wanted: [tcp(25565)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25565, Protocol.UNSPECIFIED)], conflict: true },
      { held: [tcp(25565)], wanted: [udp(25565)], conflict: false },
      { held: [udp(53)], wanted: [udp(53)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25566)], conflict: false },
      { held: [tcp(25565)], heldHost: "host_b", wanted: [tcp(25565)], conflict: false },
      { held: [], wanted: [tcp(80), tcp(80)], conflict: false },
    ];
    for (const [i, c] of cases.entries()) {
      const store = memStore();
      const heldHost = c.heldHost ?? "host_a";
      store.insertServer(server("srv_held", { hostId: heldHost, ports: c.held }));
      const domain = heldHost === "host_a" && findPortConflicts(c.wanted, [{ name: "held", project: "default", ports: c.held }]).length > 0;
      expect(domain, `case ${i}: the table agrees with the domain`).toBe(c.conflict);
      const err = (() => {
        try {
          store.insertServer(server("srv_wanted", { ports: c.wanted }));
          return undefined;
        } catch (e) {
          return e;
        }
      })();
      expect(err instanceof PreconditionError, `case ${i}`).toBe(c.conflict);
    }
  });

  it("a soft-deleted server holds no port, and cannot be restored onto a port taken meanwhile", () => {
    const store = memStore();
    store.insertServer(server("srv_old", { ports: [tcp(25565)] }));
    const old = store.getServer("srv_old")!;
    store.updateServerSpec({ ...old, deletedAt: T0 + 1 });
    expect(reservations(store)).toEqual([]);
    store.insertServer(server("srv_new", { ports: [tcp(25565)] }));

    const deleted = store.getServer("srv_old")!;
    const err = caught(() => store.updateServerSpec({ ...deleted, deletedAt: null, updatedAt: T0 + 2 }));
    expect(err).toBeInstanceOf(PreconditionError);
    expect((err as Error).message).toMatch(/host port 25565\/tcp/);
    // Nothing written: still deleted, same version.
    expect(store.getServer("srv_old")).toEqual(deleted);
    expect(reservations(store)).toEqual(["host_a 25565/tcp=srv_new"]);

    // A server inserted already deleted holds nothing either.
    store.insertServer(server("srv_gone", { ports: [tcp(25565)], deletedAt: T0 }));
  });

  it("a spec update moves the reservation; a refused one changes nothing; a purge frees the ports", () => {
    const store = memStore();
    store.insertServer(server("srv_a", { ports: [tcp(25565)] }));
    store.insertServer(server("srv_b", { ports: [tcp(8080)] }));
    const a = store.getServer("srv_a")!;

    // Onto srv_b's port: refused, spec and reservations unchanged.
    expect(caught(() => store.updateServerSpec({ ...a, spec: { ...a.spec, ports: [tcp(8080)] }, generation: 2 }))).toBeInstanceOf(PreconditionError);
    expect(store.getServer("srv_a")).toEqual(a);
    expect(reservations(store)).toEqual(["host_a 8080/tcp=srv_b", "host_a 25565/tcp=srv_a"]);

    // Onto a free port: 25565 is released.
    store.updateServerSpec({ ...a, spec: { ...a.spec, ports: [tcp(25566)] }, generation: 2 });
    store.insertServer(server("srv_c", { ports: [tcp(25565)] }));

    // Moved to another host (ReassignServer): held there, free here.
    const b = store.getServer("srv_b")!;
    store.updateServerSpec({ ...b, hostId: "host_b", spec: { ...b.spec, hostId: "host_b" } });
    expect(reservations(store)).toContain("host_b 8080/tcp=srv_b");
    store.insertServer(server("srv_d", { ports: [tcp(8080)] }));

    store.deleteServerRecord("srv_c");
    store.insertServer(server("srv_e", { ports: [tcp(25565)] }));
  });
});

describe("unique names per project", () => {
  it("refuses a second server of the same name in a project with the AlreadyExists message CreateServer gives", () => {
    const store = memStore();
    store.insertServer(server("srv_1", { name: "web" }));
    const err = caught(() => store.insertServer(server("srv_2", { name: "web", ports: [tcp(80)] })));
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect(toConnectError(err).code).toBe(Code.AlreadyExists);
    expect((err as Error).message).toBe('a server named "web" already exists in project "default"; pick another name or update it');
    expect(store.getServer("srv_2")).toBeUndefined();
    expect(reservations(store)).toEqual([]);

    // A soft-deleted server keeps its name (RestoreServer brings it back under it).
    store.insertServer(server("srv_3", { name: "old", deletedAt: T0 }));
    expect(caught(() => store.insertServer(server("srv_4", { name: "old" })))).toBeInstanceOf(AlreadyExistsError);
    // Another project may use it.
    store.insertServer(server("srv_5", { name: "web", project: "p2" }));
    // A repeated id is not a name clash: it stays the database's own error.
    expect(caught(() => store.insertServer(server("srv_1", { name: "other" })))).not.toBeInstanceOf(AlreadyExistsError);
  });
});

describe("optimistic concurrency on server records", () => {
  it("every kind of write increments the version and returns it", () => {
    const store = memStore();
    store.insertServer(server("srv_v"));
    let s = store.getServer("srv_v")!;
    expect(s.version).toBe(1);
    expect(store.updateServerSpec({ ...s, spec: { ...s.spec, image: "alpine" }, generation: 2 })).toBe(2);
    expect(store.updateServerStatus("srv_v", create(ServerStatusSchema, { phase: Phase.RUNNING }), true)).toBe(3);
    expect(store.updateLifecycle("srv_v", { restartRequestedAt: T0 })).toBe(4);
    expect(store.resetDataInitialized("srv_v")).toBe(5);
    s = store.getServer("srv_v")!;
    expect([s.version, s.spec.image, s.status.phase, s.lifecycle.restartRequestedAt, s.dataInitialized]).toEqual([5, "alpine", Phase.RUNNING, T0, false]);
    // With the current version, a write goes through.
    expect(store.updateLifecycle("srv_v", {}, 5)).toBe(6);
    // A server that is not there: nothing written.
    expect(store.updateLifecycle("srv_none", {})).toBeUndefined();
    expect(caught(() => store.updateLifecycle("srv_none", {}, 1))).toBeInstanceOf(NotFoundError);
  });

  it("a write with a stale expected version writes nothing and says to read again", () => {
    const store = memStore();
    store.insertServer(server("srv_v", { name: "mc", ports: [tcp(25565)] }));
    const read = store.getServer("srv_v")!;
    store.updateLifecycle("srv_v", { restartRequestedAt: T0 }); // someone else writes: version 2
    const current = store.getServer("srv_v")!;

    const writes: [string, () => unknown][] = [
      ["spec", () => store.updateServerSpec({ ...read, spec: { ...read.spec, image: "alpine", ports: [tcp(25566)] }, generation: 2 }, read.version)],
      ["status", () => store.updateServerStatus("srv_v", create(ServerStatusSchema, { phase: Phase.FAILED }), true, read.version)],
      ["lifecycle", () => store.updateLifecycle("srv_v", {}, read.version)],
      ["data_initialized", () => store.resetDataInitialized("srv_v", read.version)],
    ];
    for (const [what, write] of writes) {
      const err = caught(write);
      expect(err, what).toBeInstanceOf(ConflictError);
      expect(toConnectError(err).code).toBe(Code.Aborted);
      expect((err as Error).message).toBe('server "mc" was changed by someone else (version 2, expected 1): read it again and retry');
      expect(store.getServer("srv_v"), what).toEqual(current);
    }
    // The refused spec write did not move the port reservation either.
    expect(reservations(store)).toEqual(["host_a 25565/tcp=srv_v"]);
  });
});

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
