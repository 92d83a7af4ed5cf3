/**
 * Which hosts are connected, seen from any manager of the database.
 *
 * An agent holds one stream, to one manager (the host's owner,
 * host-ownership.ts). That manager knows it from its AgentHub; every other
 * manager must show the host as connected too (ListHosts, alerts, orphans,
 * metrics), and must never show it offline while its agent is in fact up.
 * So a host is connected here when this manager's hub holds its stream, or
 * when the database says it is online with a live ownership term held by
 * another manager (store.liveHostOwners). That second part is a cache,
 * refreshed when another manager commits something about hosts (the change
 * feed, within milliseconds), and every `refreshMs` (a term lapsing is a
 * change nobody commits: its manager died).
 *
 * On SQLite (one manager per file) the hub is the whole truth: no cache.
 */
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

export interface HostPresence {
  /** The host's agent is connected, here or to another manager of this database. */
  isConnected(hostId: string): boolean;
  /** Every host connected here or to another manager. */
  connectedHostIds(): string[];
}

export interface ClusterPresenceOptions {
  store: Pick<Store, "liveHostOwners" | "onCommit">;
  /** This manager's own streams (AgentHub.isConnected). */
  local: { isConnected(hostId: string): boolean; connectedHostIds(): string[] };
  /** This manager process (the holder id of its leases). */
  holder: string;
  log: Logger;
  /** How often the cache is read again regardless of the change feed (default 1 s). */
  refreshMs?: number;
  now?: () => number;
}

/** Another manager's host changes are read this long after the first is heard (so a burst costs one read). */
const FEED_DEBOUNCE_MS = 20;

/** The presence of a manager that may share its database with others. */
export class ClusterPresence implements HostPresence {
  readonly #o: ClusterPresenceOptions;
  readonly #now: () => number;
  /** Hosts connected to another manager: id → that manager's holder id. */
  #remote = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  /** A refresh is running; another was asked for meanwhile. */
  #running: Promise<void> | undefined;
  #again = false;
  /** A feed-triggered refresh is scheduled (heartbeats of a big fleet arrive constantly: at most one read per FEED_DEBOUNCE_MS). */
  #soon: NodeJS.Timeout | undefined;

  constructor(o: ClusterPresenceOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  isConnected(hostId: string): boolean {
    return this.#o.local.isConnected(hostId) || this.#remote.has(hostId);
  }

  connectedHostIds(): string[] {
    return [...new Set([...this.#o.local.connectedHostIds(), ...this.#remote.keys()])];
  }

  /**
   * Reads who is connected where. Concurrent calls share one read, and one
   * asked for during a read runs once more after it (it may have missed a
   * commit that landed during the first).
   */
  refresh(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          const owners = await this.#o.store.liveHostOwners(this.#now());
          for (const [hostId, holder] of owners) if (holder === this.#o.holder) owners.delete(hostId);
          this.#remote = owners;
        } while (this.#again);
      } catch (err) {
        // The last known view stays: a database outage does not make every host look offline.
        this.#o.log.warn({ err }, "could not read which hosts are connected to other managers; keeping the last view");
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Reads now, then on every other manager's host change and every refreshMs, until stop(). */
  async start(): Promise<void> {
    this.#unsubscribe = this.#o.store.onCommit((c) => {
      if (!c.remote || (c.hostIds.size === 0 && !c.resync) || this.#soon) return;
      this.#soon = setTimeout(() => {
        this.#soon = undefined;
        void this.refresh();
      }, FEED_DEBOUNCE_MS);
      this.#soon.unref();
    });
    await this.refresh();
    const tick = () => {
      void this.refresh().finally(() => {
        if (!this.#timer) return;
        this.#timer = setTimeout(tick, this.#o.refreshMs ?? 1000);
        this.#timer.unref();
      });
    };
    this.#timer = setTimeout(tick, this.#o.refreshMs ?? 1000);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#soon) clearTimeout(this.#soon);
    this.#timer = this.#soon = undefined;
    this.#unsubscribe?.();
  }
}
