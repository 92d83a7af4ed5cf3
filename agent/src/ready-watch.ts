/**
 * Ready patterns (ServerSpec.ready_pattern): the agent watches the output of
 * a running container labelled `berth.ready-pattern` until a line matches,
 * and from then on reports the run's ContainerInfo.ready_time. The manager
 * shows the server Starting until then (docs/templates.md, "Ready pattern").
 *
 * Memory is bounded whatever the container writes: output is matched line by
 * line, at most MAX_READY_LINE_BYTES of a line are kept (the rest of a longer
 * line is skipped up to its newline), and nothing is kept once the line
 * matched or the container stopped. Patterns are checked against
 * catastrophic backtracking by the manager before they get here.
 */
import { clone } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import type { ContainerRuntime } from "./runtime/container-runtime.js";
import type { LogFrame } from "./runtime/log-demux.js";
import { runStartMs } from "./log-streams.js";
import { messageOf } from "./runtime/docker-runtime.js";

/** The container label holding its ready pattern (set by the agent at create from ContainerSpec.ready_pattern). */
export const LABEL_READY_PATTERN = "berth.ready-pattern";

/** The longest part of a line matched; the rest of a longer line is skipped. */
export const MAX_READY_LINE_BYTES = 8 * 1024;

/**
 * A run first seen after it started (the agent restarted while it ran) is
 * scanned from its start, but at most this many of its last lines: a line
 * further back is not found again, and the server shows Starting until the
 * pattern matches anew (or is restarted).
 */
export const RESCAN_LINES = 10_000;

/** Containers watched at once at most (each holds a Docker log connection until it matched). */
export const MAX_READY_WATCHES = 256;

/** Terminal colour and cursor sequences (CSI ... final byte), removed before matching. */
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

interface LineState {
  /** The line so far, at most the cap. */
  buf: Buffer;
  /** The line went over the cap: skipping to its newline. */
  skipping: boolean;
}

/**
 * Matches a pattern against output, one line at a time (stdout and stderr
 * each have their own partial line). A line is tested once its newline comes,
 * or, for a line over the cap, once with its first `maxLine` bytes. Bytes
 * that are not UTF-8 become U+FFFD; a trailing CR and colour codes are removed.
 */
export class ReadyMatcher {
  private readonly lines: Record<LogFrame["stream"], LineState> = {
    stdout: { buf: Buffer.alloc(0), skipping: false },
    stderr: { buf: Buffer.alloc(0), skipping: false },
  };
  private hit = false;

  constructor(
    private readonly re: RegExp,
    private readonly maxLine = MAX_READY_LINE_BYTES,
  ) {}

  get matched(): boolean {
    return this.hit;
  }

  /** Bytes held for unfinished lines (at most twice the cap). */
  get buffered(): number {
    return this.lines.stdout.buf.length + this.lines.stderr.buf.length;
  }

  /** Feeds output; true once some line has matched (what follows is then ignored). */
  push(stream: LogFrame["stream"], data: Buffer): boolean {
    if (this.hit) return true;
    const st = this.lines[stream];
    let from = 0;
    while (from <= data.length && !this.hit) {
      const nl = data.indexOf(0x0a, from);
      const piece = data.subarray(from, nl < 0 ? data.length : nl);
      if (!st.skipping) {
        const room = this.maxLine - st.buf.length;
        if (piece.length > room) {
          // Over the cap: its beginning is the line; the rest up to the newline is skipped.
          this.test(Buffer.concat([st.buf, piece.subarray(0, room)]));
          st.buf = Buffer.alloc(0);
          st.skipping = true;
        } else if (piece.length > 0) {
          st.buf = st.buf.length === 0 ? Buffer.from(piece) : Buffer.concat([st.buf, piece]);
        }
      }
      if (nl < 0) break;
      if (!st.skipping) this.test(st.buf);
      st.buf = Buffer.alloc(0);
      st.skipping = false;
      from = nl + 1;
    }
    if (this.hit) this.lines.stdout.buf = this.lines.stderr.buf = Buffer.alloc(0);
    return this.hit;
  }

  private test(line: Buffer): void {
    if (this.hit) return;
    const text = line.toString("utf8").replace(/\r$/, "").replace(ANSI, "");
    this.re.lastIndex = 0;
    if (this.re.test(text)) this.hit = true;
  }
}

/** One container run being watched. */
interface Watch {
  /** The run: container id and start time. */
  key: string;
  ac: AbortController;
  /** When a line matched (agent clock). */
  readyMs?: number;
  /** The watch ended without a match (the log ended, or it failed). */
  ended: boolean;
  /** The first pass over the run's output so far is done. */
  scanned: Promise<void>;
}

/** The run a ContainerInfo describes: its id and start time. */
function runKey(c: ContainerInfo): string {
  return `${c.id}@${c.startedTime ? timestampMs(c.startedTime) : 0}`;
}

/**
 * The agent's ready watches, one per running container that has a ready
 * pattern, driven by what the agent observes (`observe`, from events,
 * inventories and command results), never by a timer of its own.
 */
export class ReadyWatches {
  private readonly watches = new Map<string, Watch>();
  private warnedFull = false;

  constructor(
    private readonly runtime: Pick<ContainerRuntime, "logs">,
    /** A watched container's line matched: report it (its next ContainerInfo carries ready_time). */
    private readonly onReady: (containerId: string) => void,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Containers being watched (not yet matched). */
  get active(): number {
    let n = 0;
    for (const w of this.watches.values()) if (w.readyMs === undefined && !w.ended) n++;
    return n;
  }

  /**
   * Follows what `c` says of its container: a run with a ready pattern not
   * watched yet is watched from its start (a run that ended without a match
   * while still running is watched again); a container that no longer runs
   * is forgotten (its next start waits for a new match). Resolves once the
   * output the run had so far was scanned.
   */
  observe(c: ContainerInfo): Promise<void> {
    const pattern = c.labels[LABEL_READY_PATTERN];
    if (!pattern || (c.state !== "running" && c.state !== "paused")) {
      this.forget(c.id);
      return Promise.resolve();
    }
    const key = runKey(c);
    const known = this.watches.get(c.id);
    if (known && known.key === key && !(known.ended && known.readyMs === undefined && c.state === "running")) return known.scanned;
    known?.ac.abort();
    this.watches.delete(c.id);
    if (this.active >= MAX_READY_WATCHES) {
      if (!this.warnedFull) this.log.warn({ container: c.id, max: MAX_READY_WATCHES }, "too many containers wait for their ready pattern; this one is not watched (it shows Starting)");
      this.warnedFull = true;
      return Promise.resolve();
    }
    let re: RegExp;
    try {
      re = new RegExp(pattern);
    } catch (err) {
      this.log.warn({ container: c.id, err: messageOf(err) }, "the container's ready pattern is not a regular expression; not watched");
      return Promise.resolve();
    }
    const w: Watch = { key, ac: new AbortController(), ended: false, scanned: Promise.resolve() };
    this.watches.set(c.id, w);
    const startedMs = c.startedTime ? timestampMs(c.startedTime) : 0;
    const sinceMs = Math.max(0, runStartMs(c, startedMs, c.id) ?? startedMs - 1000);
    const matcher = new ReadyMatcher(re);
    let scanDone!: () => void;
    w.scanned = new Promise((resolve) => (scanDone = resolve));
    void this.run(c.id, w, matcher, sinceMs, scanDone);
    return w.scanned;
  }

  /** Stops watching a container (it stopped or is gone). */
  forget(containerId: string): void {
    this.watches.get(containerId)?.ac.abort();
    this.watches.delete(containerId);
  }

  /** Stops every watch (the agent stops). */
  stopAll(): void {
    for (const w of this.watches.values()) w.ac.abort();
    this.watches.clear();
  }

  /** `c` with ready_time when its run's line matched, else `c` itself. */
  annotate(c: ContainerInfo): ContainerInfo {
    const w = this.watches.get(c.id);
    if (w?.readyMs === undefined || w.key !== runKey(c) || (c.state !== "running" && c.state !== "paused")) return c;
    const out = clone(ContainerInfoSchema, c);
    out.readyTime = timestampFromMs(w.readyMs);
    return out;
  }

  /**
   * The run's output so far (its last RESCAN_LINES lines since it started),
   * then, without a match, what it writes from then on until it stops.
   */
  private async run(id: string, w: Watch, matcher: ReadyMatcher, sinceMs: number, scanDone: () => void): Promise<void> {
    const signal = w.ac.signal;
    const feed = async (frames: AsyncIterable<LogFrame>): Promise<boolean> => {
      for await (const f of frames) {
        if (signal.aborted) return false;
        if (matcher.push(f.stream, f.data)) return true;
      }
      return false;
    };
    try {
      const scanFrom = this.now();
      let hit = await feed(await this.runtime.logs(id, { follow: false, tailLines: RESCAN_LINES, sinceSeconds: sinceMs / 1000 }, signal));
      scanDone();
      // Overlapping the scan by a second: a line twice is harmless, a line missed is not.
      if (!hit && !signal.aborted) hit = await feed(await this.runtime.logs(id, { follow: true, tailLines: 0, sinceSeconds: Math.max(sinceMs, scanFrom - 1000) / 1000 }, signal));
      if (signal.aborted) return;
      if (!hit) {
        w.ended = true;
        return;
      }
      w.readyMs = this.now();
      this.log.info({ container: id }, "a line matched the container's ready pattern");
      this.onReady(id);
    } catch (err) {
      if (signal.aborted) return;
      w.ended = true;
      this.log.warn({ container: id, err: messageOf(err) }, "could not watch the container's output for its ready pattern; trying again at the next inventory");
    } finally {
      scanDone();
    }
  }
}
