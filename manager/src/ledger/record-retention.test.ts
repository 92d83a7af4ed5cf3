import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

const DAY = 24 * 3600_000;
const NOW = 100 * DAY;

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

async function setup() {
  const store = await testStore();
  opened.push(store);
  const retention = new EventRetention(store, { ...DEFAULT_RETENTION, batchSize: 50 }, undefined, () => NOW);
  const addServer = (id: string) => store.commit([{ op: "server.insert", server: newServer({ id, hostId: "host_a" }) }]);
  let n = 0;
  /** A command of `serverId` created at `at`, finished (with `state`) a second later, or left open. */
  const addCommand = async (serverId: string, at: number, state: "succeeded" | "failed" | "open") => {
    const id = `cmd_${String(n++).padStart(6, "0")}`;
    await store.commit([{ op: "command.insert", command: create(CommandSchema, { id, serverId, kind: CommandKind.ENSURE_RUNNING }), hostId: "host_a", createdAt: at, deadlineAt: at + 60_000 }]);
    if (state !== "open") await store.commit([{ op: "command.finish", id, state, at: at + 1000, reason: "", message: "" }]);
    return id;
  };
  const commandIds = async () => {
    const left: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = `cmd_${String(i).padStart(6, "0")}`;
      if (await store.getCommand(id)) left.push(id);
    }
    return left;
  };
  const tokens = (hashes: string[]) => Promise.all(hashes.map(async (h) => (await store.getEnrollmentToken(h))?.id)).then((ids) => ids.filter((id) => id !== undefined).sort());
  return { store, retention, addServer, addCommand, commandIds, tokens };
}

describe("retention of finished commands", () => {
  it("prunes finished commands older than 7 days in bounded steps; keeps open ones and each server's latest", async () => {
    const { store, retention, addServer, addCommand, commandIds } = await setup();
    await addServer("srv_a");
    const old: string[] = [];
    for (let i = 0; i < 120; i++) old.push(await addCommand("srv_a", NOW - 30 * DAY + i, "succeeded"));
    const recent = await addCommand("srv_a", NOW - DAY, "succeeded");
    await addServer("srv_b");
    // srv_b's only command failed long ago: its failure still stands (plan() reads it), so it stays.
    const standingFailure = await addCommand("srv_b", NOW - 60 * DAY, "failed");
    const open = await addCommand("srv_b", NOW - 60 * DAY, "open");
    // A purged server's commands have nothing left to explain: they go with its record.
    await addServer("srv_gone");
    const purged = await addCommand("srv_gone", NOW - DAY, "succeeded");
    await store.commit([{ op: "server.delete", id: "srv_gone" }]);

    // Steps of at most 50 rows each.
    expect(await retention.pruneOnce()).toBe(50);
    expect(await retention.pruneOnce()).toBe(50);
    expect(await retention.pruneOnce()).toBe(20);
    expect(await retention.pruneOnce()).toBe(0);
    const left = await commandIds();
    expect(left).toEqual([standingFailure, open, recent].sort());
    for (const id of [...old, purged]) expect(left).not.toContain(id);
  });
});

describe("retention of enrollment tokens", () => {
  it("prunes tokens used or expired more than a day ago; keeps valid ones and recently spent ones", async () => {
    const { store, retention, tokens } = await setup();
    const enroll = (id: string, tokenHash: string, expiresAt: number) => ({ op: "enrollment.insert" as const, id, tokenHash, createdAt: NOW - 10 * DAY, expiresAt });
    await store.commit([
      enroll("enr_valid", "h1", NOW + DAY),
      enroll("enr_expired_long_ago", "h2", NOW - 2 * DAY),
      enroll("enr_expired_recently", "h3", NOW - 3600_000),
      enroll("enr_used_long_ago", "h4", NOW + DAY),
      { op: "enrollment.use", id: "enr_used_long_ago", hostId: "host_x", at: NOW - 3 * DAY },
      enroll("enr_used_recently", "h5", NOW + DAY),
      { op: "enrollment.use", id: "enr_used_recently", hostId: "host_y", at: NOW - 3600_000 },
    ]);
    expect(await retention.pruneOnce()).toBe(2);
    expect(await tokens(["h1", "h2", "h3", "h4", "h5"])).toEqual(["enr_expired_recently", "enr_used_recently", "enr_valid"]);
  });
});
