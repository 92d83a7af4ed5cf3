/**
 * Client-side views the benchmarks measure with: a WatchServers stream kept
 * as a small per-server table (phase, desired state, status message), with
 * the arrival time of every change, and a host-connection tracker fed by
 * WatchEvents. Both only keep what the benchmarks read, so a 100,000-server
 * snapshot fits comfortably.
 */
import { ConnectError, Code, type Client } from "@connectrpc/connect";
import { HostState, type HostService } from "@berth/proto/berth/v1/host_pb.js";
import type { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { DesiredState, Phase, WatchChange, type Server, type ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { wallMs } from "./stats.js";

export interface ServerView {
  id: string;
  name: string;
  hostId: string;
  phase: Phase;
  desired: DesiredState;
  message: string;
  containerState: string;
}

/** The phase a server settles in when it has reached its desired state. */
export function desiredPhase(d: DesiredState): Phase {
  switch (d) {
    case DesiredState.STOPPED:
      return Phase.STOPPED;
    case DesiredState.PAUSED:
      return Phase.PAUSED;
    default:
      return Phase.RUNNING;
  }
}

type Listener = (s: ServerView, atMs: number, change: WatchChange) => void;

export class ServerWatch {
  readonly servers = new Map<string, ServerView>();
  /** Servers whose phase is their desired one. */
  converged = 0;
  /** Messages received (snapshot included). */
  messages = 0;
  readonly snapshotDone: Promise<void>;
  readonly ended: Promise<void>;
  private readonly listeners = new Set<Listener>();
  private readonly waiters = new Set<{ check: () => boolean; resolve: () => void }>();
  private readonly abort = new AbortController();

  constructor(client: Client<typeof ServerService>) {
    let snapshotDone!: () => void;
    let snapshotFailed!: (err: unknown) => void;
    this.snapshotDone = new Promise((resolve, reject) => {
      snapshotDone = resolve;
      snapshotFailed = reject;
    });
    this.ended = (async () => {
      try {
        for await (const res of client.watchServers({}, { signal: this.abort.signal })) {
          const at = wallMs();
          this.messages++;
          if (res.change === WatchChange.SNAPSHOT_END) {
            snapshotDone();
            this.check();
            continue;
          }
          if (!res.server) continue;
          const view = this.apply(res.server, res.change);
          for (const l of this.listeners) l(view, at, res.change);
          if (res.change !== WatchChange.SNAPSHOT) this.check();
        }
      } catch (err) {
        if (!(err instanceof ConnectError && err.code === Code.Canceled) && !this.abort.signal.aborted) {
          snapshotFailed(err);
          throw err;
        }
      }
    })();
    this.ended.catch(() => undefined);
  }

  close(): void {
    this.abort.abort();
  }

  /** Calls `fn` with every change (not the snapshot) and its arrival time; returns the unsubscribe. */
  onChange(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Resolves once `check()` holds (checked after every change), or rejects after `timeoutMs`. */
  until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  /** Resolves with the arrival time of the first change showing server `id` in `phase`. */
  nextPhase(id: string, phase: Phase, timeoutMs: number): Promise<number> {
    return this.nextChange(id, (s) => s.phase === phase, `${id} to be ${Phase[phase]}`, timeoutMs);
  }

  /** Resolves with the arrival time of the first change of server `id` satisfying `pred`. */
  nextChange(id: string, pred: (s: ServerView) => boolean, what: string, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const off = this.onChange((s, at) => {
        if (s.id !== id || !pred(s)) return;
        off();
        clearTimeout(timer);
        resolve(at);
      });
      const timer = setTimeout(() => {
        off();
        const s = this.servers.get(id);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen ${s ? `${Phase[s.phase]}: ${s.message}` : "nothing"}`));
      }, timeoutMs);
    });
  }

  private apply(s: Server, change: WatchChange): ServerView {
    const old = this.servers.get(s.id);
    if (old && old.phase === desiredPhase(old.desired)) this.converged--;
    const view: ServerView = {
      id: s.id,
      name: s.spec?.name ?? "",
      hostId: s.spec?.hostId ?? "",
      phase: s.status?.phase ?? Phase.UNSPECIFIED,
      desired: s.spec?.desiredState ?? DesiredState.UNSPECIFIED,
      message: s.status?.message ?? "",
      containerState: s.status?.containerState ?? "",
    };
    if (change === WatchChange.DELETE) {
      this.servers.delete(s.id);
      return view;
    }
    this.servers.set(s.id, view);
    if (view.phase === desiredPhase(view.desired)) this.converged++;
    return view;
  }

  private check(): void {
    for (const w of this.waiters) {
      if (w.check()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }
}

/** Which hosts are connected: `host.connected` / `host.disconnected` events, seeded with ListHosts. */
export class HostWatch {
  readonly online = new Set<string>();
  readonly connectedAt = new Map<string, number>();
  private readonly abort = new AbortController();
  private readonly waiters = new Set<{ n: number; resolve: () => void }>();
  readonly ready: Promise<void>;

  constructor(events: Client<typeof EventService>, hosts: Client<typeof HostService>) {
    // Lossless: the current list, then every host event after the newest one
    // before it, replayed in order and followed live (WatchEvents after_id).
    this.ready = (async () => {
      const { events: newest } = await events.listEvents({ pageSize: 1 });
      const afterId = newest[0]?.id ?? 0n;
      const { hosts: list } = await hosts.listHosts({});
      for (const h of list) if (h.state === HostState.ONLINE) this.online.add(h.id);
      void this.follow(events, afterId);
      this.check();
    })();
  }

  private async follow(events: Client<typeof EventService>, afterId: bigint): Promise<void> {
    try {
      for await (const res of events.watchEvents({ typePrefix: "host.", afterId }, { signal: this.abort.signal })) {
        const e = res.event;
        if (!e) continue;
        if (e.type === "host.connected") {
          this.online.add(e.hostId);
          this.connectedAt.set(e.hostId, wallMs());
        } else if (e.type === "host.disconnected" || e.type === "host.removed") {
          this.online.delete(e.hostId);
        }
        this.check();
      }
    } catch {
      /* closed */
    }
  }

  close(): void {
    this.abort.abort();
  }

  untilOnline(n: number, timeoutMs: number): Promise<void> {
    if (this.online.size >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = {
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms: ${this.online.size} of ${n} hosts online`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  private check(): void {
    for (const w of this.waiters) {
      if (this.online.size >= w.n) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }
}
