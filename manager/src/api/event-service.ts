import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  EventSchema,
  EventService,
  ListEventsResponseSchema,
  WatchEventsResponseSchema,
  type Event,
  type WatchEventsResponse,
} from "@berth/proto/berth/v1/event_pb.js";
import { callerOf } from "../auth/caller.js";
import { InvalidArgumentError } from "../errors.js";
import type { Ledger } from "../ledger/ledger.js";
import { HeartbeatClock, Wakeup, heartbeatInterval, watchEnded } from "../ledger/wakeup.js";
import type { Store } from "../store/store.js";
import type { EventRecord, EventQuery } from "../domain/records.js";
import type { Caller } from "../auth/caller.js";
import { loadVisibleServer } from "./find-server.js";
import { FilterRun, requestFilter } from "../query/cel.js";
import { filterPage } from "../query/filter-page.js";

export interface EventServiceDeps {
  /** Wakes live watches when events are committed. */
  ledger: Pick<Ledger, "subscribe" | "onResync">;
  /** Where events are read (and a server name in `server_id` resolved). */
  store: Pick<Store, "listNewestFirst" | "readForward" | "lastEventId" | "getServer" | "findServerByName" | "listServers">;
}

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;
/** Rows read per step while a watch replays: bounded memory however far back it starts. */
const REPLAY_BATCH = 500;

export function eventToProto(e: EventRecord): Event {
  return create(EventSchema, {
    id: BigInt(e.id),
    time: timestampFromMs(e.time),
    project: e.project,
    serverId: e.serverId,
    hostId: e.hostId,
    type: e.type,
    reason: e.reason,
    message: e.message,
    actor: e.actor,
    correlationId: e.correlationId,
    payloadJson: e.payloadJson,
  });
}

/**
 * EventService: the ledger, read back. Scoping: a project-scoped token sees
 * its project's events only, listed and watched (replay and live) alike.
 * Events without a project (hosts, orphans and their alerts, tokens without a
 * project, enrollment, webhook deliveries) describe what every tenant runs on
 * a shared host, so all-projects tokens alone see them.
 */
export function createEventService(deps: EventServiceDeps): ServiceImpl<typeof EventService> {
  const { ledger, store } = deps;

  return {
    async listEvents(req, ctx) {
      const caller = callerOf(ctx);
      if (req.pageSize < 0) throw new InvalidArgumentError("page_size", "must not be negative");
      const limit = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
      let beforeId: number | undefined;
      if (req.pageToken) {
        const m = /^e:(\d+)$/.exec(Buffer.from(req.pageToken, "base64url").toString());
        if (!m) throw new InvalidArgumentError("page_token", "not a token returned by ListEvents; omit it to start from the newest event");
        beforeId = Number(m[1]);
      }
      const q: EventQuery = {
        project: caller.project,
        ...(await filters(store, req, caller)),
        ...(req.since ? { since: ms(req.since, "since") } : {}),
        ...(req.until ? { until: ms(req.until, "until") } : {}),
      };
      if (q.since !== undefined && q.until !== undefined && q.until <= q.since) {
        throw new InvalidArgumentError("until", "must be after since");
      }
      const filter = requestFilter("event", req.filter);
      if (filter) {
        // After scoping and the other filters (in the query), on the events as this call returns them.
        const res = await filterPage<EventRecord, Event>({
          read: (after, n) => {
            const b = after?.id ?? beforeId;
            return store.listNewestFirst({ ...q, ...(b !== undefined ? { beforeId: b } : {}), limit: n });
          },
          convert: (rows) => rows.map(eventToProto),
          filter,
          run: new FilterRun(),
          pageSize: limit,
        });
        const next = res.continueAfter ? Buffer.from(`e:${res.continueAfter.id}`).toString("base64url") : "";
        return create(ListEventsResponseSchema, { events: res.items, nextPageToken: next });
      }
      const rows = await store.listNewestFirst({ ...q, ...(beforeId !== undefined ? { beforeId } : {}), limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const nextPageToken = rows.length > limit && last ? Buffer.from(`e:${last.id}`).toString("base64url") : "";
      return create(ListEventsResponseSchema, { events: page.map(eventToProto), nextPageToken });
    },

    /**
     * Replays the events after `after_id` (0: none, follow from now), then
     * follows live; with `heartbeat_seconds`, a heartbeat after each quiet
     * stretch that long. Lossless across reconnects: the watch subscribes to the
     * ledger BEFORE it reads anything, and always reads the store forward from
     * the last id it sent, so every event lands exactly once, in id order.
     */
    async *watchEvents(req, ctx: HandlerContext): AsyncGenerator<WatchEventsResponse> {
      const caller = callerOf(ctx);
      if (req.afterId < 0n) throw new InvalidArgumentError("after_id", "must not be negative; 0 follows new events only");
      const heartbeat = new HeartbeatClock(heartbeatInterval(req.heartbeatSeconds));
      const q: EventQuery = { project: caller.project, ...(await filters(store, req, caller)) };
      const filter = requestFilter("event", req.filter);
      const wake = new Wakeup();
      // Subscribed before the first read: an event committed while a read is under way rings, so the next round reads it.
      const unsubscribe = ledger.subscribe(() => wake.ring());
      // Events other managers committed while this one's change feed was down were never published: read forward.
      const unsubscribeResync = ledger.onResync(() => wake.ring());
      try {
        let cursor = req.afterId > 0n ? Number(req.afterId) : await store.lastEventId();
        for (;;) {
          const upTo = await store.lastEventId();
          while (cursor < upTo) {
            const batch = await store.readForward({ ...q, afterId: cursor, upToId: upTo, limit: REPLAY_BATCH });
            // One evaluation budget (and `now`) per batch read.
            const run = filter && new FilterRun();
            for (const e of batch) {
              const event = eventToProto(e);
              if (run) {
                const hit = filter.test(event, run);
                await run.pace();
                if (!hit) continue;
              }
              heartbeat.sent();
              yield create(WatchEventsResponseSchema, { event });
            }
            cursor = batch.length < REPLAY_BATCH ? upTo : batch[batch.length - 1]!.id;
          }
          if (heartbeat.due()) yield create(WatchEventsResponseSchema, { heartbeat: true });
          if ((await wake.waitUpTo(ctx.signal, heartbeat.waitMs())) === "aborted") throw watchEnded(ctx.signal);
        }
      } finally {
        unsubscribe();
        unsubscribeResync();
      }
    },
  };
}

/**
 * `server_id` as every other id field takes it: an id, or a name in the
 * caller's project (an unknown name is NotFound instead of an empty answer).
 * Anything shaped like an id is used as is: a purged server's events keep its
 * id after its record (and name) are gone.
 */
async function serverFilter(store: EventServiceDeps["store"], value: string, caller: Caller): Promise<string> {
  const v = value.trim();
  if (!v || /^srv_/.test(v)) return v;
  return (await loadVisibleServer(store, caller, v)).id;
}

async function filters(
  store: EventServiceDeps["store"],
  req: { serverId: string; hostId: string; typePrefix: string; actor?: string },
  caller: Caller,
): Promise<Omit<EventQuery, "project">> {
  const serverId = await serverFilter(store, req.serverId, caller);
  return {
    ...(serverId ? { serverId } : {}),
    ...(req.hostId.trim() ? { hostId: req.hostId.trim() } : {}),
    ...(req.typePrefix.trim() ? { typePrefix: req.typePrefix.trim() } : {}),
    ...(req.actor?.trim() ? { actor: req.actor.trim() } : {}),
  };
}

function ms(t: Timestamp, field: string): number {
  const v = timestampDate(t).getTime();
  if (!Number.isFinite(v)) throw new InvalidArgumentError(field, "not a valid time");
  return v;
}
