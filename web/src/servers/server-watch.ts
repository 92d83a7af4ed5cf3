/**
 * The dashboard's copy of every server it may see, kept live by
 * `ServerService.WatchServers` (snapshot, SNAPSHOT_END, then UPSERT/DELETE).
 *
 * - Never blank: while the stream is down the rows stay as they were and the
 *   status says "reconnecting"; the stream is reopened with the last resume
 *   token, so the manager sends only what changed meanwhile.
 * - A full snapshot (a new manager process, or a token too old) is collected
 *   aside and swapped in at SNAPSHOT_END, never shown half-filled.
 * - A server whose new record equals the one held keeps the old object, so
 *   React's memoized rows see no change and nothing re-renders.
 * - Changes are published in batches (at most one per ~16 ms), as an
 *   immutable Map for `useSyncExternalStore`.
 * - Honest about silence: the watch asks for a heartbeat every
 *   HEARTBEAT_SECONDS; after STALE_AFTER_MS without any message (a manager
 *   frozen or cut off behind an open connection) the status is "stale"
 *   (the rows are what the manager last said, not necessarily what is true
 *   now), and after RECONNECT_AFTER_MS the stream is dropped and reopened.
 */
import { equals } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ServerSchema, WatchChange, type Server, type WatchServersResponse } from "@berth/proto/berth/v1/server_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { WatchServersRequestSchema } from "@berth/proto/berth/v1/server_pb.js";
import { keepStreaming } from "../api/keep-streaming.js";
import { watchSilence, type Silence } from "../api/silence.js";

export type WatchStatus = "connecting" | "live" | "stale" | "reconnecting";

/** How often the manager is asked to send a heartbeat when nothing changes. */
export const HEARTBEAT_SECONDS = 5;
/** Silence after which the rows are marked stale: two heartbeats missed, and some slack. */
export const STALE_AFTER_MS = 12_000;
/** Silence after which the stream is given up and reopened (a connection that died without closing). */
export const RECONNECT_AFTER_MS = 30_000;

export interface WatchSnapshot {
  readonly servers: ReadonlyMap<string, Server>;
  readonly status: WatchStatus;
  /** The last stream error, shown beside the "reconnecting" badge. */
  readonly error: string | undefined;
  /** A first snapshot has arrived. */
  readonly loaded: boolean;
  /** When the manager was last heard from (any message), epoch ms; 0 before. */
  readonly lastHeardMs: number;
}

export type OpenWatch = (req: MessageInitShape<typeof WatchServersRequestSchema>, signal: AbortSignal) => AsyncIterable<WatchServersResponse>;

export interface ServerWatchOptions {
  /** The token was refused: the session is over, stop retrying. */
  onUnauthenticated?: (message: string) => void;
  /** Delay between publications, ms (default 16). */
  batchMs?: number;
  /** Reconnect backoff, ms: first and maximum delay (defaults 500, 8000). */
  backoffMs?: readonly [number, number];
  /** Heartbeat interval asked of the manager, and the silences that make the watch stale and then reconnect (defaults above). */
  heartbeatSeconds?: number;
  staleAfterMs?: number;
  reconnectAfterMs?: number;
  /** A CEL filter sent with the watch (docs/explore.md); "" or absent: every server. */
  filter?: string;
  /**
   * The manager refused the filter (InvalidArgument: not CEL, not bool;
   * ResourceExhausted: too costly): retrying cannot mend it, so the watch
   * ends and this is called with the code and the manager's message.
   */
  onFilterError?: (code: Code, message: string) => void;
}

export class ServerWatch {
  private rows = new Map<string, Server>();
  private snapshot: WatchSnapshot = { servers: new Map(), status: "connecting", error: undefined, loaded: false, lastHeardMs: 0 };
  private readonly listeners = new Set<() => void>();
  private resumeToken = "";
  private abort: AbortController | undefined;
  private publishTimer: ReturnType<typeof setTimeout> | undefined;
  private dirty = false;
  private status: WatchStatus = "connecting";
  private error: string | undefined;
  private loaded = false;
  private lastHeardMs = 0;
  private silence: Silence | undefined;

  constructor(
    private readonly open: OpenWatch,
    private readonly opts: ServerWatchOptions = {},
  ) {}

  /** For `useSyncExternalStore`. */
  readonly subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  readonly getSnapshot = (): WatchSnapshot => this.snapshot;

  start(): void {
    if (this.abort) return;
    this.abort = new AbortController();
    void this.run(this.abort.signal);
  }

  stop(): void {
    this.abort?.abort();
    this.abort = undefined;
    this.silence?.stop();
    this.silence = undefined;
    if (this.publishTimer) clearTimeout(this.publishTimer);
    this.publishTimer = undefined;
  }

  /** The server's latest record, if the watch has it. */
  get(id: string): Server | undefined {
    return this.rows.get(id);
  }

  private run(signal: AbortSignal): Promise<void> {
    return keepStreaming(signal, {
      backoffMs: this.opts.backoffMs ?? [500, 8000],
      stream: (live) => this.stream(signal, live),
      onDown: (message, ended) => this.setStatus(ended || this.loaded ? "reconnecting" : "connecting", message),
      ...(this.opts.onUnauthenticated ? { onUnauthenticated: this.opts.onUnauthenticated } : {}),
      fatal: (e) => {
        if (!this.opts.filter || (e.code !== Code.InvalidArgument && e.code !== Code.ResourceExhausted)) return false;
        this.opts.onFilterError?.(e.code, e.rawMessage);
        return true;
      },
    });
  }

  private async stream(outer: AbortSignal, onLive: () => void): Promise<void> {
    const resumed = this.resumeToken !== "";
    /** A full snapshot being collected; swapped in at SNAPSHOT_END. */
    let incoming: Map<string, Server> | undefined;
    const req: MessageInitShape<typeof WatchServersRequestSchema> = {
      showDeleted: true,
      resumeToken: this.resumeToken,
      heartbeatSeconds: this.opts.heartbeatSeconds ?? HEARTBEAT_SECONDS,
      ...(this.opts.filter ? { filter: this.opts.filter } : {}),
    };
    // This stream alone is dropped when the manager stays silent too long (api/silence.ts).
    const own = new AbortController();
    const onOuter = () => own.abort(outer.reason);
    outer.addEventListener("abort", onOuter, { once: true });
    this.silence?.stop();
    this.silence = watchSilence(own, {
      staleAfterMs: this.opts.staleAfterMs ?? STALE_AFTER_MS,
      reconnectAfterMs: this.opts.reconnectAfterMs ?? RECONNECT_AFTER_MS,
      onStale: (silent) => {
        if (this.status === "live") this.setStatus("stale", `no word from the manager for ${Math.round(silent / 1000)} s`);
      },
    });
    try {
      for await (const msg of this.open(req, own.signal)) {
        this.heard();
        const s = msg.server;
        switch (msg.change) {
          case WatchChange.SNAPSHOT:
            if (!s) break;
            incoming ??= new Map();
            incoming.set(s.id, this.keep(s));
            break;
          case WatchChange.SNAPSHOT_END:
            if (incoming) this.rows = incoming;
            // An empty full snapshot looks like a resume with nothing to say;
            // only a fresh watch can tell them apart.
            else if (!resumed) this.rows = new Map();
            incoming = undefined;
            this.resumeToken = msg.resumeToken;
            this.loaded = true;
            this.status = "live";
            this.error = undefined;
            onLive();
            this.changed(true);
            break;
          case WatchChange.UPSERT:
            if (s) this.rows.set(s.id, this.keep(s));
            if (msg.resumeToken) this.resumeToken = msg.resumeToken;
            this.changed(false);
            break;
          case WatchChange.DELETE:
            if (s) this.rows.delete(s.id);
            if (msg.resumeToken) this.resumeToken = msg.resumeToken;
            this.changed(false);
            break;
          default:
            break;
        }
      }
    } catch (err) {
      if (own.signal.aborted && !outer.aborted) throw new ConnectError(`no word from the manager for ${Math.round((this.opts.reconnectAfterMs ?? RECONNECT_AFTER_MS) / 1000)} s: reconnecting`, Code.DeadlineExceeded);
      throw err;
    } finally {
      outer.removeEventListener("abort", onOuter);
      this.silence?.stop();
      this.silence = undefined;
    }
  }

  /** A message arrived: the manager is alive; a stale watch is live again. */
  private heard(): void {
    this.lastHeardMs = Date.now();
    this.silence?.heard();
    if (this.status === "stale") {
      this.status = "live";
      this.error = undefined;
      this.changed(true);
    }
  }

  /** The held object when nothing changed, so memoized rows skip rendering. */
  private keep(s: Server): Server {
    const old = this.rows.get(s.id);
    return old && equals(ServerSchema, old, s) ? old : s;
  }

  private setStatus(status: WatchStatus, error: string | undefined): void {
    if (this.status === status && this.error === error) return;
    this.status = status;
    this.error = error;
    this.changed(true);
  }

  private changed(now: boolean): void {
    this.dirty = true;
    if (now) {
      if (this.publishTimer) clearTimeout(this.publishTimer);
      this.publishTimer = undefined;
      this.publish();
      return;
    }
    this.publishTimer ??= setTimeout(() => {
      this.publishTimer = undefined;
      this.publish();
    }, this.opts.batchMs ?? 16);
  }

  private publish(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.snapshot = { servers: new Map(this.rows), status: this.status, error: this.error, loaded: this.loaded, lastHeardMs: this.lastHeardMs };
    for (const fn of this.listeners) fn();
  }
}
