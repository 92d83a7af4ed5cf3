/**
 * The Explore page's state and its URL: what is asked (source, CEL filter,
 * grouping, window) and how it is shown (view), all in the query string so a
 * copied link opens the same view; and the conversions to and from the API's
 * AggregateQuery (what Aggregate counts and a saved query stores). Pure.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { QuerySource, QueryView, type AggregateQuery, type AggregateQuerySchema } from "@berth/proto/berth/v1/query_pb.js";
import type { CelKind } from "../api/cel-fields.js";

export type Source = "servers" | "hosts" | "events";
export type View = "table" | "timeline" | "chart";

export const SOURCES: readonly { value: Source; label: string; kind: CelKind }[] = [
  { value: "servers", label: "Servers", kind: "server" },
  { value: "hosts", label: "Hosts", kind: "host" },
  { value: "events", label: "Events", kind: "event" },
];

/** Bucket widths offered, seconds. */
export const INTERVALS: readonly { seconds: number; label: string }[] = [
  { seconds: 60, label: "1 min" },
  { seconds: 300, label: "5 min" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 86400, label: "1 day" },
];

/** Windows offered ("the last …"), seconds. */
export const WINDOWS: readonly { seconds: number; label: string }[] = [
  { seconds: 3600, label: "1 hour" },
  { seconds: 86400, label: "24 hours" },
  { seconds: 7 * 86400, label: "7 days" },
  { seconds: 30 * 86400, label: "30 days" },
];

/** The most group-by expressions (AggregateQuery.group_by). */
export const MAX_GROUP_BY = 3;
/** The most buckets a window may hold (the manager's limit). */
export const MAX_BUCKETS = 1000;

export interface ExploreState {
  source: Source;
  cel: string;
  view: View;
  /** Group-by expressions, in order; empty ones are not kept. */
  group: string[];
  /** Events: bucket width in seconds (0: the whole window is one bucket). */
  interval: number;
  /** Events: the window in seconds ("the last …"). */
  window: number;
  /** Only groups whose total is at least this. */
  minTotal: number;
  /** The saved query opened (id), if any. */
  saved: string;
}

export const DEFAULTS: ExploreState = { source: "servers", cel: "", view: "table", group: [], interval: 3600, window: 86400, minTotal: 0, saved: "" };

const isSource = (v: string | null): v is Source => v === "servers" || v === "hosts" || v === "events";
const isView = (v: string | null): v is View => v === "table" || v === "timeline" || v === "chart";

function nonNegativeInt(v: string | null, fallback: number): number {
  if (v === null || !/^\d{1,10}$/.test(v)) return fallback;
  return Number(v);
}

/** The views a source has: a timeline only for events. */
export function viewsOf(source: Source): View[] {
  return source === "events" ? ["table", "timeline", "chart"] : ["table", "chart"];
}

/**
 * The state a query string says; what it does not say, or says wrongly, is
 * the default (a timeline of servers is their table; more than 3 groups
 * keep the first 3; a window of more than 1,000 buckets a wider bucket).
 */
export function parseExplore(search: string): ExploreState {
  const p = new URLSearchParams(search);
  const source = isSource(p.get("source")) ? (p.get("source") as Source) : DEFAULTS.source;
  const rawView = p.get("view");
  const view: View = isView(rawView) && viewsOf(source).includes(rawView) ? rawView : DEFAULTS.view;
  const group = p
    .getAll("group")
    .map((g) => g.trim())
    .filter((g) => g !== "")
    .slice(0, MAX_GROUP_BY);
  return normalise({
    source,
    cel: (p.get("cel") ?? "").trim(),
    view,
    group,
    interval: nonNegativeInt(p.get("interval"), DEFAULTS.interval),
    window: nonNegativeInt(p.get("window"), DEFAULTS.window) || DEFAULTS.window,
    minTotal: nonNegativeInt(p.get("min"), 0),
    saved: p.get("saved") ?? "",
  });
}

/** Keeps the window's buckets within the manager's limit by widening the bucket. */
export function normalise(s: ExploreState): ExploreState {
  if (s.interval > 0 && s.window / s.interval > MAX_BUCKETS) {
    const wider = INTERVALS.find((i) => s.window / i.seconds <= MAX_BUCKETS)?.seconds ?? Math.ceil(s.window / MAX_BUCKETS);
    return { ...s, interval: wider };
  }
  return s;
}

/**
 * The query string of a state ("?source=events&cel=…&view=chart&group=…"):
 * source and view always, the rest when it is not the default; interval and
 * window only for events, grouping only where it is used (a chart).
 */
export function formatExplore(s: ExploreState): string {
  const p = new URLSearchParams();
  p.set("source", s.source);
  if (s.cel.trim()) p.set("cel", s.cel.trim());
  p.set("view", s.view);
  if (s.view === "chart") {
    for (const g of s.group) if (g.trim()) p.append("group", g.trim());
    if (s.source === "events") {
      p.set("interval", String(s.interval));
      p.set("window", String(s.window));
    }
    if (s.minTotal > 0) p.set("min", String(s.minTotal));
  }
  if (s.saved) p.set("saved", s.saved);
  return `?${p.toString()}`;
}

export function celKindOf(source: Source): CelKind {
  return SOURCES.find((x) => x.value === source)!.kind;
}

const SOURCE_TO_API: Record<Source, QuerySource> = { servers: QuerySource.SERVERS, hosts: QuerySource.HOSTS, events: QuerySource.EVENTS };
const VIEW_TO_API: Record<View, QueryView> = { table: QueryView.TABLE, timeline: QueryView.TIMELINE, chart: QueryView.CHART };

const seconds = (n: number) => ({ seconds: BigInt(Math.round(n)), nanos: 0 });

/** What Aggregate counts, or a saved query stores, for this state. */
export function aggregateQueryOf(s: ExploreState): MessageInitShape<typeof AggregateQuerySchema> {
  const q: MessageInitShape<typeof AggregateQuerySchema> = {
    source: SOURCE_TO_API[s.source],
    filter: s.cel.trim(),
    groupBy: s.group.map((g) => g.trim()).filter((g) => g !== ""),
    minTotal: BigInt(s.minTotal),
    view: VIEW_TO_API[s.view],
  };
  if (s.source === "events") {
    if (s.interval > 0) q.interval = seconds(s.interval);
    q.window = seconds(s.window);
  }
  return q;
}

/** The page's state for a stored query (a saved query's spec.query); `saved`: its id. */
export function stateOfQuery(q: AggregateQuery | undefined, saved = ""): ExploreState {
  const source: Source = q?.source === QuerySource.HOSTS ? "hosts" : q?.source === QuerySource.EVENTS ? "events" : "servers";
  const apiView = q?.view ?? QueryView.UNSPECIFIED;
  const group = (q?.groupBy ?? []).slice(0, MAX_GROUP_BY);
  // A query stored with a grouping and no view is a chart; without either, a table.
  const wanted: View = apiView === QueryView.CHART ? "chart" : apiView === QueryView.TIMELINE ? "timeline" : apiView === QueryView.TABLE ? "table" : group.length > 0 ? "chart" : "table";
  const view = viewsOf(source).includes(wanted) ? wanted : "table";
  const dur = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) + Math.round(d.nanos / 1e9) : undefined);
  return normalise({
    source,
    cel: q?.filter ?? "",
    view,
    group,
    interval: q?.interval ? (dur(q.interval) ?? 0) : q?.window ? 0 : DEFAULTS.interval,
    window: dur(q?.window) || DEFAULTS.window,
    minTotal: Number(q?.minTotal ?? 0n),
    saved,
  });
}

/** Whether two states ask the same question and show it the same way (the saved id aside). */
export function sameQuery(a: ExploreState, b: ExploreState): boolean {
  return formatExplore({ ...a, saved: "" }) === formatExplore({ ...b, saved: "" });
}

/**
 * A duration as people write it ("90s", "5m", "1h30m", "2d", "300": seconds)
 * in seconds; undefined when it is not one.
 */
export function parseDuration(text: string): number | undefined {
  const t = text.trim().toLowerCase();
  if (/^\d+$/.test(t)) return Number(t);
  const m = /^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$/.exec(t);
  if (!t || !m || m.slice(1).every((x) => x === undefined)) return undefined;
  const [d, h, mi, s] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number];
  return d * 86400 + h * 3600 + mi * 60 + s;
}

/** Seconds as the shortest of "45s", "5m", "1h30m", "2d". */
export function formatDurationShort(total: number): string {
  if (total === 0) return "0s";
  const parts: string[] = [];
  let left = total;
  for (const [unit, n] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]] as const) {
    const q = Math.floor(left / n);
    if (q > 0) parts.push(`${q}${unit}`);
    left -= q * n;
  }
  return parts.join("");
}
