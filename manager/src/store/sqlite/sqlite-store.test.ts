import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { initialStatus, type NewServerRecord } from "../../domain/records.js";
import { BerthError } from "../../errors.js";
import { memoryStore } from "../../../testing/store.js";

const HOST = "host_aaaaaaaaaaaa";
const server = (id: string, name: string): NewServerRecord => ({
  id,
  project: "default",
  name,
  hostId: HOST,
  generation: 1,
  spec: create(ServerSpecSchema, { name, hostId: HOST, image: "busybox" }),
  status: initialStatus(),
  dataInitialized: false,
  lifecycle: {},
  createdAt: 1,
  updatedAt: 1,
  deletedAt: null,
});
const codeOf = (e: unknown) => (e instanceof BerthError ? e.code : undefined);

describe("SqliteStore.commit", () => {
  it("applies a batch with its events and tells listeners once it committed", async () => {
    const { contract } = memoryStore();
    const heard: string[][] = [];
    contract.onCommit((c) => heard.push([...c.events.map((e) => `${e.id}:${e.type}`), ...c.serverIds]));
    const r = await contract.commit([
      { op: "event.append", event: { type: "server.created", serverId: "srv_a", project: "default" }, at: 5 },
      { op: "server.insert", server: server("srv_a", "a") },
    ]);
    expect(r.versions.get("srv_a")).toBe(1);
    expect(r.events.map((e) => [e.type, e.time, e.serverId])).toEqual([["server.created", 5, "srv_a"]]);
    expect((await contract.getServer("srv_a"))?.name).toBe("a");
    expect(heard).toEqual([[`${r.events[0]!.id}:server.created`, "srv_a"]]);
  });

  it("writes nothing of a batch whose precondition fails, and tells no listener", async () => {
    const { contract } = memoryStore();
    await contract.commit([{ op: "server.insert", server: server("srv_a", "a") }]);
    const before = await contract.getServer("srv_a");
    const last = await contract.lastEventId();
    let heard = 0;
    contract.onCommit(() => heard++);
    const err = await contract
      .commit([
        { op: "server.lifecycle", id: "srv_a", lifecycle: { restartRequestedAt: 9 } },
        { op: "event.append", event: { type: "server.restart_requested", serverId: "srv_a" }, at: 9 },
        { op: "server.status", id: "srv_a", status: initialStatus(), dataInitialized: true, expectVersion: 1 },
      ])
      .then(() => undefined, (e: unknown) => e);
    // The lifecycle write made it version 2 inside the batch: the status write expecting 1 fails the whole batch.
    expect(codeOf(err)).toBe(Code.Aborted);
    expect(await contract.getServer("srv_a")).toEqual(before);
    expect(await contract.lastEventId()).toBe(last);
    expect(heard).toBe(0);
  });

  it("refuses to finish a command that is no longer open, and to delete a record that is gone", async () => {
    const { contract, store } = memoryStore();
    await contract.commit([{ op: "server.insert", server: server("srv_a", "a") }]);
    const cmd = store.insertCommand({ command: create(CommandSchema, { id: "cmd_1", serverId: "srv_a" }), hostId: HOST, createdAt: 1, deadlineAt: 100 });
    await contract.commit([{ op: "command.finish", id: cmd.id, state: "succeeded", at: 2, reason: "Done", message: "" }]);
    const again = await contract.commit([{ op: "command.finish", id: cmd.id, state: "failed", at: 3, reason: "Late", message: "" }]).then(() => undefined, (e: unknown) => e);
    expect(codeOf(again)).toBe(Code.Aborted);
    expect((await contract.getCommand(cmd.id))?.state).toBe("succeeded");

    // A version check writes nothing, and refuses the batch once the version moved on.
    const v = (await contract.getServer("srv_a"))!.version;
    await contract.commit([{ op: "server.check", id: "srv_a", expectVersion: v }]);
    expect((await contract.getServer("srv_a"))!.version).toBe(v);
    await contract.commit([{ op: "server.lifecycle", id: "srv_a", lifecycle: { restartRequestedAt: 1 } }]);
    const stale = await contract
      .commit([{ op: "event.append", event: { type: "command.issued", serverId: "srv_a" }, at: 4 }, { op: "server.check", id: "srv_a", expectVersion: v }])
      .then(() => undefined, (e: unknown) => e);
    expect(codeOf(stale)).toBe(Code.Aborted);
    expect(await contract.lastEventId()).toBe(0);

    await contract.commit([{ op: "server.delete", id: "srv_a" }]);
    const gone = await contract.commit([{ op: "server.delete", id: "srv_a" }]).then(() => undefined, (e: unknown) => e);
    expect(codeOf(gone)).toBe(Code.NotFound);
  });
});
