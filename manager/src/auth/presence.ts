/**
 * How many managers share the database now: each holds a presence lease
 * `manager:<holder>` (store.ts lease.acquire), renewed well inside its TTL,
 * and counts the unexpired ones (countLiveLeases). The per-token rate budget
 * is split by that count (auth/limits.ts setManagers). A manager that dies
 * stops counting once its lease expires (TTL); a clean stop releases it at once.
 */
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

/** Presence leases are named `manager:<holder>`. */
export const PRESENCE_PREFIX = "manager:";

export interface PresenceOptions {
  store: Pick<Store, "commit" | "countLiveLeases">;
  /** This manager's identity (the leader lease's holder id). */
  holder: string;
  /** Told the live count after every beat (this manager included, so at least 1). */
  onCount: (managers: number) => void;
  log?: Logger;
  /** Renewal interval (default 5 s); the lease lives 3 intervals. */
  intervalMs?: number;
  now?: () => number;
}

/** Expired presence leases older than this are deleted now and then (managers that died). */
const PRUNE_AFTER_MS = 3_600_000;

export class ManagerPresence {
  #timer: NodeJS.Timeout | undefined;
  #beats = 0;
  #stopped = false;
  readonly #interval: number;
  readonly #now: () => number;

  constructor(private readonly opts: PresenceOptions) {
    this.#interval = opts.intervalMs ?? 5_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Renews this manager's lease and reports the live count; a database error keeps the last count (logged). */
  async beat(): Promise<void> {
    if (this.#stopped) return;
    const at = this.#now();
    const name = PRESENCE_PREFIX + this.opts.holder;
    try {
      await this.opts.store.commit([
        { op: "lease.acquire", name, holder: this.opts.holder, ttlMs: this.#interval * 3, at },
        // Managers that died leave their rows behind; every 100th beat clears the old ones.
        ...(this.#beats++ % 100 === 0 ? [{ op: "lease.pruneExpired" as const, prefix: PRESENCE_PREFIX, before: at - PRUNE_AFTER_MS }] : []),
      ]);
      this.opts.onCount(Math.max(1, await this.opts.store.countLiveLeases(PRESENCE_PREFIX, at)));
    } catch (err) {
      this.opts.log?.warn({ err }, "could not renew this manager's presence or count the managers; keeping the last count");
    }
  }

  start(): void {
    if (this.#timer) return;
    void this.beat();
    this.#timer = setInterval(() => void this.beat(), this.#interval);
    this.#timer.unref();
  }

  /** Stops beating and releases the lease, so the others count one fewer at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.opts.store.commit([{ op: "lease.release", name: PRESENCE_PREFIX + this.opts.holder, holder: this.opts.holder }]).catch(() => {});
  }
}
