/**
 * The Explore page's Chart view: up to 3 group-by expressions, for events the
 * bucket and the window, and the least total a group needs; Aggregate's
 * answer drawn (events over time: one line per group, by uPlot, loaded
 * lazily; servers and hosts: one bar per group) with a legend and, under it,
 * the same numbers as a table (what a screen reader reads).
 */
import { lazy, Suspense, useEffect, useId, useMemo, useState, type FormEvent } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import type { CelError } from "../ui/cel-bar.js";
import { formatTime } from "../ui/format.js";
import { aggregateQueryOf, formatExplore, INTERVALS, MAX_BUCKETS, MAX_GROUP_BY, WINDOWS, type ExploreState } from "./model.js";
import { chartData, MAX_SERIES, type ChartData } from "./chart-data.js";
import type { AggregateResponse } from "@berth/proto/berth/v1/query_pb.js";
import { seriesColour } from "./colours.js";

const ExplorePlot = lazy(() => import("./explore-plot.js").then((m) => ({ default: m.ExplorePlot })));

/** Buckets beyond this are not columns of the numbers table (its total and peak are). */
const MAX_TABLE_BUCKETS = 48;

const GROUP_EXAMPLES: Record<ExploreState["source"], string> = {
  servers: "server.status.phase",
  hosts: "host.state",
  events: "event.reason",
};

export function ExploreChart({ state, onChange, onFilterError }: { state: ExploreState; onChange: (p: Partial<ExploreState>) => void; onFilterError: (e: CelError | undefined) => void }) {
  const { api } = useSession();
  const ids = useId();
  const [groups, setGroups] = useState<string[]>(() => padGroups(state.group));
  const [minTotal, setMinTotal] = useState(String(state.minTotal || ""));
  const groupKey = state.group.join("\n");
  useEffect(() => setGroups(padGroups(state.group)), [groupKey]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => setMinTotal(String(state.minTotal || "")), [state.minTotal]);
  const [answer, setAnswer] = useState<AggregateResponse>();
  // Server and host ids in the keys (event.server_id, event.host_id) shown by their names, as the dashboard knows them.
  const { servers } = useWatch();
  const { names: hostNames } = useHosts();
  const known = (answer?.groups ?? [])
    .flatMap((g) => g.key)
    .map((v) => [v, servers.get(v)?.spec?.name ?? hostNames.get(v)] as const)
    .filter((e): e is readonly [string, string] => e[1] !== undefined);
  const namesKey = known.map(([v, n]) => `${v}\u0000${n}`).join("\n");
  const data = useMemo(() => {
    if (!answer) return undefined;
    const names = new Map(known);
    return chartData(answer, MAX_SERIES, (v) => names.get(v));
  }, [answer, namesKey]); // eslint-disable-line react-hooks/exhaustive-deps
  const [error, setError] = useState<{ text: string; onGroups: boolean }>();
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  // What is asked: the URL's state without the saved id (opening a saved query as it is does not ask again).
  const asked = formatExplore({ ...state, saved: "" });

  useEffect(() => {
    const abort = new AbortController();
    setLoading(true);
    api.query
      .aggregate({ query: aggregateQueryOf(state), maxGroups: 50 }, { signal: abort.signal })
      .then((res) => {
        setAnswer(res);
        setError(undefined);
        onFilterError(undefined);
      })
      .catch((err: unknown) => {
        if (abort.signal.aborted) return;
        const e = ConnectError.from(err);
        // The field the manager names first ("query.group_by[1]: …", "query.filter: syntax error …"): the group-by inputs, or the CEL input.
        const onGroups = e.code === Code.InvalidArgument && /^query\.(group_by|sum|min_total|interval|window)\b/.test(e.rawMessage);
        const onFilter = (e.code === Code.InvalidArgument && /^(query\.)?filter\b/.test(e.rawMessage)) || e.code === Code.ResourceExhausted;
        if (onFilter && state.cel) {
          onFilterError({ code: e.code, message: e.rawMessage, filter: state.cel });
          setError(undefined);
        } else setError({ text: errorText(err), onGroups });
      })
      .finally(() => {
        if (!abort.signal.aborted) setLoading(false);
      });
    return () => abort.abort();
    // `asked` says everything the request depends on.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api, asked, tick]);

  // Events move on: asked again every minute (servers and hosts: every 30 s).
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), state.source === "events" ? 60_000 : 30_000);
    return () => clearInterval(t);
  }, [state.source]);

  const apply = (e: FormEvent) => {
    e.preventDefault();
    const n = minTotal.trim() === "" ? 0 : Number(minTotal);
    onChange({ group: groups.map((g) => g.trim()).filter(Boolean), minTotal: Number.isInteger(n) && n >= 0 ? n : 0 });
  };

  const events = state.source === "events";
  return (
    <div className="explore-chart">
      <form className="chart-form" onSubmit={apply} aria-label="Chart settings">
        <fieldset className="group-by">
          <legend>Group by (CEL, up to {MAX_GROUP_BY})</legend>
          {groups.map((g, i) => (
            <label key={i} className="field compact">
              <span className="label">Group by {i + 1}</span>
              <input
                className="mono"
                name={`group-${i + 1}`}
                value={g}
                spellCheck={false}
                autoCapitalize="off"
                autoComplete="off"
                placeholder={i === 0 ? GROUP_EXAMPLES[state.source] : "optional"}
                aria-invalid={error?.onGroups ? true : undefined}
                aria-describedby={error?.onGroups ? `${ids}-group-error` : undefined}
                onChange={(e) => setGroups((cur) => cur.map((x, k) => (k === i ? e.target.value : x)))}
              />
            </label>
          ))}
        </fieldset>
        <div className="chart-settings">
          {events && (
            <>
              <label className="field compact">
                <span className="label">Bucket</span>
                <select value={state.interval} onChange={(e) => onChange({ interval: Number(e.target.value) })}>
                  {INTERVALS.map((i) => (
                    <option key={i.seconds} value={i.seconds} disabled={state.window / i.seconds > MAX_BUCKETS}>
                      {i.label}
                    </option>
                  ))}
                  <option value={0}>whole window</option>
                  {state.interval > 0 && !INTERVALS.some((i) => i.seconds === state.interval) && <option value={state.interval}>{state.interval} s</option>}
                </select>
              </label>
              <label className="field compact">
                <span className="label">Window (the last)</span>
                <select value={state.window} onChange={(e) => onChange({ window: Number(e.target.value) })}>
                  {WINDOWS.map((w) => (
                    <option key={w.seconds} value={w.seconds}>
                      {w.label}
                    </option>
                  ))}
                  {!WINDOWS.some((w) => w.seconds === state.window) && <option value={state.window}>{state.window} s</option>}
                </select>
              </label>
            </>
          )}
          <label className="field compact">
            <span className="label">Least total</span>
            <input type="number" min={0} step={1} inputMode="numeric" name="min-total" value={minTotal} placeholder="0" onChange={(e) => setMinTotal(e.target.value)} />
          </label>
          <button type="submit" className="button">
            Update chart
          </button>
        </div>
        {error?.onGroups && (
          <p id={`${ids}-group-error`} className="field-error" role="alert">
            {error.text}
          </p>
        )}
      </form>
      {error && !error.onGroups && (
        <p className="error-box" role="alert">
          {error.text}
        </p>
      )}
      {data && <ChartResult data={data} events={events} loading={loading} state={state} />}
      {!data && loading && <p className="muted">Counting…</p>}
    </div>
  );
}

function padGroups(g: readonly string[]): string[] {
  return Array.from({ length: MAX_GROUP_BY }, (_, i) => g[i] ?? "");
}

function ChartResult({ data, events, loading, state }: { data: ChartData; events: boolean; loading: boolean; state: ExploreState }) {
  const total = data.rows.reduce((s, r) => s + r.total, 0);
  const overTime = events && data.x.length > 1;
  const tableBuckets = overTime && data.x.length <= MAX_TABLE_BUCKETS;
  const step = data.interval;
  const bucketLabel = (x: number) => (step >= 86400 ? formatTime(x * 1000).slice(0, 10) : formatTime(x * 1000).slice(5, 16));
  const title = `${state.source} by ${state.group.length ? state.group.join(", ") : "nothing (one group)"}`;
  const peak = useMemo(() => data.rows.map((r) => r.counts.reduce((best, c, i) => (c > (r.counts[best] ?? 0) ? i : best), 0)), [data]);
  return (
    <div className="chart-result" aria-busy={loading}>
      <p className="muted small" role="status" data-testid="explore-count">
        {data.rows.length} {data.rows.length === 1 ? "group" : "groups"}, {total} {events ? "events" : state.source} in all
        {data.omitted > 0 && ` (${data.omitted} smaller groups not shown)`} · {data.matched} matched of {data.scanned} read
        {loading && " · counting…"}
      </p>
      {data.rows.length === 0 ? (
        <p className="muted">Nothing matches{state.minTotal > 0 ? ` with a total of at least ${state.minTotal}` : ""}.</p>
      ) : (
        <figure className="chart-figure" aria-label={`Chart: ${title}`}>
          {overTime ? (
            <Suspense fallback={<div className="muted small chart-loading">Loading the chart…</div>}>
              <ExplorePlot data={data} />
            </Suspense>
          ) : (
            <Bars data={data} />
          )}
          <ul className="chart-legend" aria-label="Legend">
            {data.series.map((s, i) => (
              <li key={s.label}>
                <span className="swatch" style={{ background: seriesColour(i) }} aria-hidden="true" />
                <span className="mono">{s.label}</span> <span className="muted">{s.total}</span>
              </li>
            ))}
          </ul>
        </figure>
      )}
      {data.rows.length > 0 && (
        <div className="table-scroll" tabIndex={0} role="region" aria-label="Counts per group, scrollable">
          <table className="table chart-table" aria-label="Counts per group" data-testid="chart-table">
            <thead>
              <tr>
                <th scope="col">Group</th>
                <th scope="col" className="num">
                  Total
                </th>
                {overTime && !tableBuckets && <th scope="col">Busiest bucket</th>}
                {tableBuckets &&
                  data.x.map((x) => (
                    <th key={x} scope="col" className="num small">
                      {bucketLabel(x)}
                    </th>
                  ))}
              </tr>
            </thead>
            <tbody>
              {data.rows.map((r, k) => (
                <tr key={r.label} data-group={r.label}>
                  <th scope="row" className="mono">
                    {r.label}
                  </th>
                  <td className="num" data-testid="group-total">
                    {r.total}
                  </td>
                  {overTime && !tableBuckets && (
                    <td>
                      {bucketLabel(data.x[peak[k]!]!)}: {r.counts[peak[k]!]}
                    </td>
                  )}
                  {tableBuckets &&
                    r.counts.map((c, i) => (
                      <td key={i} className={`num small${c === 0 ? " muted" : ""}`}>
                        {c}
                      </td>
                    ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

/** One bar per group (servers and hosts: counts now; events: one bucket). */
function Bars({ data }: { data: ChartData }) {
  const max = Math.max(1, ...data.series.map((s) => s.total));
  return (
    <div className="chart-bars" aria-hidden="true">
      {data.series.map((s, i) => (
        <div key={s.label} className="chart-bar-row">
          <span className="chart-bar-label mono small">{s.label}</span>
          <span className="chart-bar-track">
            <span className="chart-bar" style={{ width: `${(s.total / max) * 100}%`, background: seriesColour(i) }} />
          </span>
          <span className="num small">{s.total}</span>
        </div>
      ))}
    </div>
  );
}
