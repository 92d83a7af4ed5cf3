import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ContainerInfoSchema, LogRequestSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { LogStreams, runStartMs, TokenBucket, type LogChunkInit } from "./log-streams.js";
import type { ContainerRuntime, LogOptions } from "./runtime/container-runtime.js";
import type { LogFrame } from "./runtime/log-demux.js";

const log = pino({ level: "silent" });

/** One server's container, whose state and log the test drives; every logs() call is a feed. */
function sim() {
  let c: ContainerInfo | undefined;
  const feeds: { id: string; opts: LogOptions; push(text: string, stream?: "stdout" | "stderr"): void; end(): void }[] = [];
  const runtime = {
    list: async () => (c ? [c] : []),
    inspect: async () => c,
    async logs(id: string, opts: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
      const queue: LogFrame[] = [];
      let ended = false;
      let wake: (() => void) | undefined;
      feeds.push({ id, opts, push: (text, stream = "stdout") => (queue.push({ stream, data: Buffer.from(text) }), wake?.()), end: () => ((ended = true), wake?.()) });
      signal.addEventListener("abort", () => wake?.());
      return (async function* () {
        for (;;) {
          if (queue.length) yield queue.shift()!;
          else if (ended || signal.aborted) return;
          else await new Promise<void>((r) => (wake = r));
        }
      })();
    },
  } as unknown as ContainerRuntime;
  // Like Docker, a restarted container keeps its previous run's FinishedAt.
  const run = (id: string, startedMs: number) =>
    (c = create(ContainerInfoSchema, { id, state: "running", startedTime: timestampFromMs(startedMs), labels: { "berth.server": "srv_a" }, ...(c?.id === id && c.finishedTime ? { finishedTime: c.finishedTime } : {}) }));
  const exit = (code: number, atMs: number) => c && ((c = create(ContainerInfoSchema, { ...c, state: "exited", exitCode: code, finishedTime: timestampFromMs(atMs) })), undefined);
  return { runtime, feeds, run, exit };
}

function sink() {
  const sent: LogChunkInit[] = [];
  const said = () => sent.map((m) => (m.marker ? `[${m.marker}: ${m.message}]` : m.data ? Buffer.from(m.data as Uint8Array).toString() : m.end ? `[end ${m.reason}]` : "[open]"));
  return { sent, said, send: async (m: LogChunkInit) => (sent.push(m), true) };
}

const consoleRequest = (tailLines: number) => create(LogRequestSchema, { requestId: "r1", serverId: "srv_a", follow: true, tailLines, console: true });

describe("a console stream", () => {
  it("starts with the backlog of the running container, then follows run after run with markers between them", async () => {
    const s = sim();
    const out = sink();
    const streams = new LogStreams(s.runtime, out.send, log);
    s.run("c1aaaaaaaaaaaa", 1_000_000);
    streams.start(consoleRequest(10));
    await vi.waitFor(() => expect(s.feeds).toHaveLength(1));
    expect(s.feeds[0]!.opts).toEqual({ follow: true, tailLines: 10 });
    s.feeds[0]!.push("ready\n");
    s.exit(3, 1_500_000);
    s.feeds[0]!.end();
    await vi.waitFor(() => expect(out.said()).toContain("[container_stopped: container c1aaaaaaaaaa exited with code 3]"));
    // Restarted: a new start time is a new run, whose output is read from just after the last run
    // finished (its first lines can be stamped before its StartedAt).
    s.run("c1aaaaaaaaaaaa", 2_000_000);
    await vi.waitFor(() => expect(s.feeds).toHaveLength(2));
    expect(s.feeds[1]!.opts).toEqual({ follow: true, tailLines: 0, sinceSeconds: 1500.001 });
    s.feeds[1]!.push("ready again\n");
    await vi.waitFor(() => expect(out.said().at(-1)).toBe("ready again\n"));
    expect(out.said()).toEqual(["[open]", "ready\n", "[container_stopped: container c1aaaaaaaaaa exited with code 3]", "[container_started: container c1aaaaaaaaaa started]", "ready again\n"]);
    // Only a cancel ends it, without an end chunk.
    streams.cancel("r1");
    await vi.waitFor(() => expect(streams.active).toBe(0));
    expect(out.sent.some((m) => m.end)).toBe(false);
  });

  it("with no backlog asked, starts from now; with none running, shows the last run's lines and waits", async () => {
    const s = sim();
    const out = sink();
    const streams = new LogStreams(s.runtime, out.send, log);
    s.run("c2bbbbbbbbbbbb", 1_000_000);
    const before = Date.now() / 1000;
    streams.start(consoleRequest(0));
    await vi.waitFor(() => expect(s.feeds).toHaveLength(1));
    expect(s.feeds[0]!.opts.tailLines).toBe(0);
    expect(s.feeds[0]!.opts.sinceSeconds).toBeGreaterThanOrEqual(before);
    streams.cancel("r1");

    const stopped = sim();
    const out2 = sink();
    const streams2 = new LogStreams(stopped.runtime, out2.send, log);
    stopped.run("c3cccccccccccc", 1_000_000);
    stopped.exit(0, 2_000_000);
    streams2.start(consoleRequest(5));
    await vi.waitFor(() => expect(stopped.feeds).toHaveLength(1));
    expect(stopped.feeds[0]!.opts).toEqual({ follow: false, tailLines: 5 });
    stopped.feeds[0]!.push("bye\n");
    stopped.feeds[0]!.end();
    await vi.waitFor(() => expect(out2.said()).toEqual(["[open]", "bye\n"]));
    // The same run is not followed (it is not running); a new container is, its whole log, with a marker.
    stopped.run("c4dddddddddddd", 3_000_000);
    await vi.waitFor(() => expect(stopped.feeds).toHaveLength(2));
    expect(stopped.feeds[1]!.opts).toEqual({ follow: true, tailLines: 0 });
    expect(out2.said().at(-1)).toBe("[container_started: container c4dddddddddd started]");
    streams2.cancel("r1");
  });

  it("leaves out output beyond the rate limit and says how much, once output fits again", async () => {
    const s = sim();
    const out = sink();
    const streams = new LogStreams(s.runtime, out.send, log);
    s.run("c5eeeeeeeeeeee", 1_000_000);
    streams.start(consoleRequest(0));
    await vi.waitFor(() => expect(s.feeds).toHaveLength(1));
    // The burst (256 KiB) passes; what follows at once does not.
    for (let i = 0; i < 4; i++) s.feeds[0]!.push("x".repeat(64 * 1024));
    s.feeds[0]!.push("y".repeat(10_000));
    await vi.waitFor(() => expect(out.sent.filter((m) => m.data).length).toBe(4));
    // A second later the rate (64 KiB/s) lets a line through, after a marker counting what was left out.
    await new Promise((r) => setTimeout(r, 1_100));
    s.feeds[0]!.push("z\n");
    await vi.waitFor(() => expect(out.said().at(-1)).toBe("z\n"));
    expect(out.sent.at(-2)).toMatchObject({ marker: "dropped", droppedBytes: 10_000n });
    streams.cancel("r1");
  });
});

describe("TokenBucket", () => {
  it("lets a burst through, then the rate", () => {
    let t = 0;
    const b = new TokenBucket(100, 300, () => t);
    expect(b.take(300)).toBe(true);
    expect(b.take(1)).toBe(false);
    t = 500;
    expect(b.take(50)).toBe(true);
    expect(b.take(1)).toBe(false);
    t = 100_000;
    expect(b.take(301)).toBe(false);
    expect(b.take(300)).toBe(true);
  });
});

describe("where a later run's output begins (runStartMs)", () => {
  const info = (id: string, finishedMs?: number) => create(ContainerInfoSchema, { id, ...(finishedMs ? { finishedTime: timestampFromMs(finishedMs) } : {}) });
  it("just after the previous run of the same container finished; the whole log of a container not streamed before; a second early when no finish is on record", () => {
    expect(runStartMs(info("c1", 5_000), 9_000, "c1")).toBe(5_001);
    expect(runStartMs(info("c2", 5_000), 9_000, "c1")).toBeUndefined();
    expect(runStartMs(info("c1"), 9_000, "c1")).toBe(8_000);
    // A finish after the start is not this run's predecessor.
    expect(runStartMs(info("c1", 9_500), 9_000, "c1")).toBe(8_000);
  });
});
