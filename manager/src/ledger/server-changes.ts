import { newId } from "../ids.js";
import type { ServerRecord } from "../domain/records.js";

/** One change of one server record, numbered in the order the feed published it. */
export interface ServerChange {
  /** Monotonic within this manager process (see `ServerChangeFeed.epoch`). */
  seq: number;
  serverId: string;
  /** The record after the change; undefined when it is gone (purged). */
  server: ServerRecord | undefined;
  /** Project and host of the server, also known for a record that is gone. */
  project: string;
  hostId: string;
}

/** Where a server lives, remembered for records that are gone. */
interface Placement {
  project: string;
  hostId: string;
}

/** How often a record that could not be read is tried again before its change is dropped. */
const LOAD_RETRIES = 3;
/** Delay before such a retry. */
export const LOAD_RETRY_MS = 1_000;

/** How many changes a watch can resume across; older tokens get a fresh snapshot. */
export const RESUME_WINDOW = 10_000;

/** A pending change taken by a flush, with its record once loaded. */
type Loaded = { serverId: string; hint: Partial<Placement>; server: ServerRecord | undefined } | { serverId: string; hint: Partial<Placement>; err: unknown };

/**
 * The live feed behind ServerService.WatchServers. Writers call `notify(id)`
 * right after they change a server record (the ledger's `follow` of every
 * committed batch, the reconciler's `onServerChanged`, and every ledger event
 * about a server); a burst of notifications for one server within the same
 * turn of the event loop is published once, on `setImmediate`, with the
 * record loaded once for every subscriber. The feed keeps the last
 * RESUME_WINDOW change ids so a watch can resume where it stopped instead of
 * starting over.
 *
 * Loading is asynchronous (store contract), so flushes are chained: the next
 * one starts only when the previous one has published. Sequence numbers are
 * handed out at publication, so they follow the order of publication, and a
 * server notified while its previous change is still loading is published
 * after it, never before.
 */
export class ServerChangeFeed {
  /** Distinguishes this process's sequence numbers from a previous run's. */
  readonly epoch = newId("w", 8).slice(2);
  private seq = 0;
  private readonly dirty = new Map<string, Partial<Placement>>();
  private scheduled = false;
  /** The last flush started: the next waits for it (never rejects). */
  private flushing: Promise<void> = Promise.resolve();
  private readonly recent: { seq: number; serverId: string; project: string; hostId: string }[] = [];
  private readonly placements = new Map<string, Placement>();
  private readonly subscribers = new Set<(batch: readonly ServerChange[]) => void>();
  /** Failed loads per server, for records waiting to be tried again. */
  private readonly loadFailures = new Map<string, number>();

  constructor(
    private readonly load: (serverId: string) => Promise<ServerRecord | undefined>,
    private readonly opts: {
      onLoadError?: (serverId: string, err: unknown, retrying: boolean) => void;
      /** A subscriber threw (a bug): the others still get the batch, and the feed goes on. */
      onSubscriberError?: (err: unknown) => void;
    } = {},
  ) {}

  /** The sequence number of the latest published change. */
  get currentSeq(): number {
    return this.seq;
  }

  /** Marks a server changed; `hint` tells where a record that is already gone lived. */
  notify(serverId: string, hint: Partial<Placement> = {}): void {
    if (!serverId) return;
    const prev = this.dirty.get(serverId);
    this.dirty.set(serverId, { ...prev, ...stripEmpty(hint) });
    if (!this.scheduled) {
      this.scheduled = true;
      // After the writer's commit, before any timer; it waits for a flush still loading.
      setImmediate(() => void this.flush());
    }
  }

  /**
   * Publishes every pending change (tests; normally scheduled by `notify`).
   * Resolves once they are published; never rejects (a record that cannot be
   * read is reported through `onLoadError` and tried again).
   */
  flush(): Promise<void> {
    const run = this.flushing.then(() => this.#flushOnce());
    this.flushing = run;
    return run;
  }

  async #flushOnce(): Promise<void> {
    this.scheduled = false;
    if (this.dirty.size === 0) return;
    const taken = [...this.dirty];
    // Notifications from here on belong to the next flush (which waits for this one).
    this.dirty.clear();
    // Without subscribers only the resume window needs the change, not the record (and no await:
    // a watch subscribing meanwhile must not receive a batch whose records were never read).
    const loading = this.subscribers.size > 0;
    const loaded: Loaded[] = loading
      ? await Promise.all(
          taken.map(async ([serverId, hint]): Promise<Loaded> => {
            try {
              return { serverId, hint, server: await this.load(serverId) };
            } catch (err) {
              return { serverId, hint, err };
            }
          }),
        )
      : taken.map(([serverId, hint]) => ({ serverId, hint, server: undefined }));
    const batch: ServerChange[] = [];
    const failed: [string, Partial<Placement>][] = [];
    for (const l of loaded) {
      const { serverId, hint } = l;
      if ("err" in l) {
        // Only this server's change waits (tried again shortly, a few times); the
        // others in the batch are published (one unreadable record once dropped them all).
        const n = (this.loadFailures.get(serverId) ?? 0) + 1;
        const retrying = n <= LOAD_RETRIES;
        if (retrying) {
          this.loadFailures.set(serverId, n);
          failed.push([serverId, hint]);
        } else {
          this.loadFailures.delete(serverId);
        }
        this.opts.onLoadError?.(serverId, l.err, retrying);
        continue;
      }
      const { server } = l;
      this.loadFailures.delete(serverId);
      const known = this.placements.get(serverId);
      const project = server?.project ?? hint.project ?? known?.project ?? "";
      const hostId = server?.hostId ?? hint.hostId ?? known?.hostId ?? "";
      if (server) this.placements.set(serverId, { project, hostId });
      else if (loading) this.placements.delete(serverId);
      const change = { seq: ++this.seq, serverId, server, project, hostId };
      batch.push(change);
      this.recent.push({ seq: change.seq, serverId, project, hostId });
    }
    if (failed.length > 0) {
      const t = setTimeout(() => {
        for (const [serverId, hint] of failed) this.notify(serverId, hint);
      }, LOAD_RETRY_MS);
      t.unref();
    }
    if (this.recent.length > RESUME_WINDOW) this.recent.splice(0, this.recent.length - RESUME_WINDOW);
    if (batch.length === 0) return;
    for (const s of this.subscribers) {
      try {
        s(batch);
      } catch (err) {
        // Never a rejected flush: the next flush waits for this one, and the scheduled one is not awaited.
        this.opts.onSubscriberError?.(err);
      }
    }
  }

  /** Calls `fn` with every published batch until the returned function is called. */
  subscribe(fn: (batch: readonly ServerChange[]) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /**
   * The servers changed after `seq` (each once, with its latest sequence
   * number and current record), or undefined when `seq` is outside the
   * resume window. Which changes is decided when called; the records are
   * read afterwards, so one may be newer than its sequence number says (a
   * later change of it is published with a higher one).
   */
  async changesSince(seq: number): Promise<ServerChange[] | undefined> {
    if (seq > this.seq) return undefined;
    const oldest = this.recent[0]?.seq ?? this.seq + 1;
    if (seq < oldest - 1) return undefined;
    const latest = new Map<string, { seq: number; project: string; hostId: string }>();
    for (const c of this.recent) {
      if (c.seq <= seq) continue;
      latest.delete(c.serverId);
      latest.set(c.serverId, c);
    }
    return Promise.all(
      [...latest].map(async ([serverId, c]) => {
        const server = await this.load(serverId);
        return { seq: c.seq, serverId, server, project: server?.project ?? c.project, hostId: server?.hostId ?? c.hostId };
      }),
    );
  }

  /** The opaque resume token for "everything up to `seq` was delivered". */
  token(seq: number): string {
    return Buffer.from(`${this.epoch}:${seq}`).toString("base64url");
  }

  /** The sequence number in a token from this process, or undefined (other process, garbage). */
  parseToken(token: string): number | undefined {
    const m = /^([a-z2-7]+):(\d+)$/.exec(Buffer.from(token, "base64url").toString());
    if (!m || m[1] !== this.epoch) return undefined;
    return Number(m[2]);
  }
}

function stripEmpty(p: Partial<Placement>): Partial<Placement> {
  const out: Partial<Placement> = {};
  if (p.project) out.project = p.project;
  if (p.hostId) out.hostId = p.hostId;
  return out;
}
