import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase } from "../store/database.js";
import { EventStore } from "../store/event-store.js";
import { Store } from "../store/store.js";
import { initialStatus } from "../domain/records.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

const DAY = 24 * 3600_000;
const NOW = 100 * DAY;

function setup() {
  const db = openDatabase(":memory:");
  const store = new Store(db);
  const retention = new EventRetention(new EventStore(db), { ...DEFAULT_RETENTION, batchSize: 50 }, undefined, () => NOW, store);
  const addServer = (id: string) =>
    store.insertServer({
      id,
      project: "default",
      name: id,
      hostId: "host_a",
      generation: 1,
      spec: create(ServerSpecSchema, { name: id, image: "busybox" }),
      status: initialStatus(),
      dataInitialized: false,
      lifecycle: {},
      createdAt: 1,
      updatedAt: 1,
      deletedAt: null,
    });
  let n = 0;
  /** A command of `serverId` created at `at`, finished (with `state`) a second later, or left open. */
  const addCommand = (serverId: string, at: number, state: "succeeded" | "failed" | "open") => {
    const id = `cmd_${String(n++).padStart(6, "0")}`;
    store.insertCommand({ command: create(CommandSchema, { id, serverId, kind: CommandKind.ENSURE_RUNNING }), hostId: "host_a", createdAt: at, deadlineAt: at + 60_000 });
    if (state !== "open") store.finishCommand(id, state, at + 1000, "", "");
    return id;
  };
  const commandIds = () => (db.prepare("SELECT id FROM commands ORDER BY id").pluck().all() as string[]);
  const tokenIds = () => (db.prepare("SELECT id FROM enrollment_tokens ORDER BY id").pluck().all() as string[]);
  return { store, retention, addServer, addCommand, commandIds, tokenIds };
}

describe("retention of finished commands", () => {
  it("prunes finished commands older than 7 days in bounded steps; keeps open ones and each server's latest", () => {
    const { store, retention, addServer, addCommand, commandIds } = setup();
    addServer("srv_a");
    const old = Array.from({ length: 120 }, (_, i) => addCommand("srv_a", NOW - 30 * DAY + i, "succeeded"));
    const recent = addCommand("srv_a", NOW - DAY, "succeeded");
    addServer("srv_b");
    // srv_b's only command failed long ago: its failure still stands (plan() reads it), so it stays.
    const standingFailure = addCommand("srv_b", NOW - 60 * DAY, "failed");
    const open = addCommand("srv_b", NOW - 60 * DAY, "open");
    // A purged server's commands have nothing left to explain: they go with its record.
    addServer("srv_gone");
    const purged = addCommand("srv_gone", NOW - DAY, "succeeded");
    store.deleteServerRecord("srv_gone");

    // Steps of at most 50 rows each.
    expect(retention.pruneOnce()).toBe(50);
    expect(retention.pruneOnce()).toBe(50);
    expect(retention.pruneOnce()).toBe(20);
    expect(retention.pruneOnce()).toBe(0);
    const left = commandIds();
    expect(left).toEqual([standingFailure, open, recent].sort());
    for (const id of [...old, purged]) expect(left).not.toContain(id);
  });
});

describe("retention of enrollment tokens", () => {
  it("prunes tokens used or expired more than a day ago; keeps valid ones and recently spent ones", () => {
    const { store, retention, tokenIds } = setup();
    store.insertEnrollmentToken({ id: "enr_valid", tokenHash: "h1", createdAt: NOW - 10 * DAY, expiresAt: NOW + DAY });
    store.insertEnrollmentToken({ id: "enr_expired_long_ago", tokenHash: "h2", createdAt: NOW - 10 * DAY, expiresAt: NOW - 2 * DAY });
    store.insertEnrollmentToken({ id: "enr_expired_recently", tokenHash: "h3", createdAt: NOW - 10 * DAY, expiresAt: NOW - 3600_000 });
    store.insertEnrollmentToken({ id: "enr_used_long_ago", tokenHash: "h4", createdAt: NOW - 10 * DAY, expiresAt: NOW + DAY });
    store.useEnrollmentToken("enr_used_long_ago", "host_x", NOW - 3 * DAY);
    store.insertEnrollmentToken({ id: "enr_used_recently", tokenHash: "h5", createdAt: NOW - 10 * DAY, expiresAt: NOW + DAY });
    store.useEnrollmentToken("enr_used_recently", "host_y", NOW - 3600_000);
    expect(retention.pruneOnce()).toBe(2);
    expect(tokenIds()).toEqual(["enr_expired_recently", "enr_used_recently", "enr_valid"]);
  });
});
