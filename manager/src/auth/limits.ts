/**
 * Per-token limits: a token bucket for mutating calls and a cap on
 * concurrent streams. Pure bookkeeping with an injected clock; the auth
 * interceptor turns a refusal into ResourceExhausted.
 */

export interface LimitsConfig {
  /** Mutating calls per second a token may sustain. */
  ratePerSecond: number;
  /** Mutating calls a token may make at once after being idle. */
  burst: number;
  /** Streams (watches, logs) a token may hold open at once. */
  maxStreams: number;
}

export const DEFAULT_LIMITS: LimitsConfig = { ratePerSecond: 20, burst: 50, maxStreams: 32 };

/** A token bucket: `burst` tokens, refilled at `ratePerSecond`. */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.updatedAt = now;
  }

  /** Takes `cost` tokens (one by default) if that many are available. */
  take(now: number, cost = 1): boolean {
    this.refill(now);
    if (this.tokens < cost) return false;
    this.tokens -= cost;
    return true;
  }

  /** Milliseconds until one token is available (0 when one is). */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.ratePerSecond) * 1000);
  }

  /** True when the bucket is full again, so forgetting it changes nothing. */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }

  private refill(now: number): void {
    const elapsed = Math.max(0, now - this.updatedAt) / 1000;
    this.tokens = Math.min(this.burst, this.tokens + elapsed * this.ratePerSecond);
    this.updatedAt = now;
  }
}

/** The answer to "may this token do that now?". */
export type LimitDecision = { ok: true } | { ok: false; message: string };

/** Stream registrations are released through this handle. */
export interface StreamLease {
  /** Fires when the stream must end early (its token was revoked). */
  readonly signal: AbortSignal;
  release(): void;
}

/**
 * The per-token limits of one manager. With several managers on one database
 * (docs/design.md "Limits with several managers"), the mutation rate and
 * burst are a cluster-wide budget split evenly: each manager allows its share
 * (`setManagers`, fed by auth/presence.ts). The stream cap stays per manager:
 * it protects that manager's memory and sockets.
 */
export class AccessLimits {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly streams = new Map<string, Set<AbortController>>();
  private lastSweep = 0;
  private managerCount = 1;

  constructor(
    readonly config: LimitsConfig = DEFAULT_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Live managers sharing the rate budget (1 unless told otherwise). */
  get managers(): number {
    return this.managerCount;
  }

  /**
   * `n` managers share the database now: each allows 1/n of the rate and the
   * burst (rounded up, at least 1 a second). A change starts every bucket
   * afresh at its new size (a moment's extra burst, once per change).
   */
  setManagers(n: number): void {
    const count = Math.max(1, Math.floor(n));
    if (count === this.managerCount) return;
    this.managerCount = count;
    this.buckets.clear();
  }

  /** This manager's share of the rate and burst. */
  private share(): { rate: number; burst: number } {
    const n = this.managerCount;
    return { rate: Math.max(1, this.config.ratePerSecond / n), burst: Math.max(1, Math.ceil(this.config.burst / n)) };
  }

  /** Counts one mutating call against `tokenId`'s bucket. */
  takeMutation(tokenId: string): LimitDecision {
    const at = this.now();
    this.sweep(at);
    let b = this.buckets.get(tokenId);
    const { rate, burst } = this.share();
    if (!b) {
      b = new TokenBucket(rate, burst, at);
      this.buckets.set(tokenId, b);
    }
    if (b.take(at)) return { ok: true };
    const split = this.managerCount > 1 ? ` across ${this.managerCount} managers (${Math.round(rate * 100) / 100} per second on this one)` : "";
    return {
      ok: false,
      message: `rate limit: this token may make ${this.config.ratePerSecond} changes per second (bursts of ${this.config.burst})${split}; retry in ${b.waitMs(at)} ms`,
    };
  }

  /** Registers a stream for `tokenId`, or refuses when it already holds the maximum. */
  openStream(tokenId: string): { ok: true; lease: StreamLease } | { ok: false; message: string } {
    let set = this.streams.get(tokenId);
    if (!set) {
      set = new Set();
      this.streams.set(tokenId, set);
    }
    if (set.size >= this.config.maxStreams) {
      return {
        ok: false,
        message: `stream limit: this token already has ${set.size} open streams (the maximum is ${this.config.maxStreams}); close one first`,
      };
    }
    const ctl = new AbortController();
    set.add(ctl);
    const owner = set;
    let released = false;
    return {
      ok: true,
      lease: {
        signal: ctl.signal,
        release: () => {
          if (released) return;
          released = true;
          owner.delete(ctl);
          if (owner.size === 0 && this.streams.get(tokenId) === owner) this.streams.delete(tokenId);
        },
      },
    };
  }

  /** Tokens that have streams open here now (what a revocation may have to close). */
  streamTokenIds(): string[] {
    return [...this.streams.keys()];
  }

  openStreams(tokenId: string): number {
    return this.streams.get(tokenId)?.size ?? 0;
  }

  /** Ends every stream of a token at once (it was revoked). */
  closeStreams(tokenId: string, reason: string): void {
    for (const ctl of this.streams.get(tokenId) ?? []) ctl.abort(reason);
  }

  /** Drops full buckets now and then, so idle tokens cost no memory. */
  private sweep(at: number): void {
    if (at - this.lastSweep < 60_000) return;
    this.lastSweep = at;
    for (const [id, b] of this.buckets) if (b.full(at)) this.buckets.delete(id);
  }
}
