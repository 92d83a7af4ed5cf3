import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ServerSchema,
  ServerService,
  WatchChange,
  WatchServersResponseSchema,
  type WatchServersRequest,
  type WatchServersResponse,
} from "@berth/proto/berth/v1/server_pb.js";
import { callerOf, projectFor } from "../auth/caller.js";
import type { Ledger } from "../ledger/ledger.js";
import type { ServerChange } from "../ledger/server-changes.js";
import { HeartbeatClock, Wakeup, heartbeatInterval, watchEnded } from "../ledger/wakeup.js";
import type { Store } from "../store/store.js";
import type { ServerRecord } from "../domain/records.js";
import { serverToProto } from "./convert.js";
import { turns } from "../turns.js";
import { FilterRun, requestFilter } from "../query/cel.js";

export interface WatchServersDeps {
  store: Pick<Store, "listServers" | "serverChangeHead">;
  /** Its `servers` feed carries every server record change. */
  ledger: Ledger;
}

/**
 * Request header carrying a `resume_token` (an alternative to the request field,
 * for clients that cannot change the message) from an earlier WatchServers
 * response (WatchServersRequest has no field for it yet). With a token still
 * in the manager's resume window, the watch sends only what changed since it,
 * then SNAPSHOT_END; otherwise a full snapshot.
 */
export const RESUME_HEADER = "berth-resume-token";

/**
 * Records per read of a WatchServers snapshot: decoding a stored record takes
 * 0.15–0.3 ms (protobuf JSON; more before the JIT warmed up), and pages of 500
 * held the loop for 70–190 ms right after a restart (docs/benchmarks.md).
 */
export const SNAPSHOT_PAGE = 200;

/**
 * ServerService.WatchServers: a full snapshot (SNAPSHOT messages, then
 * SNAPSHOT_END), then one UPSERT or DELETE per change, filtered on the
 * server side by project, host, phase and deletion. A server that stops
 * matching the filter (another phase, soft-deleted, purged) is sent as DELETE.
 * Bursts for one server are coalesced: a slow client gets the latest state,
 * never a backlog. Every change message and SNAPSHOT_END carry a resume token
 * meaning "everything up to here was delivered" (snapshot messages carry none:
 * a snapshot cut short cannot be resumed). With `heartbeat_seconds`, a
 * HEARTBEAT follows every such quiet stretch after the snapshot.
 */
export function createWatchServers(deps: WatchServersDeps): ServiceImpl<typeof ServerService>["watchServers"] {
  const { store, ledger } = deps;
  const feed = ledger.servers;

  return async function* watchServers(req: WatchServersRequest, ctx: HandlerContext): AsyncGenerator<WatchServersResponse> {
    const caller = callerOf(ctx);
    if (caller.project !== null) projectFor(caller, req.project);
    const heartbeat = new HeartbeatClock(heartbeatInterval(req.heartbeatSeconds));
    // An all-projects admin sees every project unless it asks for one.
    const project = caller.project ?? (req.project.trim() || undefined);
    const hostId = req.hostId.trim();
    const phases = new Set(req.phases);
    const inProject = (p: string) => project === undefined || p === project;
    // The CEL filter sees the server as this watch sends it, after the other filters (scoping first).
    const filter = requestFilter("server", req.filter);
    // The snapshot is one evaluation budget (and one `now`); each live change is its own.
    const snapshotRun = new FilterRun();
    const matches = (s: ServerRecord, run = new FilterRun()) =>
      inProject(s.project) &&
      (!hostId || s.hostId === hostId) &&
      (req.showDeleted || s.deletedAt === null) &&
      (phases.size === 0 || phases.has(s.status.phase)) &&
      (!filter || filter.test(serverToProto(s), run));

    /** Servers the client holds; a change that takes one out of the filter is a DELETE. */
    const inView = new Set<string>();
    /** After a resume the client's view is unknown: any visible non-matching change is a DELETE. */
    let viewKnown = true;
    /** Changes to send, one per server at its latest position, in position order (resume tokens rely on it). */
    const pending = new Map<string, ServerChange>();
    const wake = new Wakeup();
    /**
     * Changes up to this position are already shown (by the snapshot, or the
     * resume's catch-up): live ones up to it are dropped. Known once the read is done.
     */
    let shown = Number.NEGATIVE_INFINITY;
    /** The position of the last change sent (pending is in position order, so it only goes forward). */
    let sent = 0;
    /** The feed skipped changes (store.ts SERVER_TOMBSTONES_KEPT): this watch ends, the client resumes into a snapshot. */
    let reset = false;
    const offer = (batch: readonly ServerChange[]) => {
      let any = false;
      for (const c of batch) {
        if (c.seq <= shown) continue;
        if (!inView.has(c.serverId) && !inProject(c.project)) continue;
        // Re-insert so pending stays in position order.
        pending.delete(c.serverId);
        pending.set(c.serverId, c);
        any = true;
      }
      if (any) wake.ring();
    };
    /**
     * The read is done and shows every change up to `upTo` (with `missed`, what
     * a resume read): live changes up to it are dropped, later ones go after `missed`.
     */
    const shownUpTo = (upTo: number, missed: readonly ServerChange[] = []) => {
      const live = [...pending.values()];
      pending.clear();
      offer(missed);
      shown = upTo;
      offer(live);
    };
    const message = (c: ServerChange): WatchServersResponse | undefined => {
      if (c.server && matches(c.server)) {
        inView.add(c.serverId);
        return create(WatchServersResponseSchema, { change: WatchChange.UPSERT, server: serverToProto(c.server), resumeToken: feed.token(c.seq) });
      }
      if (!inView.has(c.serverId) && (viewKnown || !inProject(c.project))) return undefined;
      inView.delete(c.serverId);
      const server = c.server ? serverToProto(c.server) : create(ServerSchema, { id: c.serverId, project: c.project, spec: { hostId: c.hostId } });
      return create(WatchServersResponseSchema, { change: WatchChange.DELETE, server, resumeToken: feed.token(c.seq) });
    };

    // The feed's position must be known before this watch reads anything, or it could start after the watch's snapshot.
    await feed.ready;
    // Subscribe BEFORE reading: every change after the position the read shows arrives through
    // `offer` (and every one up to it is dropped there: `shown`).
    const unsubscribe = feed.subscribe(offer, () => {
      reset = true;
      wake.ring();
    });
    try {
      const token = req.resumeToken || ctx.requestHeader.get(RESUME_HEADER);
      const since = token ? feed.parseToken(token) : undefined;
      const missed = since !== undefined ? await feed.changesSince(since) : undefined;
      /** After a resume's catch-up: the SNAPSHOT_END to send once what it missed (and what changed meanwhile) went out. */
      let caughtUpTo: number | undefined;
      if (missed) {
        viewKnown = false;
        shownUpTo(missed.upTo, missed.changes);
        caughtUpTo = missed.upTo;
      } else {
        // The snapshot in pages (SNAPSHOT_PAGE records each, newest first), so the first rows go
        // out at once and no read of the whole fleet holds the event loop. The position is read
        // first: every page shows each server at least as of it, and whatever changed after it
        // comes through `offer` as well (a server changed meanwhile may be sent twice, the second
        // time as it is now; one purged meanwhile is in no page, and its tombstone is skipped).
        const seq = await store.serverChangeHead();
        shownUpTo(seq);
        const filter = { ...(project !== undefined ? { project } : {}), ...(hostId ? { hostId } : {}), includeDeleted: req.showDeleted, limit: SNAPSHOT_PAGE };
        for (let before: { createdAt: number; id: string } | undefined; ; ) {
          // A page in its slot of the turn: a client that reads fast (its writes buffered) would
          // otherwise get page after page in one step (190 ms of a restart, docs/benchmarks.md).
          await turns.slot();
          const page = await store.listServers({ ...filter, ...(before ? { before } : {}) });
          const servers: ServerRecord[] = [];
          for (const s of page) {
            if (matches(s, snapshotRun)) servers.push(s);
            if (filter) await snapshotRun.pace();
          }
          for (const s of servers) inView.add(s.id);
          for (const s of servers) yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT, server: serverToProto(s) });
          if (page.length < SNAPSHOT_PAGE) break;
          const last = page[page.length - 1]!;
          before = { createdAt: last.createdAt, id: last.id };
        }
        yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END, resumeToken: feed.token(seq) });
        heartbeat.sent();
      }
      for (;;) {
        for (let next = first(pending); next; next = first(pending)) {
          pending.delete(next.serverId);
          const m = message(next);
          if (!m) continue;
          sent = next.seq;
          heartbeat.sent();
          yield m;
        }
        if (caughtUpTo !== undefined) {
          yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END, resumeToken: feed.token(Math.max(caughtUpTo, sent)) });
          heartbeat.sent();
          caughtUpTo = undefined;
          continue;
        }
        if (reset) throw new ConnectError("this watch fell behind the changes the manager keeps; watch again with your last resume token (you will get a fresh snapshot)", Code.Aborted);
        if (heartbeat.due()) yield create(WatchServersResponseSchema, { change: WatchChange.HEARTBEAT });
        if ((await wake.waitUpTo(ctx.signal, heartbeat.waitMs())) === "aborted") throw watchEnded(ctx.signal);
      }
    } finally {
      unsubscribe();
    }
  };
}

function first<K, V>(m: Map<K, V>): V | undefined {
  for (const v of m.values()) return v;
  return undefined;
}
