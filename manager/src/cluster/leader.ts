/**
 * The leader lease: of the managers sharing one database, exactly one holds
 * the lease named "leader" and runs the work that must run once (alert
 * evaluation, retention, orphan alerts, webhook delivery: manager.ts).
 *
 *            acquire ok                       renew ok (every renewMs)
 *   follower ───────────► leader ◄──────────────────────────┐
 *      ▲                    │ ──────────────────────────────┘
 *      │  held by another   │ refused (another holds it), or no successful
 *      └────────────────────┘ renewal before the local deadline (lapsed)
 *
 * The lease lives in the store (store.ts lease.acquire): ttlMs after each
 * successful acquire it expires unless renewed, and any other manager may
 * take it then. A leader that cannot reach the database (renewals failing)
 * stops acting at its local deadline: ttlMs after the attempt that last
 * succeeded *started* (the expiry the database holds is later than that),
 * less `clockSkewMs`, because the expiry is compared with the other
 * managers' clocks (store.ts says why the caller's clock is enough). So it
 * never acts on a lease another manager may already have taken.
 *
 * Takeover after a leader dies (kill -9, no release): the lease expires at
 * most ttlMs after its last renewal, and a follower tries every renewMs, so
 * another manager leads within ttlMs + renewMs (13 s by default) of the last
 * renewal. A leader that stops cleanly releases the lease, and the next
 * follower's attempt (within renewMs) takes it.
 */
import { performance } from "node:perf_hooks";
import { LeaseHeldError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

/** The lease every manager of one database competes for. */
export const LEADER_LEASE = "leader";

export const DEFAULT_LEADER_LEASE = {
  ttlMs: 10_000,
  renewMs: 3_000,
  /** How far apart the managers' clocks may be (NTP keeps them far closer). */
  clockSkewMs: 1_000,
} as const;

export interface LeaderLeaseOptions {
  store: Pick<Store, "commit" | "getLease">;
  /** This manager process (a fresh id per process, e.g. newId("mi")). */
  holder: string;
  log: Logger;
  /** Default LEADER_LEASE. */
  name?: string;
  ttlMs?: number;
  renewMs?: number;
  /** Leadership ends this long before the local deadline; must be below ttlMs - renewMs. */
  clockSkewMs?: number;
  /** The wall clock written into the lease (default Date.now). */
  now?: () => number;
}

type Listener = (isLeader: boolean) => void;

/**
 * Acquires and renews one lease on a timer; `isLeader` says whether this
 * manager may act on it now, `onChange` hears each change. Start once,
 * stop once (stop releases the lease if held).
 */
export class LeaderLease {
  readonly name: string;
  readonly holder: string;
  readonly ttlMs: number;
  readonly renewMs: number;
  readonly clockSkewMs: number;
  readonly #store: LeaderLeaseOptions["store"];
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #listeners = new Set<Listener>();
  #leader = false;
  /** performance.now() after which the lease may have been taken by another manager. */
  #validUntil = 0;
  #renewTimer: NodeJS.Timeout | undefined;
  #lapseTimer: NodeJS.Timeout | undefined;
  #attempt: Promise<void> | undefined;
  #started = false;
  #stopped = false;
  /** The other holder last seen leading (logged once per change). */
  #knownLeader: string | undefined;

  constructor(o: LeaderLeaseOptions) {
    this.name = o.name ?? LEADER_LEASE;
    this.holder = o.holder;
    this.ttlMs = o.ttlMs ?? DEFAULT_LEADER_LEASE.ttlMs;
    this.renewMs = o.renewMs ?? DEFAULT_LEADER_LEASE.renewMs;
    this.clockSkewMs = o.clockSkewMs ?? DEFAULT_LEADER_LEASE.clockSkewMs;
    if (!(this.renewMs > 0 && this.clockSkewMs >= 0 && this.renewMs + this.clockSkewMs < this.ttlMs)) {
      throw new RangeError(`leader lease: renew interval (${this.renewMs} ms) plus clock skew allowance (${this.clockSkewMs} ms) must be less than its TTL (${this.ttlMs} ms)`);
    }
    this.#store = o.store;
    this.#log = o.log;
    this.#now = o.now ?? Date.now;
  }

  /** This manager holds the lease and its local deadline has not passed. */
  get isLeader(): boolean {
    return this.#leader && performance.now() < this.#validUntil;
  }

  /** Hears every change of `isLeader` (true when it becomes leader, false when it stops). Returns the unsubscribe. */
  onChange(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Tries at once, then every renewMs. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#tick();
  }

  /**
   * Stops renewing; when leader, tells the listeners first (so the work
   * stops before another manager can start it), then releases the lease so
   * another manager takes it at its next attempt. Best effort: a database
   * that refuses the release leaves the lease to expire.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    await this.#attempt;
    const held = this.#leader;
    this.#set(false, "this manager is stopping");
    if (!held) return;
    try {
      await this.#store.commit([{ op: "lease.release", name: this.name, holder: this.holder }]);
    } catch (err) {
      this.#log.warn({ err, lease: this.name }, "could not release the leader lease; another manager takes it once it expires");
    }
  }

  #tick(): void {
    this.#renewTimer = undefined;
    if (this.#stopped) return;
    this.#attempt = this.#acquire().finally(() => {
      this.#attempt = undefined;
      if (this.#stopped) return;
      this.#renewTimer = setTimeout(() => this.#tick(), this.renewMs);
      this.#renewTimer.unref();
    });
  }

  /** One acquire-or-renew; never rejects. */
  async #acquire(): Promise<void> {
    const started = performance.now();
    try {
      await this.#store.commit([{ op: "lease.acquire", name: this.name, holder: this.holder, ttlMs: this.ttlMs, at: this.#now() }]);
    } catch (err) {
      if (err instanceof LeaseHeldError) {
        this.#set(false, `the lease is held by ${err.holder}`);
        if (err.holder !== this.#knownLeader) {
          this.#knownLeader = err.holder;
          this.#log.info({ lease: this.name, holder: this.holder, leader: err.holder }, "another manager is the leader (alerts, retention and webhooks run there); taking over if its lease expires");
        }
      } else if (this.#leader) {
        // Still leader until the local deadline (the lapse timer), unless a renewal succeeds before.
        this.#log.warn({ err, lease: this.name }, "could not renew the leader lease; leading until it could have expired, then stopping");
      } else {
        this.#log.warn({ err, lease: this.name }, "could not try the leader lease; retrying");
      }
      return;
    }
    if (this.#stopped) return;
    const validUntil = started + this.ttlMs - this.clockSkewMs;
    // A commit that took longer than the lease's whole term won nothing this manager can act on.
    if (performance.now() >= validUntil) return;
    this.#validUntil = validUntil;
    if (this.#lapseTimer) clearTimeout(this.#lapseTimer);
    this.#lapseTimer = setTimeout(() => this.#set(false, "the lease could not be renewed before it could have expired"), validUntil - performance.now());
    this.#lapseTimer.unref();
    this.#knownLeader = undefined;
    if (!this.#leader) {
      const lease = await this.#store.getLease(this.name).catch(() => undefined);
      this.#set(true, "acquired the lease", lease?.epoch);
    }
  }

  #set(leader: boolean, cause: string, epoch?: number): void {
    if (!leader && this.#lapseTimer) {
      clearTimeout(this.#lapseTimer);
      this.#lapseTimer = undefined;
    }
    if (leader === this.#leader) return;
    // A lapse timer may have fired during the epoch read above: then this is not the moment to lead.
    if (leader && (this.#stopped || performance.now() >= this.#validUntil)) return;
    this.#leader = leader;
    if (leader) this.#log.info({ lease: this.name, holder: this.holder, epoch }, `this manager is the leader now (${cause}): running alerts, retention and webhooks here`);
    else this.#log[this.#stopped ? "info" : "warn"]({ lease: this.name, holder: this.holder }, `this manager is no longer the leader (${cause}): alerts, retention and webhooks stop here`);
    for (const l of this.#listeners) {
      try {
        l(leader);
      } catch (err) {
        this.#log.error({ err, lease: this.name }, "a leader lease listener failed");
      }
    }
  }
}
