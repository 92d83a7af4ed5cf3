/** The ledger explorer: filters by type, server, host, actor, time and CEL (kept in the URL), with a live tail. */
import { useMemo, useState } from "react";
import { useHosts, useWatch } from "../app-context.js";
import { replaceQuery, useLocation } from "../ui/router.js";
import { EventTimeline, type EventFilter } from "./event-timeline.js";
import { CelBar, type CelError } from "../ui/cel-bar.js";

/** Offered under the CEL input (docs/explore.md has more). */
const CEL_EXAMPLES = ['event.type.startsWith("server.")', 'event.actor.startsWith("token:")', 'event.actor == "reconciler"', 'event.payload_json.contains("FAILED")'];

/** Prefixes worth offering; any prefix of a type works (docs/events.md lists them all). */
const TYPE_PREFIXES = [
  "server.",
  "phase.changed",
  "command.",
  "container.died",
  "drift.",
  "image.pull_progress",
  "data.lost",
  "host.",
  "enrollment.created",
  "token.",
  "alert.",
  "webhook.",
];

export function EventsPage() {
  const loc = useLocation();
  const p = useMemo(() => new URLSearchParams(loc.search), [loc.search]);
  const { hosts } = useHosts();
  const watch = useWatch();
  const servers = useMemo(() => [...watch.servers.values()].sort((a, b) => (a.spec?.name ?? "").localeCompare(b.spec?.name ?? "")), [watch.servers]);
  const set = (k: string, v: string) => {
    const q = new URLSearchParams(window.location.search);
    if (v) q.set(k, v);
    else q.delete(k);
    const s = q.toString();
    replaceQuery(s ? `?${s}` : "");
  };
  const date = (v: string | null) => (v ? new Date(v) : undefined);
  const filter: EventFilter = {
    typePrefix: p.get("type") ?? "",
    serverId: p.get("server") ?? "",
    hostId: p.get("host") ?? "",
    actor: p.get("actor") ?? "",
    since: date(p.get("since")),
    until: date(p.get("until")),
    cel: (p.get("cel") ?? "").trim(),
  };
  const [celError, setCelError] = useState<CelError>();
  const [advancedOn, setAdvanced] = useState(false);
  const advanced = advancedOn || filter.cel !== "" || celError !== undefined;
  const clearCel = () => {
    setAdvanced(false);
    setCelError(undefined);
    set("cel", "");
  };
  const live = p.get("live") !== "0";
  return (
    <section className="page" aria-labelledby="events-title">
      <div className="page-head">
        <div>
          <h1 id="events-title">Events</h1>
          <p className="summary">Everything berth did or saw, from the append-only ledger. Newest first.</p>
        </div>
      </div>
      <div className="toolbar wrap" role="search">
        <label className="inline">
          <span>Type</span>
          <input list="event-types" value={filter.typePrefix} onChange={(e) => set("type", e.target.value)} placeholder="any (prefix, e.g. server.)" aria-label="Event type prefix" />
          <datalist id="event-types">
            {TYPE_PREFIXES.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <label className="inline">
          <span>Server</span>
          <select value={filter.serverId} onChange={(e) => set("server", e.target.value)} aria-label="Filter by server">
            <option value="">Any server</option>
            {servers.map((s) => (
              <option key={s.id} value={s.id}>
                {s.spec?.name} {s.project !== "default" ? `(${s.project})` : ""}
              </option>
            ))}
            {filter.serverId && !watch.servers.has(filter.serverId) && <option value={filter.serverId}>{filter.serverId}</option>}
          </select>
        </label>
        <label className="inline">
          <span>Host</span>
          <select value={filter.hostId} onChange={(e) => set("host", e.target.value)} aria-label="Filter by host">
            <option value="">Any host</option>
            {hosts.map((h) => (
              <option key={h.id} value={h.id}>
                {h.name || h.id}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          <span>Actor</span>
          <input value={filter.actor} onChange={(e) => set("actor", e.target.value)} placeholder="reconciler, agent, token:tok_…" aria-label="Actor" />
        </label>
        <label className="inline">
          <span>Since</span>
          <input type="datetime-local" value={p.get("since") ?? ""} onChange={(e) => set("since", e.target.value)} aria-label="Since" />
        </label>
        <label className="inline">
          <span>Until</span>
          <input type="datetime-local" value={p.get("until") ?? ""} onChange={(e) => set("until", e.target.value)} aria-label="Until" />
        </label>
        <button type="button" className="button small toggle" aria-pressed={advanced} onClick={() => (advanced ? clearCel() : setAdvanced(true))}>
          Advanced (CEL)
        </button>
        <label className="check">
          <input type="checkbox" checked={live && !filter.until} disabled={!!filter.until} onChange={(e) => set("live", e.target.checked ? "" : "0")} /> Live tail
        </label>
      </div>
      {advanced && <CelBar kind="event" applied={filter.cel ?? ""} error={celError} examples={CEL_EXAMPLES} onApply={(expr) => set("cel", expr)} onClear={clearCel} />}
      <EventTimeline filter={filter} live={live} onFilterError={setCelError} />
    </section>
  );
}
