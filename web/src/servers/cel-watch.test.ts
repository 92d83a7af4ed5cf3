import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ServerSchema, WatchChange, WatchServersResponseSchema, type WatchServersResponse } from "@berth/proto/berth/v1/server_pb.js";
import { CelWatch } from "./cel-watch.js";
import { ServerWatch, type OpenWatch } from "./server-watch.js";

const srv = (id: string) => create(ServerSchema, { id, spec: { name: id } });
const snap = (...ids: string[]): WatchServersResponse[] => [
  ...ids.map((id) => create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT, server: srv(id) })),
  create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END, resumeToken: "t" }),
];
const settle = () => new Promise((r) => setTimeout(r, 30));

/** A manager that answers a filter it knows with its servers and refuses any other with InvalidArgument. */
function fakeManager(known: Record<string, string[]>) {
  const filters: string[] = [];
  let opened = 0;
  const open: OpenWatch = async function* (req, signal) {
    opened++;
    filters.push(req.filter ?? "");
    const ids = known[req.filter ?? ""];
    if (!ids) throw new ConnectError("filter: syntax error at line 1, column 3: bad", Code.InvalidArgument);
    for (const m of snap(...ids)) yield m;
    await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new ConnectError("aborted", Code.Canceled))));
  };
  return { open, filters, opened: () => opened };
}

describe("CelWatch", () => {
  it("sends the filter on WatchServers and switches to the new watch once its snapshot is in", async () => {
    const m = fakeManager({ a: ["s1"], b: ["s2", "s3"] });
    const w = new CelWatch((filter, onFilterError) => new ServerWatch(m.open, { filter, onFilterError, batchMs: 1, backoffMs: [5, 5] }));
    w.set("a");
    expect(w.getSnapshot().pending).toBe("a");
    await settle();
    expect(w.getSnapshot()).toMatchObject({ applied: "a", pending: undefined, error: undefined });
    expect([...w.getSnapshot().watch!.getSnapshot().servers.keys()]).toEqual(["s1"]);
    w.set("b");
    await settle();
    expect(w.getSnapshot().applied).toBe("b");
    expect([...w.getSnapshot().watch!.getSnapshot().servers.keys()]).toEqual(["s2", "s3"]);
    expect(m.filters).toEqual(["a", "b"]);
    w.stop();
  });

  it("keeps the previous filter's watch when the manager refuses a new one, and does not retry it", async () => {
    const m = fakeManager({ a: ["s1"] });
    const w = new CelWatch((filter, onFilterError) => new ServerWatch(m.open, { filter, onFilterError, batchMs: 1, backoffMs: [5, 5] }));
    w.set("a");
    await settle();
    const before = w.getSnapshot().watch;
    w.set("a &&");
    await settle();
    await settle();
    const s = w.getSnapshot();
    expect(s.applied).toBe("a");
    expect(s.watch).toBe(before);
    expect(s.pending).toBeUndefined();
    expect(s.error).toEqual({ code: Code.InvalidArgument, message: "filter: syntax error at line 1, column 3: bad", filter: "a &&" });
    // Once: a refused filter is not asked again.
    expect(m.filters).toEqual(["a", "a &&"]);
    expect([...s.watch!.getSnapshot().servers.keys()]).toEqual(["s1"]);
    // Asking for the applied filter again clears the error; "" leaves the advanced mode.
    w.set("a");
    expect(w.getSnapshot().error).toBeUndefined();
    w.set("");
    expect(w.getSnapshot()).toMatchObject({ applied: "", watch: undefined, pending: undefined });
    w.stop();
  });

  it("without a filter, a refusal is retried like any other error (the app's watch)", async () => {
    let opened = 0;
    const open: OpenWatch = async function* () {
      opened++;
      yield* [];
      throw new ConnectError("bad", Code.InvalidArgument);
    };
    const sw = new ServerWatch(open, { batchMs: 1, backoffMs: [5, 5] });
    sw.start();
    await settle();
    sw.stop();
    expect(opened).toBeGreaterThan(1);
  });
});
