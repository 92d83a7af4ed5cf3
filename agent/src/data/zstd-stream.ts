/**
 * zstd for backup archives, as a sequence of independent frames.
 *
 * Node 20's zlib has no zstd, so compression is @bokuweb/zstd-wasm (the
 * reference libzstd built to WebAssembly: nothing native to build on a host),
 * whose API is one-shot: a whole buffer in, one whole frame out. Writing
 * therefore cuts the stream into FRAME_INPUT_BYTES pieces, each its own
 * frame; reading finds where each frame ends (RFC 8878, section 3.1.1) and
 * decompresses frames one at a time. A sequence of frames is a valid zstd
 * stream, so `zstd -dc` reads the result as one. Frames are compressed in
 * worker threads (zstd-workers.ts), several at once, and decompressed on
 * the caller's thread (decompressFrame: faster there, see archive.ts).
 *
 * What is read comes from outside (a backup target, another host), so the
 * reader accepts only what it can bound: a frame must declare its content
 * size or be decompressed into at most MAX_FRAME_CONTENT bytes, its
 * compressed bytes are buffered up to MAX_FRAME_COMPRESSED, and anything
 * that is not a frame, a truncated frame or a reserved field is refused.
 */
import { decompress, init } from "@bokuweb/zstd-wasm";
import { ZSTD_WORKERS, zstdInWorker } from "./zstd-workers.js";

/**
 * Uncompressed bytes per frame. 4 MiB compressed ~15% faster than 1 MiB at
 * the same ratio (1 MiB: 169-216 MB/s, 4 MiB: 194-248 MB/s at level 1 on
 * 64 MB random + 64 MB text, dev machine); memory stays a few MiB.
 */
export const FRAME_INPUT_BYTES = 4 * 1024 * 1024;
/** The most a frame may decompress to; berth's own frames hold FRAME_INPUT_BYTES. */
export const MAX_FRAME_CONTENT = 64 * 1024 * 1024;
/** The most compressed bytes buffered for one frame: ZSTD_compressBound of MAX_FRAME_CONTENT, rounded up. */
export const MAX_FRAME_COMPRESSED = MAX_FRAME_CONTENT + MAX_FRAME_CONTENT / 128 + 64 * 1024;
export const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frames: 0x184D2A50-0x184D2A5F. */
const SKIPPABLE_MAGIC_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
/** RFC 8878 3.1.1.2.4: a block's size never exceeds 128 KiB. */
const BLOCK_MAXIMUM_SIZE = 128 * 1024;

/** What the reader refuses: the caller turns it into its own error (extraction: UnsafeArchive). */
export class ZstdFormatError extends Error {
  override readonly name = "ZstdFormatError";
}

let ready: Promise<void> | undefined;
/** Loads the WebAssembly module on this thread (for decompressFrame), once per thread (a second init() of @bokuweb/zstd-wasm breaks it: compress answers zeros). */
export function zstdReady(): Promise<void> {
  ready ??= init().catch((err: unknown) => {
    ready = undefined;
    throw err;
  });
  return ready;
}

/**
 * Frames in flight per worker: one being compressed and one waiting, so a
 * worker never idles while the next piece is gathered.
 */
const IN_FLIGHT_PER_WORKER = 2;

/**
 * Compresses each piece into one zstd frame, in zstd-workers.ts's worker
 * threads, and yields the frames in order: together a valid zstd stream.
 * Pieces must be at most MAX_FRAME_CONTENT bytes (createArchive's are
 * FRAME_INPUT_BYTES). A piece that owns its whole buffer
 * (Buffer.allocUnsafeSlow) is handed to the worker, not copied: the caller
 * must not touch it afterwards. At most IN_FLIGHT_PER_WORKER × ZSTD_WORKERS
 * pieces are in flight; the next is pulled from `pieces` only when there is
 * room, so a fast producer waits for the codec.
 */
export async function* compressFrames(pieces: AsyncIterable<Buffer>, level: number): AsyncGenerator<Buffer> {
  const inFlight: Array<Promise<Buffer>> = [];
  try {
    for await (const piece of pieces) {
      if (piece.length > MAX_FRAME_CONTENT) throw new RangeError(`a piece of ${piece.length} bytes is larger than a frame may hold (${MAX_FRAME_CONTENT})`);
      const p = zstdInWorker(piece, { op: "compress", level });
      p.catch(() => {}); // awaited in order below; a failure behind another must not be unhandled meanwhile
      inFlight.push(p);
      while (inFlight.length >= IN_FLIGHT_PER_WORKER * ZSTD_WORKERS) yield await inFlight.shift()!;
    }
    while (inFlight.length > 0) yield await inFlight.shift()!;
  } finally {
    inFlight.length = 0; // left unawaited when the reader stops early: their results are dropped
  }
}

/**
 * Splits a byte stream into whole zstd frames, however it is chunked:
 * `push` answers the frames completed by a chunk (skippable frames dropped),
 * `end` throws unless the stream ended between frames. Throws
 * ZstdFormatError on anything that is not a zstd frame, or a frame beyond
 * the bounds in the module comment; bytes held never exceed
 * MAX_FRAME_COMPRESSED plus one chunk.
 */
export class ZstdFrameSplitter {
  private chunks: Buffer[] = [];
  private held = 0;
  /** The current frame's length so far as parsed (header and whole blocks), or 0 between frames. */
  private scanned = 0;
  /** The current frame: its Content_Checksum_flag, and content bytes known from raw and RLE blocks. */
  private checksum = false;
  private content = 0;
  /** The current frame's whole length once its last block is parsed, else 0. */
  private frameBytes = 0;
  /** Bytes of a skippable frame still to drop. */
  private skipping = 0;

  push(chunk: Buffer): Buffer[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.held += chunk.length;
    }
    const frames: Buffer[] = [];
    for (;;) {
      if (this.skipping > 0) {
        this.skipping -= this.drop(Math.min(this.skipping, this.held));
        if (this.skipping > 0) return frames;
      }
      const frame = this.scan();
      if (frame === "skip") continue;
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  /** Throws unless every byte pushed belonged to a whole frame. */
  end(): void {
    if (this.held > 0 || this.skipping > 0) throw new ZstdFormatError("the zstd stream ends inside a frame: the archive is truncated");
  }

  /** Parses as far as the bytes held allow; answers the next whole frame, "skip" after a skippable frame's header, or undefined. */
  private scan(): Buffer | "skip" | undefined {
    if (this.frameBytes > 0) return this.takeFrame();
    if (this.scanned === 0) {
      if (this.held < 4) return undefined;
      const magic = this.peek(0, 4).readUInt32LE(0);
      if ((magic & SKIPPABLE_MAGIC_MASK) >>> 0 === SKIPPABLE_MAGIC) {
        if (this.held < 8) return undefined;
        const size = this.peek(4, 4).readUInt32LE(0);
        this.drop(8);
        this.skipping = size;
        return "skip";
      }
      if (magic !== ZSTD_MAGIC) throw new ZstdFormatError(`not a zstd frame (magic ${magic.toString(16).padStart(8, "0")})`);
      if (this.held < 5) return undefined;
      const fhd = this.peek(4, 1)[0]!;
      const fcsFlag = fhd >> 6;
      const singleSegment = (fhd >> 5) & 1;
      if ((fhd >> 3) & 1) throw new ZstdFormatError("a zstd frame header has its reserved bit set");
      this.checksum = ((fhd >> 2) & 1) === 1;
      const didSize = [0, 1, 2, 4][fhd & 3]!;
      const fcsSize = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
      const headerSize = 5 + (singleSegment ? 0 : 1) + didSize + fcsSize;
      if (this.held < headerSize) return undefined;
      if (fcsSize > 0) {
        const fcs = this.peek(headerSize - fcsSize, fcsSize);
        const declared = fcsSize === 1 ? fcs[0]! : fcsSize === 2 ? fcs.readUInt16LE(0) + 256 : fcsSize === 4 ? fcs.readUInt32LE(0) : Number(fcs.readBigUInt64LE(0));
        if (declared > MAX_FRAME_CONTENT) throw new ZstdFormatError(`a zstd frame declares ${declared} bytes of content; more than ${MAX_FRAME_CONTENT} per frame is refused`);
      }
      this.content = 0;
      this.scanned = headerSize;
    }
    // Blocks, each a 3-byte header (Last_Block, Block_Type, Block_Size) and its payload.
    for (;;) {
      if (this.scanned > MAX_FRAME_COMPRESSED) throw new ZstdFormatError(`a zstd frame is longer than ${MAX_FRAME_COMPRESSED} bytes compressed; refused`);
      if (this.held < this.scanned + 3) return undefined;
      const h = this.peek(this.scanned, 3);
      const bh = h[0]! | (h[1]! << 8) | (h[2]! << 16);
      const last = bh & 1;
      const type = (bh >> 1) & 3;
      const size = bh >>> 3;
      if (type === 3) throw new ZstdFormatError("a zstd block has the reserved block type");
      if (size > BLOCK_MAXIMUM_SIZE) throw new ZstdFormatError(`a zstd block of ${size} bytes is larger than the format allows`);
      if (type !== 2) this.content += size;
      if (this.content > MAX_FRAME_CONTENT) throw new ZstdFormatError(`a zstd frame holds more than ${MAX_FRAME_CONTENT} bytes of content; refused`);
      const payload = type === 1 ? 1 : size;
      this.scanned += 3 + payload;
      if (last) break;
    }
    this.frameBytes = this.scanned + (this.checksum ? 4 : 0);
    if (this.frameBytes > MAX_FRAME_COMPRESSED) throw new ZstdFormatError(`a zstd frame is longer than ${MAX_FRAME_COMPRESSED} bytes compressed; refused`);
    return this.takeFrame();
  }

  /** The parsed frame once all of its bytes (last block's payload, checksum) are held. */
  private takeFrame(): Buffer | undefined {
    if (this.held < this.frameBytes) return undefined;
    const frame = this.take(this.frameBytes);
    this.frameBytes = 0;
    this.scanned = 0;
    return frame;
  }

  /** `n` bytes at `offset` into what is held (copied only when they straddle chunks). */
  private peek(offset: number, n: number): Buffer {
    let i = 0;
    while (offset >= this.chunks[i]!.length) offset -= this.chunks[i++]!.length;
    const first = this.chunks[i]!;
    if (offset + n <= first.length) return first.subarray(offset, offset + n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (; got < n; i++) {
      const c = this.chunks[i]!;
      got += c.copy(out, got, offset, Math.min(c.length, offset + n - got));
      offset = 0;
    }
    return out;
  }

  /** Removes and answers the first `n` bytes held. */
  private take(n: number): Buffer {
    const parts: Buffer[] = [];
    let got = 0;
    let whole = 0; // chunks taken entirely: removed at once (shift per chunk is quadratic with many small chunks)
    while (got < n) {
      const c = this.chunks[whole]!;
      const want = n - got;
      if (c.length <= want) {
        parts.push(c);
        whole++;
        got += c.length;
      } else {
        parts.push(c.subarray(0, want));
        this.chunks[whole] = c.subarray(want);
        got += want;
      }
    }
    this.chunks.splice(0, whole);
    this.held -= n;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Drops up to `n` bytes held; answers how many. */
  private drop(n: number): number {
    const k = Math.min(n, this.held);
    this.take(k);
    return k;
  }
}

/**
 * Decompresses one whole frame from ZstdFrameSplitter, into at most
 * MAX_FRAME_CONTENT bytes. Call zstdReady() first.
 */
export function decompressFrame(frame: Buffer): Buffer {
  let out: Uint8Array;
  try {
    out = decompress(frame, { defaultHeapSize: MAX_FRAME_CONTENT });
  } catch (err) {
    throw new ZstdFormatError(`a zstd frame does not decompress: it is damaged (${(err as Error).message})`);
  }
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}
