import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { WatchUsageResponseSchema, type WatchUsageResponse } from "@berth/proto/berth/v1/usage_pb.js";
import { applyUsage, UsageWatch, type OpenUsageWatch } from "./usage-watch.js";

const report = (servers: [string, number][], extra: { hosts?: [string, number][]; gone?: string[] } = {}) =>
  create(WatchUsageResponseSchema, {
    servers: servers.map(([serverId, cpuPercent]) => ({ serverId, hostId: "h1", sample: { cpuPercent } })),
    hosts: (extra.hosts ?? []).map(([hostId, cpuPercent]) => ({ hostId, sample: { cpuPercent } })),
    goneServerIds: extra.gone ?? [],
  });
const empty = { servers: new Map(), hosts: new Map() };
const cpus = (m: ReadonlyMap<string, { cpuPercent?: number }>) => Object.fromEntries([...m].map(([k, v]) => [k, v.cpuPercent]));

describe("applyUsage", () => {
  it("a stream's first message replaces everything held", () => {
    const held = applyUsage(empty, report([["a", 1], ["b", 2]], { hosts: [["h1", 50]] }), true);
    const next = applyUsage(held, report([["b", 3]]), true);
    expect(cpus(next.servers)).toEqual({ b: 3 });
    expect(next.hosts.size).toBe(0);
  });

  it("later messages merge, drop the gone, and keep untouched maps", () => {
    const held = applyUsage(empty, report([["a", 1], ["b", 2]], { hosts: [["h1", 50]] }), true);
    const next = applyUsage(held, report([["a", 5]], { gone: ["b"] }), false);
    expect(cpus(next.servers)).toEqual({ a: 5 });
    expect(next.hosts).toBe(held.hosts); // nothing about hosts: the same map
    const hostsOnly = applyUsage(next, report([], { hosts: [["h1", 70]] }), false);
    expect(hostsOnly.servers).toBe(next.servers);
    expect(cpus(hostsOnly.hosts)).toEqual({ h1: 70 });
  });
});

function fakeManager(scripts: { messages: WatchUsageResponse[]; then: "hang" | Error }[]) {
  const requests: { project: string; hosts: boolean }[] = [];
  const open: OpenUsageWatch = async function* (req, signal) {
    requests.push(req);
    const s = scripts.shift();
    if (!s) return await new Promise<never>(() => {});
    for (const m of s.messages) yield m;
    if (s.then === "hang") await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new ConnectError("aborted", Code.Canceled))));
    else throw s.then;
  };
  return { open, requests };
}
const settle = (ms = 30) => new Promise((r) => setTimeout(r, ms));

describe("UsageWatch", () => {
  it("keeps the figures while reconnecting, and the new stream's first message replaces them", async () => {
    const m = fakeManager([
      { messages: [report([["a", 1], ["b", 2]]), report([["a", 4]])], then: new ConnectError("down", Code.Unavailable) },
      { messages: [report([["b", 9]])], then: "hang" },
    ]);
    const w = new UsageWatch(m.open, { hosts: true, backoffMs: [40, 40] });
    w.start();
    await settle(10);
    expect(w.getSnapshot().status).toBe("reconnecting");
    expect(w.getSnapshot().error).toContain("down");
    expect(cpus(w.getSnapshot().servers)).toEqual({ a: 4, b: 2 });
    await settle(100);
    expect(w.getSnapshot().status).toBe("live");
    expect(cpus(w.getSnapshot().servers)).toEqual({ b: 9 });
    expect(m.requests).toEqual([{ project: "", hosts: true }, { project: "", hosts: true }]);
    w.stop();
  });

  it("stops retrying when the token is refused", async () => {
    let told = "";
    const m = fakeManager([{ messages: [], then: new ConnectError("token revoked", Code.Unauthenticated) }]);
    const w = new UsageWatch(m.open, { backoffMs: [5, 5], onUnauthenticated: (msg) => (told = msg) });
    w.start();
    await settle(60);
    expect(told).toBe("token revoked");
    expect(m.requests.length).toBe(1);
    w.stop();
  });
});
