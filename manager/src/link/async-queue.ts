/**
 * A bound on what an AsyncQueue holds. Items pushed while it is reached are
 * dropped and counted; the first item accepted after drops (or the close)
 * is preceded by one `gap` item standing for them, so the consumer learns
 * where output is missing and how much.
 */
export interface QueueBound<T> {
  /** Most total `sizeOf` held at once. */
  maxSize: number;
  /** Most items held at once (bounds the per-item overhead of tiny items). */
  maxItems: number;
  sizeOf(item: T): number;
  /** Items never dropped (e.g. the end of a stream); they still count towards the bound. */
  keep?(item: T): boolean;
  /** The item that marks `count` dropped items of `size` in total. */
  gap(count: number, size: number): T;
}

/**
 * A push queue consumed as an AsyncIterable: the bridge between callbacks
 * that produce messages and a streaming handler that yields them. Unbounded
 * unless given a QueueBound; with one, a consumer that stops reading costs
 * at most the bound (plus kept items and one gap marker).
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private closed = false;
  private error: unknown;
  private size = 0;
  private droppedCount = 0;
  private droppedSize = 0;
  private totalDroppedCount = 0;
  private totalDroppedSize = 0;

  constructor(private readonly bound?: QueueBound<T>) {}

  /** Queues `item`; false when the bound made it drop the item (it is counted). */
  push(item: T): boolean {
    if (this.closed) return false;
    if (this.waiter) {
      // The consumer waits only with nothing held and no gap pending: hand the item over.
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: item, done: false });
      return true;
    }
    const b = this.bound;
    if (b) {
      const s = b.sizeOf(item);
      const full = this.items.length >= b.maxItems || this.size + s > b.maxSize;
      if (full && !b.keep?.(item)) {
        this.droppedCount++;
        this.droppedSize += s;
        this.totalDroppedCount++;
        this.totalDroppedSize += s;
        return false;
      }
      this.flushGap();
      this.size += s;
    }
    this.items.push(item);
    return true;
  }

  /** Ends iteration after the queued items; with `err`, iteration throws it instead. */
  close(err?: unknown): void {
    if (this.closed) return;
    this.flushGap();
    this.closed = true;
    this.error = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: undefined, done: true });
    }
  }

  /** Ends iteration at once, dropping what is held (the consumer is gone). */
  abandon(): void {
    this.items.length = 0;
    this.size = 0;
    this.droppedCount = 0;
    this.droppedSize = 0;
    this.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** What is held now: items and their total size (0 without a bound). */
  get held(): { items: number; size: number } {
    return { items: this.items.length, size: this.size };
  }

  /** Everything dropped since the queue was made. */
  get dropped(): { count: number; size: number } {
    return { count: this.totalDroppedCount, size: this.totalDroppedSize };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length > 0) {
        const item = this.items.shift()!;
        if (this.bound) this.size -= this.bound.sizeOf(item);
        yield item;
        continue;
      }
      if (this.droppedCount > 0) {
        // Caught up with a gap: tell the consumer now rather than with the next item.
        this.flushGap();
        continue;
      }
      if (this.closed) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      const r = await new Promise<IteratorResult<T>>((resolve) => (this.waiter = resolve));
      if (r.done) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      yield r.value;
    }
  }

  /** Queues the marker for items dropped since the last one (it is never dropped itself). */
  private flushGap(): void {
    if (!this.bound || this.droppedCount === 0) return;
    const gap = this.bound.gap(this.droppedCount, this.droppedSize);
    this.droppedCount = 0;
    this.droppedSize = 0;
    this.size += this.bound.sizeOf(gap);
    this.items.push(gap);
  }
}
