/**
 * The last `limit` bytes of a stream of chunks, in bounded memory whatever
 * the stream's length: what an install script printed (RUN_INSTALL keeps the
 * last 64 KiB of its output).
 */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  /** Bytes seen in all. */
  total = 0;

  constructor(readonly limit: number) {}

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.total += chunk.length;
    // A chunk longer than the limit keeps only its own tail.
    const b = chunk.length > this.limit ? Buffer.from(chunk.subarray(chunk.length - this.limit)) : Buffer.from(chunk);
    this.chunks.push(b);
    this.size += b.length;
    while (this.size > this.limit) {
      const first = this.chunks[0]!;
      const over = this.size - this.limit;
      if (first.length <= over) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(over);
        this.size -= over;
      }
    }
  }

  /** Some output was left out before the bytes kept. */
  get truncated(): boolean {
    return this.total > this.size;
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}
