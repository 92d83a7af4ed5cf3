/**
 * The cross-manager change feed on PostgreSQL: how a manager hears what the
 * other managers of its database committed.
 *
 *   manager A: BEGIN … writes … events … pg_notify('berth_commits', notice) COMMIT
 *                                                     │ delivered at COMMIT, in commit order
 *   manager B: dedicated pg.Client, LISTEN berth_commits ──► notice ──► onCommit (remote)
 *
 * Every batch that wrote something sends one notice INSIDE its transaction
 * (pg-store.ts), so PostgreSQL delivers it only if the batch committed, and
 * to every listener in commit order. The notice is small: the sender's store
 * instance id, the range of event ids the batch appended, and the ids of the
 * servers, hosts and operator tokens it wrote (a token revoked on one manager
 * closes its streams on every other: auth/interceptor.ts); the receiver reads
 * the events themselves. A
 * notice that would exceed NOTICE_CAP_BYTES (PostgreSQL refuses payloads of
 * 8000 bytes or more) drops the id lists and says `resync` instead: the
 * receiver cannot know which records changed and must look at all of them.
 *
 * LISTEN holds a connection of its own (not from the pool: a pooled client
 * would be handed to other queries and LISTEN is per session). When it drops
 * (database restart, failover, pg_terminate_backend), notices sent meanwhile
 * are lost for good: the listener reconnects by itself with backoff and then
 * reports `onReconnected`, which the store turns into a resync.
 */
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { postgresConnectionString, type PostgresStoreUrl } from "./connection.js";

/** The one channel every store of a database notifies its commits on. */
export const COMMIT_CHANNEL = "berth_commits";

/** A notice longer than this (bytes) is sent as a resync marker; PostgreSQL's own limit is 8000. */
export const NOTICE_CAP_BYTES = 4000;

/** What one committed batch tells the other stores of its database. */
export interface CommitNotice {
  /** The store instance that committed it (a store ignores its own). */
  from: string;
  /** The first and last event id the batch appended, when it appended any. */
  events?: { first: number; last: number };
  /** Servers whose record the batch wrote; empty on a resync. */
  serverIds: string[];
  /** Hosts whose record the batch wrote; empty on a resync. */
  hostIds: string[];
  /** Operator tokens the batch inserted or revoked (absent or empty when none; empty on a resync). */
  tokenIds?: string[];
  /** The id lists did not fit (or the notice was unreadable): anything may have changed. */
  resync: boolean;
}

/** Wire form: short keys, a version so a later format can be told apart. */
interface Wire {
  v: 1;
  from: string;
  ev?: [number, number];
  srv?: string[];
  host?: string[];
  /** Token ids (added later in version 1: a reader without it ignores the key). */
  tok?: string[];
  resync?: true;
}

/**
 * The payload of `notice`, at most `cap` bytes: with the id lists when they
 * fit, else as a resync marker (which keeps the event range: it is two numbers).
 */
export function encodeCommitNotice(notice: Omit<CommitNotice, "resync">, cap = NOTICE_CAP_BYTES): string {
  const base: Wire = { v: 1, from: notice.from, ...(notice.events ? { ev: [notice.events.first, notice.events.last] } : {}) };
  const full = JSON.stringify({ ...base, srv: notice.serverIds, host: notice.hostIds, ...(notice.tokenIds?.length ? { tok: notice.tokenIds } : {}) });
  if (Buffer.byteLength(full) <= cap) return full;
  return JSON.stringify({ ...base, resync: true });
}

/** The notice in `payload`; anything that is not one (another program on the channel) is a resync from nobody. */
export function decodeCommitNotice(payload: string): CommitNotice {
  try {
    const w = JSON.parse(payload) as Partial<Wire>;
    if (w.v === 1 && typeof w.from === "string") {
      const ev = Array.isArray(w.ev) && w.ev.length === 2 && w.ev.every((n) => Number.isSafeInteger(n)) ? { first: w.ev[0]!, last: w.ev[1]! } : undefined;
      const strings = (a: unknown): string[] => (Array.isArray(a) ? a.filter((s): s is string => typeof s === "string") : []);
      const tokenIds = strings(w.tok);
      return { from: w.from, ...(ev ? { events: ev } : {}), serverIds: strings(w.srv), hostIds: strings(w.host), ...(tokenIds.length ? { tokenIds } : {}), resync: w.resync === true };
    }
  } catch {
    // Not JSON: fall through.
  }
  return { from: "", serverIds: [], hostIds: [], resync: true };
}

export interface CommitListenerOptions {
  /** A new, unconnected client on the store's database. */
  client: () => pg.Client;
  /** Every notification's payload on COMMIT_CHANNEL, in the order PostgreSQL sent them. */
  onNotice: (payload: string) => void;
  /** LISTEN holds again after the connection was lost: notices sent meanwhile are gone. */
  onReconnected: () => void;
  /** The connection was lost (`attempt` 0) or a reconnect failed: for the operator's log. */
  onTrouble?: (message: string, err: unknown) => void;
  /** Backoff between reconnect attempts: doubles from `initialMs` up to `maxMs`, jittered. */
  backoff?: { initialMs: number; maxMs: number };
}

const DEFAULT_BACKOFF = { initialMs: 100, maxMs: 5_000 };

/**
 * A LISTEN on COMMIT_CHANNEL over a connection of its own that comes back by
 * itself. `start()` connects once (and throws when it cannot: the store is
 * not opened half-deaf); after that every loss is repaired in the background
 * until `close()`.
 */
export class CommitListener {
  #client: pg.Client | undefined;
  #closed = false;
  #reconnecting = false;
  readonly #stop = new AbortController();
  readonly #backoff: { initialMs: number; maxMs: number };

  constructor(private readonly opts: CommitListenerOptions) {
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /** The server process holding the LISTEN now (pg_stat_activity.pid), if connected. */
  get pid(): number | undefined {
    return (this.#client as (pg.Client & { processID?: number }) | undefined)?.processID;
  }

  /** Connects and LISTENs; rejects with the driver's error when it cannot. */
  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const client = this.opts.client();
    // An 'error' without a listener would crash the process; a lost connection is repaired instead.
    client.on("error", (err) => this.#lost(client, err));
    client.on("end", () => this.#lost(client, undefined));
    // Not filtered on `this.#client === client`: a notice may be parsed from the same packet as
    // LISTEN's reply, before this.#client is set below. A notice is a fact whichever connection brought it.
    client.on("notification", (m) => {
      if (m.channel === COMMIT_CHANNEL && m.payload !== undefined && !this.#closed) this.opts.onNotice(m.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${COMMIT_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
  }

  #lost(client: pg.Client, err: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    void client.end().catch(() => {});
    if (this.#closed) return;
    this.opts.onTrouble?.("lost the connection listening for other managers' commits; reconnecting", err);
    void this.#reconnect();
  }

  async #reconnect(): Promise<void> {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    try {
      for (let attempt = 0; !this.#closed; attempt++) {
        const cap = Math.min(this.#backoff.maxMs, this.#backoff.initialMs * 2 ** attempt);
        try {
          // Jittered, so the managers of one restarted database do not all dial at once.
          await sleep(cap / 2 + (Math.random() * cap) / 2, undefined, { signal: this.#stop.signal });
        } catch {
          return; // closed
        }
        try {
          await this.#connect();
        } catch (err) {
          if (attempt === 0 || attempt % 10 === 9) this.opts.onTrouble?.(`could not reconnect to listen for other managers' commits (attempt ${attempt + 1}); retrying`, err);
          continue;
        }
        if (!this.#closed) this.opts.onReconnected();
        return;
      }
    } finally {
      this.#reconnecting = false;
    }
  }

  /** Stops listening and reconnecting; resolves once the connection is closed. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    const c = this.#client;
    this.#client = undefined;
    await c?.end().catch(() => {});
  }
}

/**
 * A client for the LISTEN connection of the store at `url`, named in
 * pg_stat_activity after the store instance (`berth-listen <instanceId>`).
 */
export function listenClient(url: PostgresStoreUrl, instanceId: string): pg.Client {
  return new pg.Client({
    connectionString: postgresConnectionString(url, { password: true }),
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // A peer that vanished without a FIN (a failover, a cut network) is noticed by the kernel's probes.
    keepAlive: true,
    application_name: `berth-listen ${instanceId}`,
  });
}

/** How long one connection attempt of the listener may take. */
const CONNECT_TIMEOUT_MS = 10_000;
