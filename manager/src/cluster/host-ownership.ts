/**
 * Host ownership: of the managers sharing one database, the one holding a
 * host's agent stream owns the host. It alone reconciles the host's servers
 * and sends its commands, so two managers never drive one host.
 *
 *   stream accepted            renew ok (every renewMs)
 *   ─────────────► owner ◄─────────────────────────┐
 *    host.take      │ ─────────────────────────────┘
 *    (epoch + 1)    │ stream ended: host.release (the term ends, the epoch stays)
 *                   │ renew refused (another manager took the host): lost
 *                   ▼
 *               not owner ── the term lapses unrenewed, no stream anywhere:
 *                             the leader reconciles the host (Unknown/offline)
 *
 * The ownership is a lease row `host:<id>` (store.ts host.take): a take
 * always wins, because the agent chose this manager, and counts the epoch on.
 * The epoch fences both sides of a decision:
 * - the agent refuses commands of an epoch older than the newest it has seen
 *   (agent/src/executor.ts; AgentHub stamps each command with its stream's
 *   epoch);
 * - every batch the reconciler commits for an owned host starts with
 *   host.checkOwner at that epoch, so a manager that lost the host commits
 *   nothing for it (HostOwnershipLostError, a ConflictError).
 */
import { HostOwnershipLostError } from "../errors.js";
import type { LeaseRecord } from "../domain/records.js";
import type { Logger } from "../log.js";
import { hostLeaseName, type CommitResult, type Store, type WriteOp } from "../store/store.js";

/** The reason of a CommandResult the agent refused because its epoch was older than the newest it saw (agent/src/executor.ts STALE_OWNER). */
export const STALE_OWNER = "StaleOwner";

export const DEFAULT_HOST_LEASE = {
  ttlMs: 15_000,
  renewMs: 5_000,
} as const;

/** Hosts renewed per batch (one transaction, one wait for a pooled connection). */
export const RENEW_BATCH = 100;

/**
 * Whether this manager reconciles servers of a host now. Pure.
 *
 * - it owns the host (holds its stream at a live term): yes;
 * - another manager holds a live term: no, that one does;
 * - nobody holds a live term (released, or lapsed: no stream anywhere, or
 *   its manager died): the leader does, alone, so a disconnected host's
 *   servers still go Unknown and its commands still expire.
 */
export function mayReconcileHost(o: { holder: string; ownedHere: boolean; lease: LeaseRecord | undefined; isLeader: boolean; now: number }): boolean {
  if (o.ownedHere) return true;
  const live = o.lease !== undefined && o.lease.expiresAt > o.now;
  if (live) return false;
  return o.isLeader;
}

/** What the reconciler asks of host ownership (reconciler.ts `ownership`). */
export interface HostFence {
  /** This manager reconciles servers of `hostId` now (mayReconcileHost). */
  mayReconcile(hostId: string): Promise<boolean>;
  /** The precondition every batch for `hostId` starts with: host.checkOwner at this manager's epoch; none when not owned (the leader on a lapsed host). */
  fence(hostId: string, at: number): WriteOp[];
  /** A fenced batch was refused: this manager no longer owns the host at that epoch (it stops driving it). */
  lost(err: HostOwnershipLostError): void;
}

/**
 * The commit of batches about `hostId` under this manager's term on the host
 * as it is now: the fence (`ownership.fence(hostId, at)`) is taken when this
 * is called, so a decision that takes it when it starts has its batch
 * refused if the host is lost before the commit. Without ownership, or for a
 * host not owned here (the leader on a lapsed host), the batch is not fenced.
 *
 * When the fence is refused (HostOwnershipLostError: another manager took
 * the host, or the term lapsed) nothing was written: `ownership.lost` hears
 * it first, so the host is renewed or dropped here, and then the commit
 * rejects with it, for the caller to react its own way (drop the message,
 * decide again, give up).
 *
 * The commit starts synchronously, before any await: a caller's check just
 * before it (a stream still current) still holds when the commit begins.
 */
export function fencedCommit(
  store: Pick<Store, "commit">,
  ownership: Pick<HostFence, "fence" | "lost"> | undefined,
  hostId: string,
  at: number,
): (ops: readonly WriteOp[]) => Promise<CommitResult> {
  const fence = ownership?.fence(hostId, at) ?? [];
  return async (ops) => {
    try {
      return await store.commit(fence.length === 0 ? ops : [...fence, ...ops]);
    } catch (err) {
      if (err instanceof HostOwnershipLostError) ownership?.lost(err);
      throw err;
    }
  };
}

export interface HostOwnershipOptions {
  store: Pick<Store, "commit" | "getLease">;
  /** This manager process (the leader lease's holder id). */
  holder: string;
  log: Logger;
  /** Whether this manager is the leader now (cluster/leader.ts): it reconciles lapsed hosts. */
  isLeader: () => boolean;
  ttlMs?: number;
  renewMs?: number;
  /** The wall clock written into the lease (default Date.now). */
  now?: () => number;
}

/**
 * This manager's hosts: takes a host when its agent's stream is accepted,
 * renews every owned host on a timer, releases it when the stream ends.
 * `onLost` hears a host another manager took (the stream here should close).
 */
export class HostOwnership implements HostFence {
  readonly holder: string;
  readonly ttlMs: number;
  readonly renewMs: number;
  readonly #o: HostOwnershipOptions;
  readonly #now: () => number;
  /** Owned hosts and their epochs. */
  readonly #owned = new Map<string, number>();
  readonly #lostListeners = new Set<(hostId: string, err: HostOwnershipLostError) => void>();
  #timer: NodeJS.Timeout | undefined;

  constructor(o: HostOwnershipOptions) {
    this.#o = o;
    this.holder = o.holder;
    this.ttlMs = o.ttlMs ?? DEFAULT_HOST_LEASE.ttlMs;
    this.renewMs = o.renewMs ?? DEFAULT_HOST_LEASE.renewMs;
    if (!(this.renewMs > 0 && this.renewMs < this.ttlMs)) throw new RangeError(`host lease: renew interval (${this.renewMs} ms) must be below its TTL (${this.ttlMs} ms)`);
    this.#now = o.now ?? Date.now;
  }

  /** Hears each host this manager lost to another. Returns the unsubscribe. */
  onLost(listener: (hostId: string, err: HostOwnershipLostError) => void): () => void {
    this.#lostListeners.add(listener);
    return () => this.#lostListeners.delete(listener);
  }

  /** The host's agent stream was accepted here: take the host (whoever held it) and return the new epoch. */
  async take(hostId: string): Promise<number> {
    const res = await this.#o.store.commit([{ op: "host.take", hostId, holder: this.holder, ttlMs: this.ttlMs, at: this.#now() }]);
    const epoch = res.leaseEpochs?.get(hostLeaseName(hostId));
    if (epoch === undefined) throw new Error(`host.take of ${hostId} reported no epoch`);
    this.#owned.set(hostId, epoch);
    this.#o.log.info({ host: hostId, holder: this.holder, epoch }, "this manager owns the host now (its agent connected here)");
    return epoch;
  }

  /**
   * The stream ended: forget the host and end its term (best effort; an
   * unreleased term lapses). `epoch`: only that term (the stream's own; a
   * newer stream of the same agent here took a newer one, which stays).
   */
  async release(hostId: string, epoch: number | undefined = this.#owned.get(hostId)): Promise<void> {
    if (epoch === undefined || this.#owned.get(hostId) !== epoch) return;
    this.#owned.delete(hostId);
    try {
      await this.#o.store.commit([{ op: "host.release", hostId, holder: this.holder, epoch }]);
    } catch (err) {
      this.#o.log.warn({ err, host: hostId }, "could not release the host; another manager takes it when its agent connects there, or the leader once the term lapses");
    }
  }

  owns(hostId: string): boolean {
    return this.#owned.has(hostId);
  }

  /** The epoch at which this manager owns `hostId`, or undefined. */
  epoch(hostId: string): number | undefined {
    return this.#owned.get(hostId);
  }

  async mayReconcile(hostId: string): Promise<boolean> {
    const ownedHere = this.#owned.has(hostId);
    if (ownedHere) return true;
    const lease = await this.#o.store.getLease(hostLeaseName(hostId));
    return mayReconcileHost({ holder: this.holder, ownedHere, lease, isLeader: this.#o.isLeader(), now: this.#now() });
  }

  fence(hostId: string, at: number): WriteOp[] {
    const epoch = this.#owned.get(hostId);
    return epoch === undefined ? [] : [{ op: "host.checkOwner", hostId, holder: this.holder, epoch, at }];
  }

  /**
   * Renews every owned host now, RENEW_BATCH hosts per batch; a host another
   * manager took is dropped and reported (onLost). One batch per host waited
   * for a pooled connection each time: with hundreds of hosts on a busy
   * PostgreSQL the round of renewals outlasted the TTL, and the leader marked
   * hosts offline whose agents were connected (docs/benchmarks.md). A batch
   * refused for one host (taken or lapsed) is retried host by host, so the
   * others are renewed and only that one is decided on its own.
   */
  async renewAll(): Promise<void> {
    const owned = [...this.#owned];
    for (let i = 0; i < owned.length; i += RENEW_BATCH) {
      const chunk = owned.slice(i, i + RENEW_BATCH);
      const at = this.#now();
      try {
        await this.#o.store.commit(chunk.map(([hostId, epoch]) => ({ op: "host.renew", hostId, holder: this.holder, epoch, ttlMs: this.ttlMs, at })));
      } catch {
        for (const [hostId, epoch] of chunk) await this.#renew(hostId, epoch);
      }
    }
  }

  async #renew(hostId: string, epoch: number): Promise<void> {
    try {
      await this.#o.store.commit([{ op: "host.renew", hostId, holder: this.holder, epoch, ttlMs: this.ttlMs, at: this.#now() }]);
    } catch (err) {
      if (!(err instanceof HostOwnershipLostError)) {
        this.#o.log.warn({ err, host: hostId }, "could not renew the host; trying again at the next renewal");
        return;
      }
      this.#drop(err);
    }
  }

  /**
   * A fenced batch or a renewal was refused. When the term only lapsed (the
   * database was unreachable longer than the TTL) and nobody took the host,
   * this manager, which still holds the agent's stream, renews it at once
   * and keeps the host (the refused batch is decided again); when another
   * manager took it, the host is dropped here.
   */
  lost(err: HostOwnershipLostError): void {
    const { hostId, epoch } = err;
    if (err.holder !== this.holder || this.#owned.get(hostId) !== epoch) return;
    if (err.current?.holder === this.holder && err.current.epoch === epoch) {
      void this.#renew(hostId, epoch);
      return;
    }
    this.#drop(err);
  }

  #drop(err: HostOwnershipLostError): void {
    const { hostId, epoch } = err;
    // Only if still that term here (a take meanwhile started a new one).
    if (err.holder !== this.holder || this.#owned.get(hostId) !== epoch) return;
    this.#owned.delete(hostId);
    this.#o.log.warn({ host: hostId, epoch, current: err.current }, "this manager no longer owns the host (another manager took it, or its term lapsed); it stops driving it");
    for (const l of this.#lostListeners) {
      try {
        l(hostId, err);
      } catch (e) {
        this.#o.log.error({ err: e, host: hostId }, "a host ownership listener failed");
      }
    }
  }

  /** Renews every renewMs until stop(). */
  start(): void {
    if (this.#timer) return;
    const tick = () => {
      void this.renewAll().finally(() => {
        if (!this.#timer) return;
        this.#timer = setTimeout(tick, this.renewMs);
        this.#timer.unref();
      });
    };
    this.#timer = setTimeout(tick, this.renewMs);
    this.#timer.unref();
  }

  /** Stops renewing and releases every owned host. */
  async stop(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const hostId of [...this.#owned.keys()]) await this.release(hostId);
  }
}
