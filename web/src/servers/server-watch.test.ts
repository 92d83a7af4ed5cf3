import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Phase, ServerSchema, WatchChange, WatchServersResponseSchema, type WatchServersResponse } from "@berth/proto/berth/v1/server_pb.js";
import { ServerWatch, type OpenWatch } from "./server-watch.js";

const srv = (id: string, phase = Phase.RUNNING) => create(ServerSchema, { id, spec: { name: id }, status: { phase } });
const msg = (change: WatchChange, server?: ReturnType<typeof srv>, resumeToken = "") =>
  create(WatchServersResponseSchema, { change, ...(server ? { server } : {}), resumeToken });

/** A scripted manager: each open() takes the next script; a script ends with an error or hangs. */
function fakeManager(scripts: { messages: WatchServersResponse[]; then: "hang" | Error }[]) {
  const requests: string[] = [];
  const open: OpenWatch = async function* (req, signal) {
    requests.push(req.resumeToken ?? "");
    const s = scripts.shift();
    if (!s) return await new Promise<never>(() => {});
    for (const m of s.messages) yield m;
    if (s.then === "hang") {
      await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new ConnectError("aborted", Code.Canceled))));
    } else {
      throw s.then;
    }
  };
  return { open, requests };
}

const settle = () => new Promise((r) => setTimeout(r, 30));

describe("ServerWatch", () => {
  it("swaps a snapshot in at SNAPSHOT_END, then applies changes in place", async () => {
    const m = fakeManager([
      {
        messages: [msg(WatchChange.SNAPSHOT, srv("a")), msg(WatchChange.SNAPSHOT, srv("b")), msg(WatchChange.SNAPSHOT_END, undefined, "t1"), msg(WatchChange.UPSERT, srv("b", Phase.STOPPED), "t2"), msg(WatchChange.DELETE, srv("a"), "t3")],
        then: "hang",
      },
    ]);
    const w = new ServerWatch(m.open, { batchMs: 1 });
    w.start();
    await settle();
    const snap = w.getSnapshot();
    expect(snap.status).toBe("live");
    expect([...snap.servers.keys()]).toEqual(["b"]);
    expect(snap.servers.get("b")?.status?.phase).toBe(Phase.STOPPED);
    w.stop();
  });

  it("keeps its rows while reconnecting, resumes with the last token, and keeps unchanged objects", async () => {
    const m = fakeManager([
      { messages: [msg(WatchChange.SNAPSHOT, srv("a")), msg(WatchChange.SNAPSHOT, srv("b")), msg(WatchChange.SNAPSHOT_END, undefined, "t1"), msg(WatchChange.UPSERT, srv("b", Phase.STOPPED), "t2")], then: new ConnectError("down", Code.Unavailable) },
      // The manager restarted: a full snapshot, where "a" did not change.
      { messages: [msg(WatchChange.SNAPSHOT, srv("a")), msg(WatchChange.SNAPSHOT, srv("c")), msg(WatchChange.SNAPSHOT_END, undefined, "u1")], then: "hang" },
    ]);
    const seen: string[] = [];
    const w = new ServerWatch(m.open, { batchMs: 1, backoffMs: [40, 40] });
    w.subscribe(() => seen.push(`${w.getSnapshot().status}:${[...w.getSnapshot().servers.keys()].join(",")}`));
    w.start();
    await new Promise((r) => setTimeout(r, 10));
    const a = w.getSnapshot().servers.get("a");
    expect(w.getSnapshot().status).toBe("reconnecting");
    expect(w.getSnapshot().servers.size).toBe(2);
    await new Promise((r) => setTimeout(r, 100));
    expect(m.requests).toEqual(["", "t2"]);
    const snap = w.getSnapshot();
    expect(snap.status).toBe("live");
    expect([...snap.servers.keys()]).toEqual(["a", "c"]);
    expect(snap.servers.get("a")).toBe(a);
    // Never an empty table in between.
    expect(seen.some((s) => s.endsWith(":"))).toBe(false);
    w.stop();
  });

  it("applies a resumed stream's changes without dropping the rows it holds", async () => {
    const m = fakeManager([
      { messages: [msg(WatchChange.SNAPSHOT, srv("a")), msg(WatchChange.SNAPSHOT, srv("b")), msg(WatchChange.SNAPSHOT_END, undefined, "t1")], then: new ConnectError("down", Code.Unavailable) },
      { messages: [msg(WatchChange.UPSERT, srv("a", Phase.STOPPED), "t2"), msg(WatchChange.SNAPSHOT_END, undefined, "t2")], then: "hang" },
    ]);
    const w = new ServerWatch(m.open, { batchMs: 1, backoffMs: [10, 10] });
    w.start();
    await new Promise((r) => setTimeout(r, 80));
    const snap = w.getSnapshot();
    expect(snap.status).toBe("live");
    expect(snap.servers.get("a")?.status?.phase).toBe(Phase.STOPPED);
    expect(snap.servers.has("b")).toBe(true);
    w.stop();
  });

  it("asks for heartbeats; silence makes it stale (rows kept), a heartbeat makes it live again, and a longer silence reopens the stream with its token", async () => {
    const requests: { token: string; heartbeat: number }[] = [];
    const beat = { fire: () => {} };
    const open: OpenWatch = async function* (req, signal) {
      requests.push({ token: req.resumeToken ?? "", heartbeat: req.heartbeatSeconds ?? 0 });
      if (requests.length === 1) {
        yield msg(WatchChange.SNAPSHOT, srv("a"));
        yield msg(WatchChange.SNAPSHOT_END, undefined, "t1");
        // Silent until the test fires one heartbeat, then silent for good (a frozen manager).
        await new Promise<void>((r) => (beat.fire = r));
        yield msg(WatchChange.HEARTBEAT);
      }
      await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new ConnectError("aborted", Code.Canceled))));
    };
    const w = new ServerWatch(open, { batchMs: 1, heartbeatSeconds: 1, staleAfterMs: 120, reconnectAfterMs: 1500, backoffMs: [10, 10] });
    w.start();
    await settle();
    expect(w.getSnapshot().status).toBe("live");
    expect(requests[0]).toEqual({ token: "", heartbeat: 1 });
    const heardAt = w.getSnapshot().lastHeardMs;
    expect(heardAt).toBeGreaterThan(0);

    await new Promise((r) => setTimeout(r, 250));
    expect(w.getSnapshot()).toMatchObject({ status: "stale", error: expect.stringContaining("no word from the manager") });
    expect([...w.getSnapshot().servers.keys()]).toEqual(["a"]);

    beat.fire();
    await settle();
    expect(w.getSnapshot().status).toBe("live");
    expect(w.getSnapshot().lastHeardMs).toBeGreaterThan(heardAt);

    // Silent past reconnectAfterMs: this stream is dropped and a new one resumes from t1.
    for (let i = 0; i < 200 && requests.length < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(requests.length).toBeGreaterThanOrEqual(2);
    expect(requests[1]!.token).toBe("t1");
    expect([...w.getSnapshot().servers.keys()]).toEqual(["a"]);
    w.stop();
  });

  it("stops and reports when the token is refused", async () => {
    const m = fakeManager([{ messages: [], then: new ConnectError("token revoked", Code.Unauthenticated) }]);
    let told = "";
    const w = new ServerWatch(m.open, { onUnauthenticated: (msg) => (told = msg), backoffMs: [5, 5] });
    w.start();
    await settle();
    expect(told).toBe("token revoked");
    expect(m.requests).toHaveLength(1);
    w.stop();
  });
});
