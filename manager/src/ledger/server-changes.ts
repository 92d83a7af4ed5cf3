import type { ServerChangeRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";

/**
 * One change of one server record: its position in the store's change order
 * (servers.change_seq, the same on every manager of one database), and the
 * record as of that change (undefined: purged).
 */
export type ServerChange = ServerChangeRecord;

/** How many changes one read of the store returns. */
export const CHANGE_PAGE = 1_000;

/**
 * The most changes a watch resumes across. A token further behind gets a fresh
 * snapshot instead (cheaper than replaying most of the fleet, and memory stays
 * bounded whatever a client sends).
 */
export const RESUME_LIMIT = 10_000;

/** Delay before a read that failed (the database unreachable) is tried again; nothing is skipped meanwhile. */
export const READ_RETRY_MS = 1_000;

/** The token prefix: a token of another kind (an older manager's, garbage) is simply not one. */
const TOKEN_PREFIX = "seq:";

/** What the feed reads. */
export type ChangeSource = Pick<Store, "serverChangeHead" | "serverChangesSince">;

interface Subscriber {
  batch: (batch: readonly ServerChange[]) => void;
  /** The feed could not read on (the store dropped changes it had not read): the subscriber's view is incomplete. */
  reset: () => void;
}

/**
 * The live feed behind ServerService.WatchServers: it tails the store's
 * change order. The store stamps every committed write of a server record
 * with the next position (a purge leaves a tombstone with one), and on
 * PostgreSQL positions become visible in their order (store.ts
 * serverChangesSince), so reading on from the last position read never skips
 * a change, whichever manager committed it. Writers need not say what
 * changed: `changed()` (called for every committed batch that wrote a server,
 * here or on another manager, and on a resync) only wakes the feed; a burst
 * within one turn of the event loop is one read.
 *
 * Every server changed since the last read comes once, at its latest
 * position, in position order: a slow subscriber coalesces further itself.
 * Resume tokens name a position, so a token from one manager resumes on any
 * other of the same database.
 */
export class ServerChangeFeed {
  /** The last position read (every change up to it was published); undefined until the first read. */
  #seq: number | undefined;
  #scheduled = false;
  /** The last flush started: the next waits for it (never rejects). */
  #flushing: Promise<void> = Promise.resolve();
  readonly #subscribers = new Set<Subscriber>();
  /** Counts subscriptions, so a flush that read only the head knows whether a watch started meanwhile. */
  #subscriptions = 0;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  #init: Promise<void> | undefined;

  constructor(
    private readonly source: ChangeSource,
    private readonly opts: {
      /** A read failed; it is tried again after READ_RETRY_MS, nothing is skipped. */
      onReadError?: (err: unknown) => void;
      /** A subscriber threw (a bug): the others still get the batch, and the feed goes on. */
      onSubscriberError?: (err: unknown) => void;
    } = {},
  ) {}

  /**
   * Resolves once the feed knows where the store's changes stand (its first
   * read of the head, made on first use; an unreachable database is waited out).
   * A watch awaits it before reading its snapshot, so the feed never starts
   * after the snapshot's position.
   */
  get ready(): Promise<void> {
    this.#init ??= this.#start();
    return this.#init;
  }

  async #start(): Promise<void> {
    while (!this.#closed) {
      try {
        this.#seq = await this.source.serverChangeHead();
        return;
      } catch (err) {
        this.opts.onReadError?.(err);
        await new Promise((r) => setTimeout(r, READ_RETRY_MS).unref());
      }
    }
  }

  /** The position of the latest change published (0 before the first read). */
  get currentSeq(): number {
    return this.#seq ?? 0;
  }

  /** A batch that wrote servers committed (here or on another manager), or any may have changed (a resync). */
  changed(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    // After the writer's commit, before any timer; it waits for a flush still reading.
    setImmediate(() => void this.flush());
  }

  /** Stops reading (the manager is closing); pending retries are dropped. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
  }

  /**
   * Publishes every change committed so far (tests; normally scheduled by
   * `changed`). Resolves once they are published; never rejects (a failed
   * read is reported through `onReadError` and tried again).
   */
  flush(): Promise<void> {
    const run = this.#flushing.then(() => this.#flushOnce());
    this.#flushing = run;
    return run;
  }

  async #flushOnce(): Promise<void> {
    this.#scheduled = false;
    if (this.#closed) return;
    if (this.#seq === undefined) {
      // Not used yet: learning the head is all there is to do (nothing before it is published).
      await this.ready;
      return;
    }
    try {
      if (this.#subscribers.size === 0) {
        // Nobody to tell: only keep up with where the store stands, so the next watch's feed
        // does not start far behind. A watch that subscribed meanwhile may have read its
        // snapshot before this head: then the changes between are read for it, not skipped.
        const subscriptions = this.#subscriptions;
        const head = await this.source.serverChangeHead();
        if (this.#subscriptions === subscriptions) this.#seq = Math.max(this.#seq, head);
        else this.changed();
        return;
      }
      for (;;) {
        const page = await this.source.serverChangesSince(this.#seq, CHANGE_PAGE);
        if (page === undefined) {
          // The store dropped tombstones this feed had not read (over SERVER_TOMBSTONES_KEPT
          // purges while it could not read): its watchers start over from a snapshot.
          this.#seq = await this.source.serverChangeHead();
          for (const s of this.#subscribers) this.#call(() => s.reset());
          return;
        }
        if (page.length === 0) return;
        this.#seq = page[page.length - 1]!.seq;
        for (const s of this.#subscribers) this.#call(() => s.batch(page));
        if (page.length < CHANGE_PAGE) return;
      }
    } catch (err) {
      this.opts.onReadError?.(err);
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.changed(), READ_RETRY_MS);
      this.#retry.unref();
    }
  }

  #call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      // Never a rejected flush: the next flush waits for this one, and the scheduled one is not awaited.
      this.opts.onSubscriberError?.(err);
    }
  }

  /**
   * Calls `batch` with every published batch (in position order, each
   * position after the last) until the returned function is called; `reset`
   * when the feed had to skip changes (see #flushOnce). Await `ready` first:
   * changes committed before the feed's first read of the head are not published.
   */
  subscribe(batch: (batch: readonly ServerChange[]) => void, reset: () => void = () => {}): () => void {
    const s = { batch, reset };
    this.#subscribers.add(s);
    this.#subscriptions++;
    return () => this.#subscribers.delete(s);
  }

  /**
   * The servers changed after position `seq`, each once at its latest
   * position, in position order, and `upTo`: every change up to it is among
   * them or older than `seq`. Undefined when `seq` cannot be resumed from:
   * beyond the store's head (a token of another database), older than the
   * changes the store keeps, or more than RESUME_LIMIT changes behind.
   */
  async changesSince(seq: number): Promise<{ changes: ServerChange[]; upTo: number } | undefined> {
    const head = await this.source.serverChangeHead();
    if (seq > head) return undefined;
    const latest = new Map<string, ServerChange>();
    let after = seq;
    for (;;) {
      const page = await this.source.serverChangesSince(after, CHANGE_PAGE);
      if (page === undefined) return undefined;
      for (const c of page) {
        // A server changed again while the pages were read comes again, later: keep the latest.
        latest.delete(c.serverId);
        latest.set(c.serverId, c);
      }
      if (latest.size > RESUME_LIMIT) return undefined;
      if (page.length < CHANGE_PAGE) break;
      after = page[page.length - 1]!.seq;
    }
    const changes = [...latest.values()];
    return { changes, upTo: Math.max(head, changes[changes.length - 1]?.seq ?? 0) };
  }

  /** The opaque resume token for "every change up to position `seq` was delivered". */
  token(seq: number): string {
    return Buffer.from(`${TOKEN_PREFIX}${seq}`).toString("base64url");
  }

  /** The position in a token, or undefined (not a token of this kind, garbage). */
  parseToken(token: string): number | undefined {
    const m = /^seq:(\d{1,15})$/.exec(Buffer.from(token, "base64url").toString());
    return m ? Number(m[1]) : undefined;
  }
}
