import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
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
import { Wakeup, watchEnded } from "../ledger/wakeup.js";
import type { Store } from "../store/store.js";
import type { ServerRecord } from "../domain/records.js";
import { serverToProto } from "./convert.js";

export interface WatchServersDeps {
  store: Pick<Store, "listServers">;
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
 * ServerService.WatchServers: a full snapshot (SNAPSHOT messages, then
 * SNAPSHOT_END), then one UPSERT or DELETE per change, filtered on the
 * server side by project, host, phase and deletion. A server that stops
 * matching the filter (another phase, soft-deleted, purged) is sent as DELETE.
 * Bursts for one server are coalesced: a slow client gets the latest state,
 * never a backlog. Every change message and SNAPSHOT_END carry a resume token
 * meaning "everything up to here was delivered" (snapshot messages carry none:
 * a snapshot cut short cannot be resumed).
 */
export function createWatchServers(deps: WatchServersDeps): ServiceImpl<typeof ServerService>["watchServers"] {
  const { store, ledger } = deps;
  const feed = ledger.servers;

  return async function* watchServers(req: WatchServersRequest, ctx: HandlerContext): AsyncGenerator<WatchServersResponse> {
    const caller = callerOf(ctx);
    if (caller.project !== null) projectFor(caller, req.project);
    // An all-projects admin sees every project unless it asks for one.
    const project = caller.project ?? (req.project.trim() || undefined);
    const hostId = req.hostId.trim();
    const phases = new Set(req.phases);
    const inProject = (p: string) => project === undefined || p === project;
    const matches = (s: ServerRecord) =>
      inProject(s.project) &&
      (!hostId || s.hostId === hostId) &&
      (req.showDeleted || s.deletedAt === null) &&
      (phases.size === 0 || phases.has(s.status.phase));

    /** Servers the client holds; a change that takes one out of the filter is a DELETE. */
    const inView = new Set<string>();
    /** After a resume the client's view is unknown: any visible non-matching change is a DELETE. */
    let viewKnown = true;
    const pending = new Map<string, ServerChange>();
    const wake = new Wakeup();
    /**
     * While a resume reads the records it missed, live batches wait here: they
     * carry higher sequence numbers and go after the missed ones (`pending` is
     * kept in sequence order, which resume tokens rely on).
     */
    let held: (readonly ServerChange[])[] | undefined;
    const offer = (batch: readonly ServerChange[]) => {
      if (held) {
        held.push(batch);
        return;
      }
      let any = false;
      for (const c of batch) {
        if (!inView.has(c.serverId) && !inProject(c.project)) continue;
        // Re-insert so pending stays ordered by sequence number (resume tokens rely on it).
        pending.delete(c.serverId);
        pending.set(c.serverId, c);
        any = true;
      }
      if (any) wake.ring();
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

    // Subscribe BEFORE reading the snapshot: every change published after the
    // read started arrives through `offer` (one the snapshot already shows may
    // come again, with the same or a newer state; none is missed).
    const unsubscribe = feed.subscribe(offer);
    try {
      const token = req.resumeToken || ctx.requestHeader.get(RESUME_HEADER);
      const since = token ? feed.parseToken(token) : undefined;
      let missed: ServerChange[] | undefined;
      if (since !== undefined) {
        held = [];
        try {
          missed = await feed.changesSince(since);
        } finally {
          const live = held;
          held = undefined;
          // Without `missed` (outside the window) a snapshot follows: it is read after these
          // were published, so it shows them, and their older tokens would only go backwards.
          if (missed) {
            viewKnown = false;
            offer(missed);
            for (const b of live) offer(b);
          }
        }
      }
      if (!missed) {
        const seq = feed.currentSeq;
        const servers = (
          await store.listServers({ ...(project !== undefined ? { project } : {}), ...(hostId ? { hostId } : {}), includeDeleted: req.showDeleted })
        ).filter(matches);
        for (const s of servers) inView.add(s.id);
        for (const s of servers) yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT, server: serverToProto(s) });
        yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END, resumeToken: feed.token(seq) });
      }
      let caughtUp = !missed;
      for (;;) {
        for (let next = first(pending); next; next = first(pending)) {
          pending.delete(next.serverId);
          const m = message(next);
          if (m) yield m;
        }
        if (!caughtUp) {
          caughtUp = true;
          yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END, resumeToken: feed.token(feed.currentSeq) });
          continue;
        }
        if (!(await wake.wait(ctx.signal))) throw watchEnded(ctx.signal);
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
