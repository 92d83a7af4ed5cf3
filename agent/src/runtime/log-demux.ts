/** One piece of a container's output. */
export interface LogFrame {
  stream: "stdout" | "stderr";
  data: Buffer;
}

const HEADER = 8;
const STREAMS: Record<number, LogFrame["stream"] | undefined> = { 0: "stdout", 1: "stdout", 2: "stderr" };

/**
 * Splits Docker's multiplexed log stream (containers without a TTY) into
 * frames. Each frame is an 8-byte header — stream type (0 stdin, 1 stdout,
 * 2 stderr), three zero bytes, a big-endian uint32 payload length — then the
 * payload. Network chunks may hold several frames or cut one anywhere, so
 * bytes are buffered until a frame is complete.
 */
export class LogDemuxer {
  private pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the frames they complete. */
  push(chunk: Buffer): LogFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: LogFrame[] = [];
    let off = 0;
    while (this.pending.length - off >= HEADER) {
      const type = this.pending[off]!;
      const stream = STREAMS[type];
      // Checked before waiting for the payload: raw (TTY) output would otherwise look like a huge frame.
      if (stream === undefined || this.pending[off + 1] !== 0 || this.pending[off + 2] !== 0 || this.pending[off + 3] !== 0) {
        throw new Error(`not a multiplexed log stream (frame header ${this.pending.subarray(off, off + HEADER).toString("hex")}); is the container using a TTY?`);
      }
      const size = this.pending.readUInt32BE(off + 4);
      if (this.pending.length - off - HEADER < size) break;
      // Copy: the payload must not pin the (possibly large) network buffer.
      const data = Buffer.from(this.pending.subarray(off + HEADER, off + HEADER + size));
      if (data.length > 0) frames.push({ stream, data });
      off += HEADER + size;
    }
    this.pending = off === 0 ? this.pending : Buffer.from(this.pending.subarray(off));
    return frames;
  }

  /** Bytes of an incomplete frame still waiting for the rest. */
  get buffered(): number {
    return this.pending.length;
  }
}

/** Splits a frame's data into pieces of at most `max` bytes (messages on the link stay small). */
export function splitFrame(frame: LogFrame, max: number): LogFrame[] {
  if (frame.data.length <= max) return [frame];
  const out: LogFrame[] = [];
  for (let i = 0; i < frame.data.length; i += max) out.push({ stream: frame.stream, data: frame.data.subarray(i, i + max) });
  return out;
}

/**
 * Joins consecutive frames of the same stream into frames of up to `max`
 * bytes: Docker frames a log line by line, and one link message per line
 * made relaying a chatty container's log cost a message per line.
 */
export function mergeFrames(frames: LogFrame[], max: number): LogFrame[] {
  const out: LogFrame[] = [];
  let run: LogFrame[] = [];
  let size = 0;
  const flush = () => {
    if (run.length === 1) out.push(run[0]!);
    else if (run.length > 1) out.push({ stream: run[0]!.stream, data: Buffer.concat(run.map((f) => f.data), size) });
    run = [];
    size = 0;
  };
  for (const f of frames) {
    if (run.length > 0 && (run[0]!.stream !== f.stream || size + f.data.length > max)) flush();
    run.push(f);
    size += f.data.length;
  }
  flush();
  return out;
}
