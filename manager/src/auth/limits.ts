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

export class AccessLimits {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly streams = new Map<string, Set<AbortController>>();
  private lastSweep = 0;

  constructor(
    readonly config: LimitsConfig = DEFAULT_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one mutating call against `tokenId`'s bucket. */
  takeMutation(tokenId: string): LimitDecision {
    const at = this.now();
    this.sweep(at);
    let b = this.buckets.get(tokenId);
    if (!b) {
      b = new TokenBucket(this.config.ratePerSecond, this.config.burst, at);
      this.buckets.set(tokenId, b);
    }
    if (b.take(at)) return { ok: true };
    return {
      ok: false,
      message: `rate limit: this token may make ${this.config.ratePerSecond} changes per second (bursts of ${this.config.burst}); retry in ${b.waitMs(at)} ms`,
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
