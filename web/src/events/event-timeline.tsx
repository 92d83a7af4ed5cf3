/**
 * Ledger events, newest first: a page from ListEvents, older pages on demand,
 * and (live) new ones from WatchEvents after the newest id seen, so nothing is
 * missed or shown twice. The watch reconnects from the last id it delivered.
 */
import { memo, useEffect, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Event } from "@berth/proto/berth/v1/event_pb.js";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText, isAbort } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { formatTime, tsMs } from "../ui/format.js";
import { navigate } from "../ui/router.js";
import { isRoutine } from "./routine.js";
import { watchSilence } from "../api/silence.js";
import type { CelError } from "../ui/cel-bar.js";
import { HEARTBEAT_SECONDS, RECONNECT_AFTER_MS, STALE_AFTER_MS } from "../servers/server-watch.js";

export interface EventFilter {
  serverId?: string;
  hostId?: string;
  typePrefix?: string;
  actor?: string;
  since?: Date | undefined;
  until?: Date | undefined;
  /** A CEL expression the manager evaluates on each event (docs/explore.md), on ListEvents and WatchEvents. */
  cel?: string;
}

/** The manager refused the filter itself: InvalidArgument (not CEL, not bool) or ResourceExhausted (too costly). */
function filterRefusal(err: unknown, cel: string | undefined): CelError | undefined {
  if (!cel) return undefined;
  const e = ConnectError.from(err);
  return e.code === Code.InvalidArgument || e.code === Code.ResourceExhausted ? { code: e.code, message: e.rawMessage, filter: cel } : undefined;
}

const PAGE = 50;

function parseFilter(key: string): EventFilter {
  const raw = JSON.parse(key) as Omit<EventFilter, "since" | "until"> & { since?: string; until?: string };
  return { ...raw, since: raw.since ? new Date(raw.since) : undefined, until: raw.until ? new Date(raw.until) : undefined };
}

function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}
const MAX_LIVE = 2000;

/** Whether a live event passes the filters WatchEvents cannot apply itself (actor, time). */
export function passesClientFilter(e: Event, f: EventFilter): boolean {
  if (f.actor && e.actor !== f.actor && !e.actor.startsWith(f.actor.endsWith(":") ? f.actor : `${f.actor}:`)) return false;
  const t = tsMs(e.time) ?? 0;
  if (f.since && t < f.since.getTime()) return false;
  if (f.until && t >= f.until.getTime()) return false;
  return true;
}

/**
 * `onFilterError`: the manager refused `filter.cel` (called with undefined once
 * it accepted it); the events shown before are kept, and the live tail stops.
 */
export function EventTimeline({
  filter,
  live,
  compact,
  table,
  onFilterError,
}: {
  filter: EventFilter;
  live: boolean;
  compact?: boolean;
  /** Rows of a table (time, type, reason, message, server, actor) instead of the time line (the Explore page). */
  table?: boolean;
  onFilterError?: (e: CelError | undefined) => void;
}) {
  const onFilterErrorRef = useRef(onFilterError);
  onFilterErrorRef.current = onFilterError;
  const { api } = useSession();
  const [events, setEvents] = useState<Event[]>([]);
  const [next, setNext] = useState("");
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string>();
  const [liveState, setLiveState] = useState<"off" | "connecting" | "live" | "stale" | "reconnecting">("off");
  const [showRoutine, setShowRoutine] = useState(false);
  // A type filter that names routine events (command., phase.) shows them: that is what was asked for.
  // So does a CEL filter: the expression says what it wants.
  const hideRoutine = !showRoutine && !filter.typePrefix && !filter.cel;
  const shown = hideRoutine ? events.filter((e) => !isRoutine(e)) : events;
  const hidden = events.length - shown.length;
  // Typing in a filter must not reopen the list and the watch on every key.
  const key = useDebounced(JSON.stringify({ ...filter, since: filter.since?.toISOString(), until: filter.until?.toISOString() }), 250);

  useEffect(() => {
    const abort = new AbortController();
    const signal = abort.signal;
    const f = parseFilter(key);
    const listReq = {
      serverId: f.serverId ?? "",
      hostId: f.hostId ?? "",
      typePrefix: f.typePrefix ?? "",
      actor: f.actor ?? "",
      filter: f.cel ?? "",
      pageSize: PAGE,
      ...(f.since ? { since: timestampFromDate(f.since) } : {}),
      ...(f.until ? { until: timestampFromDate(f.until) } : {}),
    };
    setLoading(true);
    setError(undefined);
    // A new CEL filter keeps the events shown until the manager answers (a refused one keeps them).
    if (!f.cel) setEvents([]);
    setNext("");
    void (async () => {
      let after = 0n;
      try {
        const res = await api.events.listEvents(listReq, { signal });
        setEvents(res.events);
        setNext(res.nextPageToken);
        after = res.events[0]?.id ?? 0n;
        if (f.cel) onFilterErrorRef.current?.(undefined);
      } catch (err) {
        if (signal.aborted) return;
        const refused = filterRefusal(err, f.cel);
        if (refused) onFilterErrorRef.current?.(refused);
        else {
          setEvents([]);
          setError(errorText(err));
        }
        return;
      } finally {
        if (!signal.aborted) setLoading(false);
      }
      if (!live || f.until) return;
      let delay = 500;
      while (!signal.aborted) {
        setLiveState((s) => (s === "off" ? "connecting" : s === "live" ? "reconnecting" : s));
        // This stream alone is dropped after RECONNECT_AFTER_MS of silence (the heartbeats stopped).
        const own = new AbortController();
        const onOuter = () => own.abort();
        signal.addEventListener("abort", onOuter, { once: true });
        const silence = watchSilence(own, { staleAfterMs: STALE_AFTER_MS, reconnectAfterMs: RECONNECT_AFTER_MS, onStale: () => setLiveState((s) => (s === "live" ? "stale" : s)) });
        try {
          const stream = api.events.watchEvents({ afterId: after, serverId: f.serverId ?? "", hostId: f.hostId ?? "", typePrefix: f.typePrefix ?? "", filter: f.cel ?? "", heartbeatSeconds: HEARTBEAT_SECONDS }, { signal: own.signal });
          setLiveState("live");
          for await (const m of stream) {
            silence.heard();
            setLiveState((s) => (s === "stale" ? "live" : s));
            const e = m.event;
            if (!e) continue;
            if (e.id > after) after = e.id;
            delay = 500;
            if (!passesClientFilter(e, f)) continue;
            setEvents((cur) => (cur.some((x) => x.id === e.id) ? cur : [e, ...cur].slice(0, MAX_LIVE)));
          }
        } catch (err) {
          if (signal.aborted) return;
          if (!own.signal.aborted) {
            if (isAbort(err)) return;
            // A refused filter stays refused: no retrying.
            const refused = filterRefusal(err, f.cel);
            if (refused) {
              onFilterErrorRef.current?.(refused);
              setLiveState("off");
              return;
            }
            setError(errorText(err));
          }
        } finally {
          silence.stop();
          signal.removeEventListener("abort", onOuter);
        }
        setLiveState("reconnecting");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(8000, delay * 2);
      }
    })();
    return () => {
      abort.abort();
      setLiveState("off");
    };
  }, [api, key, live]);

  const loadOlder = async () => {
    setLoading(true);
    try {
      const f = parseFilter(key);
      const res = await api.events.listEvents({
        serverId: f.serverId ?? "",
        hostId: f.hostId ?? "",
        typePrefix: f.typePrefix ?? "",
        actor: f.actor ?? "",
        filter: f.cel ?? "",
        pageSize: PAGE,
        pageToken: next,
        ...(f.since ? { since: timestampFromDate(f.since) } : {}),
        ...(f.until ? { until: timestampFromDate(f.until) } : {}),
      });
      setEvents((cur) => [...cur, ...res.events.filter((e) => !cur.some((x) => x.id === e.id))]);
      setNext(res.nextPageToken);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setLoading(false);
    }
  };

  return (
    <div className={`timeline${compact ? " compact" : ""}`}>
      <div className="timeline-bar">
        {live && !filter.until ? (
          <span className={`live-dot ${liveState}`} data-testid="events-live">
            {liveState === "live" ? "live" : liveState === "off" ? "" : liveState === "stale" ? "stale: no word from the manager" : `${liveState}…`}
          </span>
        ) : (
          <span className="muted small">not following</span>
        )}
        <span className="muted small">{shown.length} events</span>
        {!filter.typePrefix && !filter.cel && (hidden > 0 || showRoutine) && (
          <button type="button" className="link small" onClick={() => setShowRoutine((v) => !v)} data-testid="routine-toggle">
            {showRoutine ? "Hide routine events" : `${hidden} routine hidden · show`}
          </button>
        )}
      </div>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      {table ? (
        <EventTable events={shown} />
      ) : (
        <ol className="events" aria-label="Events">
          {shown.map((e) => (
            <EventItem key={e.id.toString()} e={e} compact={compact ?? false} />
          ))}
        </ol>
      )}
      {!loading && shown.length === 0 && !error && <p className="muted">{hidden > 0 ? "Only routine events here." : "No events match."}</p>}
      {loading && <p className="muted">Loading…</p>}
      {next && !loading && (
        <button type="button" className="button small" onClick={loadOlder}>
          Load older
        </button>
      )}
    </div>
  );
}

/** The events as table rows (the Explore page's Table view of events). */
function EventTable({ events }: { events: readonly Event[] }) {
  const watch = useWatch();
  const { names } = useHosts();
  return (
    <div className="table-scroll" tabIndex={0} role="region" aria-label="Events, scrollable">
      <table className="table stack-on-phone events-table" aria-label="Events">
        <thead>
          <tr>
            <th>Time</th>
            <th>Type</th>
            <th>Reason</th>
            <th>Message</th>
            <th>Server</th>
            <th>Host</th>
            <th>Actor</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.id.toString()} data-event-type={e.type}>
              <td data-label="Time" className="nowrap">
                {formatTime(tsMs(e.time))}
              </td>
              <td data-label="Type" className="mono">
                {e.type}
              </td>
              <td data-label="Reason" className="mono">
                {e.reason}
              </td>
              <td data-label="Message">{e.message}</td>
              <td data-label="Server">
                {e.serverId && (
                  <button type="button" className="link" onClick={() => navigate(`/servers?server=${encodeURIComponent(e.serverId)}`)} title={e.serverId}>
                    {watch.servers.get(e.serverId)?.spec?.name ?? e.serverId}
                  </button>
                )}
              </td>
              <td data-label="Host">{e.hostId ? (names.get(e.hostId) ?? e.hostId) : ""}</td>
              <td data-label="Actor" className="small">
                {e.actor}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Done to a server behind berth's back: worth a look even when nothing failed. */
const OUTSIDE_BERTH = new Set(["StoppedOutsideBerth", "ContainerMissing"]);

function category(type: string, reason: string): string {
  if (type.startsWith("drift.") && OUTSIDE_BERTH.has(reason)) return "warn";
  if (type.startsWith("alert.")) return "alert";
  if (type.startsWith("phase.") || type.startsWith("drift.")) return "phase";
  if (type.startsWith("host.")) return "host";
  if (type.startsWith("server.")) return "server";
  if (type.startsWith("command.")) return "command";
  if (type.includes("fail") || type.includes("lost")) return "bad";
  return "other";
}

const EventItem = memo(function EventItem({ e, compact }: { e: Event; compact: boolean }) {
  const { names } = useHosts();
  const watch = useWatch();
  const [open, setOpen] = useState(false);
  const ms = tsMs(e.time);
  const cat = category(e.type, e.reason);
  const tone = cat === "warn" ? " warn" : /fail|lost|crash|removed/i.test(e.type) || /fail/i.test(e.reason) ? " bad" : "";
  const serverName = e.serverId ? (watch.servers.get(e.serverId)?.spec?.name ?? e.serverId) : "";
  const hasPayload = e.payloadJson !== "" && e.payloadJson !== "{}";
  return (
    <li className={`event${tone}`} data-event-type={e.type}>
      <div className="event-time" title={formatTime(ms)}>
        <RelTime ms={ms} />
      </div>
      <div className="event-main">
        <div className="event-head">
          <span className={`etype cat-${cat}`}>{e.type}</span>
          <span className="event-message">{e.message}</span>
          <span className="grow" />
          <span className="muted small actor" title="actor">
            {e.actor.replace(/^token:[^:]+:/, "token ")}
          </span>
        </div>
        <div className="event-refs small muted">
          {e.reason && <span className="mono">{e.reason}</span>}
          {!compact && e.serverId && (
            <button type="button" className="link" onClick={() => navigate(`/servers?server=${encodeURIComponent(e.serverId)}`)} title={e.serverId}>
              {serverName}
            </button>
          )}
          {!compact && e.hostId && <span>host {names.get(e.hostId) ?? e.hostId}</span>}
          {!compact && e.project && <span>project {e.project}</span>}
          {hasPayload && (
            <button type="button" className="link" aria-expanded={open} onClick={() => setOpen((o) => !o)}>
              {open ? "hide details" : "details"}
            </button>
          )}
        </div>
        {open && <pre className="payload">{pretty(e.payloadJson)}</pre>}
      </div>
    </li>
  );
});

function pretty(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}
