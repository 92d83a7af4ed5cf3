/**
 * The latest usage sample of every server (and, when asked, every host) the
 * page shows, kept live by ONE `UsageService.WatchUsage` stream per page.
 *
 * - Each stream's first message is everything the manager knows: it replaces
 *   what was held (a sample missing from it is no longer measured). Later
 *   messages are single reports: merged in; `goneServerIds` are dropped.
 * - While the stream is down the figures stay as they were and the status says
 *   "reconnecting"; it is reopened with a backoff like the servers' watch.
 * - Published as immutable Maps for `useSyncExternalStore`; a server whose
 *   sample did not change in a message keeps its object, so memoized rows
 *   re-render only when their own figures move.
 */
import { keepStreaming } from "../api/keep-streaming.js";
import type { UsageSample, WatchUsageResponse } from "@berth/proto/berth/v1/usage_pb.js";

export type UsageStatus = "connecting" | "live" | "reconnecting";

export interface UsageSnapshot {
  /** By server id. */
  readonly servers: ReadonlyMap<string, UsageSample>;
  /** By host id (only when the watch asked for hosts). */
  readonly hosts: ReadonlyMap<string, UsageSample>;
  readonly status: UsageStatus;
  readonly error: string | undefined;
  /** A first message has arrived. */
  readonly loaded: boolean;
}

export type OpenUsageWatch = (req: { project: string; hosts: boolean }, signal: AbortSignal) => AsyncIterable<WatchUsageResponse>;

/**
 * What a message makes of the held samples: the first of a stream replaces
 * them, a later one is merged and drops `goneServerIds`. Pure; maps are copied
 * only when something changed.
 */
export function applyUsage(
  held: { servers: ReadonlyMap<string, UsageSample>; hosts: ReadonlyMap<string, UsageSample> },
  msg: WatchUsageResponse,
  first: boolean,
): { servers: ReadonlyMap<string, UsageSample>; hosts: ReadonlyMap<string, UsageSample> } {
  let servers = held.servers;
  let hosts = held.hosts;
  if (first) {
    servers = new Map(msg.servers.filter((u) => u.sample).map((u) => [u.serverId, u.sample!]));
    hosts = new Map(msg.hosts.filter((u) => u.sample).map((u) => [u.hostId, u.sample!]));
    return { servers, hosts };
  }
  if (msg.servers.length > 0 || msg.goneServerIds.length > 0) {
    const next = new Map(servers);
    for (const u of msg.servers) if (u.sample) next.set(u.serverId, u.sample);
    for (const id of msg.goneServerIds) next.delete(id);
    servers = next;
  }
  if (msg.hosts.length > 0) {
    const next = new Map(hosts);
    for (const u of msg.hosts) if (u.sample) next.set(u.hostId, u.sample);
    hosts = next;
  }
  return { servers, hosts };
}

export interface UsageWatchOptions {
  /** Hosts' samples too. */
  hosts?: boolean;
  /** The token was refused: the session is over, stop retrying. */
  onUnauthenticated?: (message: string) => void;
  /** Reconnect backoff, ms: first and maximum delay (defaults 1000, 15000). */
  backoffMs?: readonly [number, number];
}

export class UsageWatch {
  private snapshot: UsageSnapshot = { servers: new Map(), hosts: new Map(), status: "connecting", error: undefined, loaded: false };
  private readonly listeners = new Set<() => void>();
  private abort: AbortController | undefined;

  constructor(
    private readonly open: OpenUsageWatch,
    private readonly opts: UsageWatchOptions = {},
  ) {}

  readonly subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  readonly getSnapshot = (): UsageSnapshot => this.snapshot;

  start(): void {
    if (this.abort) return;
    this.abort = new AbortController();
    void this.run(this.abort.signal);
  }

  stop(): void {
    this.abort?.abort();
    this.abort = undefined;
  }

  private run(signal: AbortSignal): Promise<void> {
    return keepStreaming(signal, {
      backoffMs: this.opts.backoffMs ?? [1000, 15_000],
      stream: async (live) => {
        let first = true;
        for await (const msg of this.open({ project: "", hosts: this.opts.hosts ?? false }, signal)) {
          const held = applyUsage(this.snapshot, msg, first);
          if (first) live();
          first = false;
          this.set({ ...held, status: "live", error: undefined, loaded: true });
        }
      },
      onDown: (error, ended) => this.set({ ...this.snapshot, status: ended || this.snapshot.loaded ? "reconnecting" : "connecting", error }),
      ...(this.opts.onUnauthenticated ? { onUnauthenticated: this.opts.onUnauthenticated } : {}),
    });
  }

  private set(next: UsageSnapshot): void {
    this.snapshot = next;
    for (const fn of this.listeners) fn();
  }
}
