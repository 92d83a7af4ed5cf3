import { create } from "@bufbuild/protobuf";
import { ContainerInfoSchema, LogRequestSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { LogStreams, type LogChunkInit } from "./log-streams.js";
import type { ContainerRuntime, LogOptions } from "./runtime/container-runtime.js";
import type { LogFrame } from "./runtime/log-demux.js";

const log = pino({ level: "silent" });
const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));

/** A runtime with one container whose log is fed by the test. */
function fakeRuntime(opts: { containers?: boolean } = {}) {
  const feeds: { push(f: LogFrame): void; end(): void; pending(): number; signal: AbortSignal; opts: LogOptions }[] = [];
  const runtime = {
    async list(serverId?: string) {
      if (opts.containers === false) return [];
      return [create(ContainerInfoSchema, { id: "c1", state: "running", labels: { "berth.server": serverId ?? "" } })];
    },
    async logs(_id: string, o: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
      const queue: LogFrame[] = [];
      let ended = false;
      let wake: (() => void) | undefined;
      feeds.push({
        push: (f) => (queue.push(f), wake?.()),
        end: () => ((ended = true), wake?.()),
        pending: () => queue.length,
        signal,
        opts: o,
      });
      signal.addEventListener("abort", () => wake?.());
      return (async function* () {
        for (;;) {
          if (queue.length) yield queue.shift()!;
          else if (ended || signal.aborted) return;
          else await new Promise<void>((r) => (wake = r));
        }
      })();
    },
  };
  return { runtime: runtime as unknown as ContainerRuntime, feeds };
}

function sink() {
  const sent: LogChunkInit[] = [];
  return { sent, send: async (c: LogChunkInit) => (sent.push(c), true) };
}

describe("LogStreams", () => {
  it("opens, relays frames as bounded chunks and ends", async () => {
    const { runtime, feeds } = fakeRuntime();
    const out = sink();
    const streams = new LogStreams(runtime, out.send, log);
    streams.start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_a", follow: true, tailLines: 5 }));
    await tick();
    expect(feeds[0]!.opts).toEqual({ follow: true, tailLines: 5 });
    expect(out.sent).toEqual([{ requestId: "r1" }]); // open
    feeds[0]!.push({ stream: "stderr", data: Buffer.alloc(100 * 1024, 120) });
    feeds[0]!.end();
    await tick();
    expect(out.sent.slice(1).map((c) => [c.stream, (c.data as Buffer | undefined)?.length])).toEqual([
      ["stderr", 64 * 1024],
      ["stderr", 36 * 1024],
      [undefined, undefined],
    ]);
    expect(out.sent.at(-1)).toEqual({ requestId: "r1", end: true });
    expect(streams.active).toBe(0);
  });

  it("stops reading on cancel and when the link drops, without an end chunk", async () => {
    const { runtime, feeds } = fakeRuntime();
    const out = sink();
    const streams = new LogStreams(runtime, out.send, log);
    streams.start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_a", follow: true }));
    streams.start(create(LogRequestSchema, { requestId: "r2", serverId: "srv_a", follow: true }));
    await tick();
    streams.cancel("r1");
    await tick();
    expect(feeds[0]!.signal.aborted).toBe(true);
    expect(feeds[1]!.signal.aborted).toBe(false);
    streams.closeAll();
    await tick();
    expect(feeds[1]!.signal.aborted).toBe(true);
    expect(out.sent.filter((c) => c.end)).toEqual([]);
    expect(streams.active).toBe(0);
  });

  it("followed, waits for a container still being made: open at once, its output once it exists", async () => {
    const made = { containers: false };
    const { runtime, feeds } = fakeRuntime(made);
    const out = sink();
    const streams = new LogStreams(runtime, out.send, log);
    streams.start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_new", follow: true, tailLines: 10 }));
    await tick();
    expect(out.sent).toEqual([{ requestId: "r1" }]);
    expect(feeds).toHaveLength(0);
    made.containers = true;
    await vi.waitFor(() => expect(feeds).toHaveLength(1), { timeout: 5_000 });
    feeds[0]!.push({ stream: "stdout", data: Buffer.from("hello\n") });
    await vi.waitFor(() => expect(out.sent.map((c) => (c.data ? Buffer.from(c.data as Buffer).toString() : ""))).toContain("hello\n"));
    // Opened once only.
    expect(out.sent.filter((c) => !c.data && !c.end)).toHaveLength(1);
    streams.cancel("r1");
    await vi.waitFor(() => expect(streams.active).toBe(0));
  });

  it("followed, a wait for a container that never comes ends with the caller, without an end chunk", async () => {
    const { runtime } = fakeRuntime({ containers: false });
    const out = sink();
    const streams = new LogStreams(runtime, out.send, log);
    streams.start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_new", follow: true }));
    await tick();
    streams.cancel("r1");
    await vi.waitFor(() => expect(streams.active).toBe(0));
    expect(out.sent).toEqual([{ requestId: "r1" }]);
  });

  it("answers a server without a container with an error chunk", async () => {
    const { runtime } = fakeRuntime({ containers: false });
    const out = sink();
    new LogStreams(runtime, out.send, log).start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_gone" }));
    await tick();
    expect(out.sent).toEqual([{ requestId: "r1", end: true, reason: "ContainerMissing", error: "server srv_gone has no container on this host" }]);
  });

  it("with a window, stops reading Docker once it is spent and goes on as the manager grants credit", async () => {
    const { runtime, feeds } = fakeRuntime();
    const out = sink();
    const streams = new LogStreams(runtime, out.send, log);
    // Room for three 1000-byte chunks (each counts 256 bytes more).
    streams.start(create(LogRequestSchema, { requestId: "r1", serverId: "srv_a", follow: true, windowBytes: 3 * 1256 }));
    await tick();
    for (let i = 0; i < 10; i++) feeds[0]!.push({ stream: "stdout", data: Buffer.alloc(1000, 48 + i) });
    await tick();
    const data = () => out.sent.filter((c) => c.data).map((c) => (c.data as Buffer)[0]! - 48);
    expect(data()).toEqual([0, 1, 2]);
    // The rest stays with Docker: the agent pulled at most the frame it is holding.
    expect(feeds[0]!.pending()).toBeGreaterThanOrEqual(6);
    await tick(50);
    expect(data()).toEqual([0, 1, 2]);
    streams.credit("r1", 2 * 1256);
    await tick();
    expect(data()).toEqual([0, 1, 2, 3, 4]);
    // Cancelled while waiting for credit: it stops at once, without an end chunk.
    streams.cancel("r1");
    await tick();
    expect(feeds[0]!.signal.aborted).toBe(true);
    expect(streams.active).toBe(0);
    expect(out.sent.filter((c) => c.end)).toEqual([]);
  });

  it("ignores a repeated request id", async () => {
    const { runtime, feeds } = fakeRuntime();
    const streams = new LogStreams(runtime, sink().send, log);
    const req = create(LogRequestSchema, { requestId: "r1", serverId: "srv_a", follow: true });
    streams.start(req);
    streams.start(req);
    await tick();
    expect(feeds).toHaveLength(1);
    streams.closeAll();
  });
});
