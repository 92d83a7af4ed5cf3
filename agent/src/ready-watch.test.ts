import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { LABEL_READY_PATTERN, MAX_READY_LINE_BYTES, ReadyMatcher, ReadyWatches, RESCAN_LINES } from "./ready-watch.js";
import type { ContainerRuntime, LogOptions } from "./runtime/container-runtime.js";
import type { LogFrame } from "./runtime/log-demux.js";

const log = pino({ level: "silent" });
const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));
const out = (s: string) => Buffer.from(s);

describe("ReadyMatcher", () => {
  it("matches a whole line, only once its newline came", () => {
    const m = new ReadyMatcher(/Done \(.*\)!/);
    expect(m.push("stdout", out("loading\n[12:00:01] Done (1.2"))).toBe(false);
    expect(m.push("stdout", out("s)! For help, type \"help\""))).toBe(false);
    expect(m.push("stdout", out("\n"))).toBe(true);
    expect(m.matched).toBe(true);
    expect(m.buffered).toBe(0);
  });

  it("anchors work per line: ^ and $ are the line's start and end, without CR or colour codes", () => {
    const m = new ReadyMatcher(/^ready$/);
    expect(m.push("stdout", out("not ready\nready now\n"))).toBe(false);
    expect(m.push("stdout", out("\x1b[32mready\x1b[0m\r\n"))).toBe(true);
  });

  it("keeps stdout's and stderr's partial lines apart", () => {
    const m = new ReadyMatcher(/^Done$/);
    m.push("stdout", out("Do"));
    m.push("stderr", out("ne\n"));
    expect(m.matched).toBe(false);
    expect(m.push("stdout", out("ne\n"))).toBe(true);
  });

  it("a line longer than the cap is matched by its beginning, once; the rest is skipped, not held", () => {
    const cap = 64;
    const m = new ReadyMatcher(/x{10}Done/, cap);
    // The pattern sits past the cap: never seen, and nothing of the long line is kept.
    expect(m.push("stdout", out(`${"a".repeat(cap)}xxxxxxxxxxDone`))).toBe(false);
    expect(m.buffered).toBe(0);
    expect(m.push("stdout", out("x".repeat(10_000)))).toBe(false);
    expect(m.buffered).toBe(0);
    // The next line is matched normally.
    expect(m.push("stdout", out("\nxxxxxxxxxxDone\n"))).toBe(true);
    const head = new ReadyMatcher(/^Done/, cap);
    expect(head.push("stdout", out(`Done${"y".repeat(cap * 4)}`))).toBe(true);
  });

  it("output without any newline never holds more than the cap per stream", () => {
    const m = new ReadyMatcher(/never/);
    for (let i = 0; i < 1000; i++) {
      m.push("stdout", Buffer.alloc(4096, 0x61));
      m.push("stderr", Buffer.alloc(4096, 0x62));
      expect(m.buffered).toBeLessThanOrEqual(2 * MAX_READY_LINE_BYTES);
    }
    expect(m.matched).toBe(false);
  });

  it("binary output (invalid UTF-8, NULs) is matched as text with replacement characters, without error", () => {
    const m = new ReadyMatcher(/^started$/);
    expect(m.push("stdout", Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0xc3, 0x28, 0x0a]))).toBe(false);
    expect(m.push("stdout", Buffer.concat([out("started"), Buffer.from([0x0a])]))).toBe(true);
  });

  it("a pattern that never matches, over 100 MB of lines: memory stays bounded", () => {
    const m = new ReadyMatcher(/^Done \(\d+\.\d+s\)!$/);
    const chunk = out(`${"line of output ".repeat(60)}\n`.repeat(100));
    for (let i = 0; i < 1200; i++) m.push("stdout", chunk);
    expect(m.matched).toBe(false);
    expect(m.buffered).toBeLessThanOrEqual(MAX_READY_LINE_BYTES);
  });
});

/** A runtime whose logs the test feeds: each logs() call is one feed. */
function fakeRuntime() {
  const feeds: { push(f: LogFrame): void; end(): void; signal: AbortSignal; opts: LogOptions; id: string }[] = [];
  const runtime = {
    async logs(id: string, o: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
      const queue: LogFrame[] = [];
      let ended = false;
      let wake: (() => void) | undefined;
      feeds.push({ push: (f) => (queue.push(f), wake?.()), end: () => ((ended = true), wake?.()), signal, opts: o, id });
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
  return { runtime: runtime as unknown as Pick<ContainerRuntime, "logs">, feeds };
}

const STARTED = 1_700_000_000_000;

function ctr(o: { state?: string; startedAt?: number; pattern?: string; id?: string } = {}): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: o.id ?? "c1",
    state: o.state ?? "running",
    startedTime: timestampFromMs(o.startedAt ?? STARTED),
    labels: { "berth.server": "srv_a", ...(o.pattern === "" ? {} : { [LABEL_READY_PATTERN]: o.pattern ?? "Done \\(.*\\)!" }) },
  });
}

function watches() {
  const { runtime, feeds } = fakeRuntime();
  const ready: string[] = [];
  const w = new ReadyWatches(runtime, (id) => ready.push(id), log, () => STARTED + 5_000);
  return { w, feeds, ready };
}

describe("ReadyWatches", () => {
  it("scans the run's output so far, then follows it; a match is reported once and annotates the run", async () => {
    const { w, feeds, ready } = watches();
    const scanned = w.observe(ctr());
    await tick();
    // First the run's existing output, from its start (a second early: Docker stamps early lines so), bounded.
    expect(feeds[0]!.opts).toEqual({ follow: false, tailLines: RESCAN_LINES, sinceSeconds: (STARTED - 1000) / 1000 });
    feeds[0]!.push({ stream: "stdout", data: out("loading\n") });
    feeds[0]!.end();
    await scanned;
    await tick();
    expect(feeds[1]!.opts.follow).toBe(true);
    expect(w.annotate(ctr()).readyTime).toBeUndefined();
    feeds[1]!.push({ stream: "stdout", data: out("Done (1.2s)! For help\n") });
    await tick();
    expect(ready).toEqual(["c1"]);
    expect(timestampMs(w.annotate(ctr()).readyTime!)).toBe(STARTED + 5_000);
    // Watching stopped at the match.
    expect(feeds[1]!.signal.aborted || w.active === 0).toBe(true);
    // Seen again (an inventory): nothing new is opened, nothing reported again.
    await w.observe(ctr());
    expect(feeds).toHaveLength(2);
    expect(ready).toEqual(["c1"]);
  });

  it("a run first seen after its line (the agent restarted) is ready once its output so far was scanned", async () => {
    const { w, feeds } = watches();
    const scanned = w.observe(ctr());
    await tick();
    feeds[0]!.push({ stream: "stderr", data: out("x\nDone (3.0s)!\n") });
    feeds[0]!.end();
    await scanned;
    expect(w.annotate(ctr()).readyTime).toBeDefined();
    expect(feeds).toHaveLength(1);
  });

  it("a restart (a new start time) or a stop resets readiness", async () => {
    const { w, feeds } = watches();
    const first = w.observe(ctr());
    await tick();
    feeds[0]!.push({ stream: "stdout", data: out("Done (1s)!\n") });
    feeds[0]!.end();
    await first;
    expect(w.annotate(ctr()).readyTime).toBeDefined();
    // The same container, started again: another run, not ready until its own line.
    const again = ctr({ startedAt: STARTED + 60_000 });
    expect(w.annotate(again).readyTime).toBeUndefined();
    void w.observe(again);
    await tick();
    expect(feeds[1]!.opts.sinceSeconds).toBe((STARTED + 60_000 - 1000) / 1000);
    expect(w.annotate(again).readyTime).toBeUndefined();
    // Stopped: forgotten, and an exited container never carries a ready time.
    await w.observe(ctr({ state: "exited", startedAt: STARTED + 60_000 }));
    expect(feeds[1]!.signal.aborted).toBe(true);
    expect(w.active).toBe(0);
  });

  it("containers without a pattern, or not running, are not watched", async () => {
    const { w, feeds } = watches();
    await w.observe(ctr({ pattern: "" }));
    await w.observe(ctr({ state: "exited", id: "c2" }));
    await w.observe(ctr({ state: "created", id: "c3" }));
    expect(feeds).toHaveLength(0);
    expect(w.annotate(ctr({ pattern: "" })).readyTime).toBeUndefined();
  });

  it("a label that is not a regular expression is not watched (no throw)", async () => {
    const { w, feeds } = watches();
    await w.observe(ctr({ pattern: "Done (" }));
    expect(feeds).toHaveLength(0);
  });

  it("a log that ended while the container still runs is watched again when next seen", async () => {
    const { w, feeds } = watches();
    const scanned = w.observe(ctr());
    await tick();
    feeds[0]!.end();
    await scanned;
    await tick();
    feeds[1]!.end(); // the followed log broke off
    await tick();
    void w.observe(ctr());
    await tick();
    expect(feeds).toHaveLength(3);
    expect(feeds[2]!.opts.follow).toBe(false);
  });

  it("stopAll aborts every watch", async () => {
    const { w, feeds } = watches();
    void w.observe(ctr());
    void w.observe(ctr({ id: "c2" }));
    await tick();
    w.stopAll();
    expect(feeds.every((f) => f.signal.aborted)).toBe(true);
  });
});
