import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FileResultSchema, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { AgentGoneError, AgentHub, FeatureMissingError, type AgentSession } from "./agent-hub.js";

function session(hostId: string, features: string[] = ["files"]): AgentSession & { sent: ManagerMessage[] } {
  const sent: ManagerMessage[] = [];
  return { hostId, ready: true, lastSeen: 0, features: new Set(features), sent, send: (m) => void sent.push(m), close: () => {} };
}
const answer = (requestId: string) => create(FileResultSchema, { requestId, result: { case: "delete", value: {} } });

describe("AgentHub file requests", () => {
  it("sends a FileRequest to the host's session and resolves with the answer from that session only", async () => {
    const hub = new AgentHub();
    const old = session("host_a");
    const cur = session("host_a");
    hub.attach(old);
    hub.attach(cur);
    const p = hub.fileRequest("host_a", { requestId: "file_1", serverId: "srv_x", op: { case: "delete", value: { path: "a" } } })!;
    expect(cur.sent.map((m) => m.body.case)).toEqual(["fileRequest"]);
    expect(old.sent).toEqual([]);
    // An answer carrying the id from another session (the replaced one) is not taken.
    hub.deliverFileResult(old, answer("file_1"));
    expect(hub.pendingFileCount).toBe(1);
    hub.deliverFileResult(cur, answer("file_1"));
    expect((await p).result.case).toBe("delete");
    expect(hub.pendingFileCount).toBe(0);
  });

  it("answers undefined for a host without a ready session, and refuses an agent that does not serve files without sending", async () => {
    const hub = new AgentHub();
    expect(hub.fileRequest("host_none", { requestId: "file_1", serverId: "srv_x" })).toBeUndefined();
    const older = session("host_b", []);
    hub.attach(older);
    await expect(hub.fileRequest("host_b", { requestId: "file_2", serverId: "srv_x" })).rejects.toBeInstanceOf(FeatureMissingError);
    expect(older.sent).toEqual([]);
    expect(hub.supports("host_b", "files")).toBe(false);
    expect(hub.supports("host_none", "files")).toBeUndefined();
  });

  it("fails the requests a session had not answered when it ends, and only those", async () => {
    const hub = new AgentHub();
    const a = session("host_a");
    const b = session("host_b");
    hub.attach(a);
    hub.attach(b);
    const onA = hub.fileRequest("host_a", { requestId: "file_a", serverId: "srv_x" })!;
    const onB = hub.fileRequest("host_b", { requestId: "file_b", serverId: "srv_y" })!;
    hub.endLogs(a, "agent stream ended");
    await expect(onA).rejects.toBeInstanceOf(AgentGoneError);
    expect(hub.pendingFileCount).toBe(1);
    hub.deliverFileResult(b, answer("file_b"));
    expect((await onB).requestId).toBe("file_b");
  });
});
