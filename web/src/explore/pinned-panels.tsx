/**
 * Pinned saved queries as compact panels at the top of the home page: each
 * one's name, what it returns now (RunSavedQuery: a row count, or for a
 * chart its groups and total with a sparkline of the buckets) and a link to
 * open it in Explore. Asked again every 30 s; nothing at all when none is
 * pinned (or the manager has no saved queries).
 */
import { useEffect, useState } from "react";
import type { RunSavedQueryResponse, SavedQuery } from "@berth/proto/berth/v1/query_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { navigate } from "../ui/router.js";
import { bucketTotals, chartData, sparkPoints } from "./chart-data.js";
import { formatExplore, stateOfQuery } from "./model.js";

interface Panel {
  query: SavedQuery;
  run?: RunSavedQueryResponse;
  error?: string;
}

const REFRESH_MS = 30_000;

export function PinnedPanels() {
  const { api } = useSession();
  const [panels, setPanels] = useState<Panel[]>([]);
  useEffect(() => {
    const abort = new AbortController();
    const signal = abort.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const { savedQueries } = await api.savedQueries.listSavedQueries({ pinnedOnly: true }, { signal });
        const runs = await Promise.all(
          savedQueries.map(async (query): Promise<Panel> => {
            try {
              return { query, run: await api.savedQueries.runSavedQuery({ id: query.id, pageSize: 100 }, { signal }) };
            } catch (err) {
              return { query, error: errorText(err) };
            }
          }),
        );
        if (!signal.aborted) setPanels(runs);
      } catch {
        // No saved queries to show (an older manager, or none readable): the home page shows none.
        if (!signal.aborted) setPanels([]);
      }
      if (!signal.aborted) timer = setTimeout(() => void load(), REFRESH_MS);
    };
    void load();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [api]);
  if (panels.length === 0) return null;
  return (
    <section className="pinned-panels" aria-label="Pinned queries">
      {panels.map((p) => (
        <PinnedPanel key={p.query.id} panel={p} />
      ))}
    </section>
  );
}

function PinnedPanel({ panel }: { panel: Panel }) {
  const q = panel.query;
  const href = `/explore${formatExplore(stateOfQuery(q.spec?.query, q.id))}`;
  const r = panel.run?.result;
  let figure = "";
  let spark: number[] | undefined;
  if (r?.case === "aggregate") {
    const d = chartData(r.value);
    const total = d.rows.reduce((s, x) => s + x.total, 0);
    figure = d.rows.length === 1 && d.rows[0]!.label === "all" ? `${total}` : `${total} in ${d.rows.length} ${d.rows.length === 1 ? "group" : "groups"}`;
    if (d.x.length > 1) spark = bucketTotals(d);
  } else if (r) {
    const n = r.case === "servers" ? r.value.servers.length : r.case === "hosts" ? r.value.hosts.length : r.case === "events" ? r.value.events.length : 0;
    const what = r.case === "servers" ? "server" : r.case === "hosts" ? "host" : "event";
    figure = `${n}${panel.run?.nextPageToken ? "+" : ""} ${n === 1 ? what : `${what}s`}`;
  }
  return (
    <article className={`pinned-panel${q.alertFiring ? " firing" : ""}`} data-pinned={q.spec?.name} aria-labelledby={`pin-${q.id}`}>
      <div className="pinned-head">
        <a
          id={`pin-${q.id}`}
          href={href}
          className="strong"
          onClick={(e) => {
            if (e.metaKey || e.ctrlKey || e.shiftKey) return;
            e.preventDefault();
            navigate(href);
          }}
        >
          {q.spec?.name}
        </a>
        {q.alertFiring && <span className="badge tone-bad">alert firing</span>}
      </div>
      {panel.error ? (
        <p className="small tone-text-bad">{panel.error}</p>
      ) : (
        <p className="pinned-figure" data-testid="pinned-figure">
          {panel.run ? figure : "…"}
        </p>
      )}
      {spark && (
        <svg className="sparkline" viewBox="0 0 120 24" width="120" height="24" role="img" aria-label={`per bucket: ${spark.join(", ")}`}>
          <polyline points={sparkPoints(spark, 120, 22)} fill="none" stroke="currentColor" strokeWidth="1.5" transform="translate(0 1)" />
        </svg>
      )}
      {q.spec?.description && <p className="muted small pinned-desc">{q.spec.description}</p>}
    </article>
  );
}
