import type { Logger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import type { EventInput, EventRecord } from "../domain/records.js";
import { ServerChangeFeed } from "./server-changes.js";

/**
 * Hears each event appended to the ledger. `remote`: another manager of the
 * database appended it (PostgreSQL's change feed); every manager hears every
 * event, so what counts work done here (metrics) skips those.
 */
export type LedgerListener = (id: number, event: Readonly<EventInput>, remote: boolean) => void;

/**
 * The append-only event ledger: every state change berth makes or sees is
 * recorded here with its cause and actor (types: `catalogue.ts`). Listeners
 * hear about new events after they are stored (for live watches and alert
 * evaluation); `servers` is the feed of server record changes behind
 * WatchServers, woken by every committed batch that wrote a server record.
 *
 * Events are appended by the writer's own batch (`op`), and listeners hear
 * them once that batch committed (`follow`).
 */
export class Ledger {
  private readonly listeners = new Set<LedgerListener>();
  private readonly resyncListeners = new Set<() => void>();
  readonly servers: ServerChangeFeed;

  /** `log`: where listener failures and unreadable records are reported (silent without one). */
  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
    private readonly log?: Logger,
  ) {
    this.servers = new ServerChangeFeed(store, {
      onReadError: (err) => log?.error({ err }, "could not read server changes for their watchers; retrying (nothing is skipped)"),
      onSubscriberError: (err) => log?.error({ err }, "a server watch failed on a published change; the other watches got it"),
    });
  }

  /**
   * The operation that appends `e` as part of a writer's batch
   * (`store.commit([...changes, ledger.op(e)])`): the event is stored with
   * the change it explains, and listeners hear it once the batch committed
   * (through `follow`).
   */
  op(e: EventInput): WriteOp {
    return { op: "event.append", event: e, at: this.now() };
  }

  /**
   * Publishes what every committed batch of `store` appended and changed: its
   * events to listeners and watches, its server records to WatchServers.
   * Other managers' batches (PostgreSQL, `remote`) alike. On a `resync` (this
   * manager may have missed other managers' commits) resync listeners are
   * woken and every server is published as changed. Returns the unsubscribe.
   */
  follow(store: Store): () => void {
    return store.onCommit((c) => {
      for (const e of c.events) this.#published(e.id, e, c.remote === true);
      if (c.serverIds.size > 0) this.servers.changed();
      if (c.resync) this.#resync();
    });
  }

  #resync(): void {
    for (const l of this.resyncListeners) {
      try {
        l();
      } catch (err) {
        this.log?.error({ err }, "a resync listener failed; it may have missed other managers' changes");
      }
    }
    // Which servers changed is unknown: the feed reads on from its last position, which finds them all.
    this.servers.changed();
  }

  #published(id: number, e: EventInput, remote: boolean): void {
    for (const l of this.listeners) {
      try {
        l(id, e, remote);
      } catch (err) {
        // A listener's failure must never fail the write that produced the event, but it is a bug: say so.
        this.log?.error({ err, event: id, type: e.type, server: e.serverId }, "an event listener failed; the event is stored, the listener missed it");
      }
    }
  }

  /** Events oldest first, across projects (for tools and tests; the API reads through the store with its caller's scope). */
  async list(f: { serverId?: string; afterId?: number; limit?: number } = {}): Promise<EventRecord[]> {
    const upToId = await this.store.lastEventId();
    return this.store.readForward({ project: null, ...(f.serverId ? { serverId: f.serverId } : {}), afterId: f.afterId ?? 0, upToId, limit: f.limit ?? 1000 });
  }

  subscribe(listener: LedgerListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Hears when events may have been committed without being published here
   * (another manager's, while this one's change feed was down): a reader that
   * follows the ledger by id reads forward again. Returns the unsubscribe.
   */
  onResync(listener: () => void): () => void {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }
}
