/**
 * The ground-truth table: every server the token may see, live from
 * WatchServers, filtered and sorted by what the URL says, virtualized. In the
 * advanced mode (`?cel=`) the rows come from a second WatchServers carrying
 * the CEL filter (cel-watch.ts); the page's own filters apply on top.
 */
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore, type CSSProperties } from "react";
import { Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { useActions, useFiringAlerts, useHosts, useSession, useWatch } from "../app-context.js";
import { replaceQuery, setParam, useLocation } from "../ui/router.js";
import { count } from "../ui/format.js";
import { ColumnChooser, useStoredChoice } from "../ui/column-chooser.js";
import { moveFocusWithArrows } from "../ui/focus.js";
import { VirtualRows } from "../ui/virtual-rows.js";
import { BulkBar } from "./bulk-actions.js";
import { CreateServerDialog } from "./create-server.js";
import { DetailDrawer } from "./detail-drawer.js";
import { ALL_PHASES, isConverging, isDeleted, needsAttention, phaseName, type ServerAction } from "./model.js";
import { useServerActionDialog } from "./server-actions.js";
import { ServerWatch, type WatchSnapshot } from "./server-watch.js";
import { CelWatch } from "./cel-watch.js";
import { CelBar } from "../ui/cel-bar.js";
import { PinnedPanels } from "../explore/pinned-panels.js";
import { CARD_HEIGHT, ROW_HEIGHT, ServerRow } from "./server-row.js";
import { useUsageStore } from "./use-usage.js";
import type { UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { applyQuery, DEFAULT_COLUMNS, formatQuery, formatShownColumns, parseQuery, parseShownColumns, sortsByUsage, type OptionalColumn, type SortKey, type TableQuery } from "./table-query.js";

/**
 * The table's columns: `track` is the CSS grid track, `min` its least width
 * in px (their sum is the table's least width: below it the table scrolls
 * sideways inside itself). `optional` columns are internals, shown only when
 * chosen (the column chooser, kept in localStorage). `sorts`: a column
 * sorted several ways, a button each (Usage: CPU, memory). Keep in step with
 * ServerRow's cells.
 */
const COLUMNS: { key: SortKey | null; label: string; className: string; track: string; min: number; optional?: OptionalColumn; hint?: string; sorts?: { key: SortKey; label: string; title: string }[] }[] = [
  { key: null, label: "", className: "c-select", track: "36px", min: 36 },
  { key: "name", label: "Name", className: "c-name", track: "minmax(130px, 1.3fr)", min: 130 },
  { key: "host", label: "Host", className: "c-host", track: "minmax(72px, 0.6fr)", min: 72 },
  { key: "project", label: "Project", className: "c-project", track: "minmax(80px, 0.5fr)", min: 80 },
  { key: "image", label: "Image", className: "c-image", track: "minmax(150px, 1.4fr)", min: 150 },
  { key: "container", label: "Container", className: "c-container", track: "112px", min: 112, optional: "container", hint: "Docker's container id" },
  { key: "phase", label: "Phase", className: "c-phase", track: "210px", min: 210 },
  { key: "connect", label: "Connect", className: "c-connect", track: "minmax(170px, 1.5fr)", min: 170 },
  { key: "uptime", label: "Uptime", className: "c-uptime", track: "72px", min: 72 },
  {
    key: null,
    label: "Usage",
    className: "c-usage",
    // 130 with the table's narrower bars (styles.css .c-usage): "576K/64M" whole beside its bar (124 cut it to "576…").
    track: "minmax(130px, 0.6fr)",
    min: 130,
    optional: "usage",
    hint: "CPU (100% = one core) and memory, live",
    sorts: [
      { key: "cpu", label: "CPU", title: "Sort by CPU use" },
      { key: "memory", label: "Mem", title: "Sort by memory use" },
    ],
  },
  { key: "desired", label: "Desired", className: "c-desired", track: "74px", min: 74, optional: "desired", hint: "the state asked for" },
  { key: "observed", label: "Observed", className: "c-observed", track: "84px", min: 84, optional: "observed", hint: "Docker's state of the container" },
  { key: "data", label: "Data", className: "c-data", track: "84px", min: 84 },
  { key: "generation", label: "Gen", className: "c-gen", track: "64px", min: 64, optional: "generation", hint: "observed/current spec generation" },
  { key: "changed", label: "Last change", className: "c-changed", track: "minmax(120px, 1.2fr)", min: 120 },
  { key: "ports", label: "Ports", className: "c-ports", track: "112px", min: 112, optional: "ports", hint: "every published port, host→container" },
  { key: null, label: "Actions", className: "c-actions", track: "136px", min: 136 },
];

const CHOOSABLE = COLUMNS.filter((c): c is (typeof COLUMNS)[number] & { optional: OptionalColumn } => c.optional !== undefined).map((c) => ({
  key: c.optional,
  label: c.label === "Gen" ? "Generation" : c.label,
  ...(c.hint ? { hint: c.hint } : {}),
  defaultOn: DEFAULT_COLUMNS.includes(c.optional),
}));

/** The sort keys of a column: its own, or its `sorts`. */
const sortKeysOf = (c: (typeof COLUMNS)[number]): SortKey[] => (c.sorts ? c.sorts.map((x) => x.key) : c.key ? [c.key] : []);

const NO_SAMPLES: ReadonlyMap<string, UsageSample> = new Map();

/** Offered under the CEL input (docs/explore.md has more). */
const CEL_EXAMPLES = ['server.spec.labels["tier"] == "prod"', "server.status.phase == PHASE_FAILED", 'server.spec.image.startsWith("itzg/")', 'server.create_time > now - duration("24h")'];

const noSubscribe = () => () => {};
const noSnapshot = (): WatchSnapshot | undefined => undefined;

/** localStorage key of the chosen optional columns. */
export const COLUMNS_KEY = "berth.servers.columns";

/** Below this width server rows are cards (keep in step with styles.css). */
const NARROW = "(max-width: 640px)";

function subscribeNarrow(fn: () => void): () => void {
  const m = window.matchMedia(NARROW);
  m.addEventListener("change", fn);
  return () => m.removeEventListener("change", fn);
}

function useNarrow(): boolean {
  return useSyncExternalStore(subscribeNarrow, () => window.matchMedia(NARROW).matches);
}

export function ServersPage() {
  const session = useSession();
  const { can } = session;
  const loc = useLocation();
  const query = useMemo(() => parseQuery(loc.search), [loc.search]);
  const openId = new URLSearchParams(loc.search).get("server") ?? undefined;
  const all = useWatch();
  // Advanced mode: a second WatchServers carrying the CEL filter (?cel=); the client-side filters apply on top.
  const celWatch = useMemo(
    () => new CelWatch((filter, onFilterError) => new ServerWatch((req, signal) => session.api.servers.watchServers(req, { signal }), { filter, onFilterError })),
    [session.api],
  );
  useEffect(() => () => celWatch.stop(), [celWatch]);
  useEffect(() => celWatch.set(query.cel), [celWatch, query.cel]);
  const cel = useSyncExternalStore(celWatch.subscribe, celWatch.getSnapshot);
  const filtered = useSyncExternalStore(cel.watch?.subscribe ?? noSubscribe, cel.watch?.getSnapshot ?? noSnapshot);
  const watch = filtered ?? all;
  const [advancedOn, setAdvanced] = useState(false);
  const advanced = advancedOn || query.cel !== "" || cel.error !== undefined;
  const { pending, errors } = useActions();
  const { names: hostNames, hosts } = useHosts();
  const { stuck } = useFiringAlerts();
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const [creating, setCreating] = useState(false);
  const [dialog, requestAction] = useServerActionDialog();
  const [shownOptional, setShownOptional] = useStoredChoice(COLUMNS_KEY, parseShownColumns, formatShownColumns);
  const narrow = useNarrow();
  // One usage stream for the page, open only while the Usage column is shown (a phone's card shows it too).
  const usage = useUsageStore({ hosts: false, enabled: shownOptional.has("usage") });
  const columns = useMemo(() => COLUMNS.filter((c) => !c.optional || shownOptional.has(c.optional)), [shownOptional]);
  const gridStyle = useMemo(
    () => ({ "--cols": columns.map((c) => c.track).join(" "), "--table-min": `${columns.reduce((n, c) => n + c.min, 0)}px` }) as CSSProperties,
    [columns],
  );

  const setQuery = useCallback((patch: Partial<TableQuery>) => {
    const q = { ...parseQuery(window.location.search), ...patch };
    replaceQuery(formatQuery(q, window.location.search));
  }, []);

  // Sorted by usage, the order follows every report; otherwise the page does not re-render for samples (each Usage cell follows its own).
  const byUsage = sortsByUsage(query.sort);
  const samples = useSyncExternalStore(usage.subscribe, () => (byUsage ? usage.getSnapshot().servers : NO_SAMPLES));
  const rows = useMemo(() => applyQuery(watch.servers.values(), query, hostNames, samples), [watch.servers, query, hostNames, samples]);
  const rowsRef = useRef(rows);
  rowsRef.current = rows;
  const anchor = useRef<string>(undefined);

  const projects = useMemo(() => [...new Set([...watch.servers.values()].map((s) => s.project))].sort(), [watch.servers]);
  const counts = useMemo(() => {
    let live = 0;
    let running = 0;
    let converging = 0;
    let attention = 0;
    for (const s of all.servers.values()) {
      if (isDeleted(s)) continue;
      live++;
      const ph = s.status?.phase ?? 0;
      if (ph === Phase.RUNNING) running++;
      if (isConverging(s)) converging++;
      if (needsAttention(s)) attention++;
    }
    return { live, running, converging, attention };
  }, [all.servers]);

  const onToggle = useCallback((id: string, shift: boolean) => {
    setSelected((cur) => {
      const next = new Set(cur);
      const list = rowsRef.current;
      if (shift && anchor.current) {
        const a = list.findIndex((s) => s.id === anchor.current);
        const b = list.findIndex((s) => s.id === id);
        if (a >= 0 && b >= 0) {
          const on = !cur.has(id);
          for (let i = Math.min(a, b); i <= Math.max(a, b); i++) {
            if (on) next.add(list[i]!.id);
            else next.delete(list[i]!.id);
          }
          anchor.current = id;
          return next;
        }
      }
      if (next.has(id)) next.delete(id);
      else next.add(id);
      anchor.current = id;
      return next;
    });
  }, []);
  const onOpen = useCallback((id: string) => setParam("server", id, true), []);
  const onAction = useCallback((s: Server, a: ServerAction) => requestAction(s, a), [requestAction]);
  const onDismissError = useCallback((id: string) => session.actions.dismissError(id), [session]);

  const selectedServers = useMemo(() => [...selected].map((id) => watch.servers.get(id)).filter((s): s is Server => s !== undefined), [selected, watch.servers]);
  const allShownSelected = rows.length > 0 && rows.every((s) => selected.has(s.id));

  const sortBy = (key: SortKey) => setQuery(query.sort === key ? { desc: !query.desc } : { sort: key, desc: false });
  const phaseValue = query.attention ? "attention" : query.phases.length === 0 ? "" : query.phases.length === 1 ? phaseName(query.phases[0]) : "custom";

  // The one sort button in the tab order: the sorted column's, or the first shown when the chooser hides that one.
  const tabStop = columns.some((c) => sortKeysOf(c).includes(query.sort)) ? query.sort : columns.map(sortKeysOf).find((k) => k.length > 0)?.[0];
  const header = (
    // The sort buttons are one tab stop (the sorted column's); arrow keys move between them.
    <div className="vt-head" role="row" aria-rowindex={1} onKeyDown={(e) => moveFocusWithArrows(e, "button.sort")}>
      {columns.map((c) => {
        const sorted = sortKeysOf(c).includes(query.sort);
        if (c.className === "c-select") {
          return (
            <div key="select" role="columnheader" className="c-select">
              {can.operate && (
                <input
                  type="checkbox"
                  aria-label="Select all shown servers"
                  checked={allShownSelected}
                  onChange={() => setSelected(allShownSelected ? new Set() : new Set(rows.map((s) => s.id)))}
                />
              )}
            </div>
          );
        }
        return (
          <div key={c.label} role="columnheader" className={c.className} aria-sort={sorted ? (query.desc ? "descending" : "ascending") : undefined}>
            {c.sorts ? (
              <span className="sorts" role="group" aria-label={c.label}>
                {c.sorts.map((x) => (
                  <button key={x.key} type="button" className={`sort${query.sort === x.key ? " active" : ""}`} title={x.title} tabIndex={x.key === tabStop ? 0 : -1} onClick={() => sortBy(x.key)}>
                    {x.label}
                    <span className="sort-arrow" aria-hidden="true">
                      {query.sort === x.key ? (query.desc ? "▼" : "▲") : ""}
                    </span>
                  </button>
                ))}
              </span>
            ) : c.key ? (
              <button type="button" className={`sort${sorted ? " active" : ""}`} tabIndex={c.key === tabStop ? 0 : -1} onClick={() => sortBy(c.key!)}>
                {c.label}
                <span className="sort-arrow" aria-hidden="true">
                  {sorted ? (query.desc ? "▼" : "▲") : ""}
                </span>
              </button>
            ) : (
              c.label
            )}
          </div>
        );
      })}
    </div>
  );

  return (
    <section className="page servers-page" aria-labelledby="servers-title">
      <div className="page-head">
        <div>
          <h1 id="servers-title">Servers</h1>
          <p className="summary" data-testid="servers-summary">
            {count(counts.live, "server")} · <span className="tone-text-ok">{counts.running} running</span>
            {counts.converging > 0 && <> · <span className="tone-text-busy">{counts.converging} converging</span></>}
            {counts.attention > 0 && <> · <span className="tone-text-bad">{counts.attention} need attention</span></>}
            {stuck.size > 0 && <> · <span className="tone-text-bad">{stuck.size} stuck</span></>}
          </p>
        </div>
        {can.operate && (
          <button type="button" className="button primary" onClick={() => setCreating(true)}>
            New server
          </button>
        )}
      </div>

      <PinnedPanels />

      <div className="toolbar" role="search">
        <input
          type="search"
          className="search"
          placeholder="Search name, id, image, port…"
          aria-label="Search servers"
          value={query.q}
          onChange={(e) => setQuery({ q: e.target.value })}
        />
        <label className="inline">
          <span>Host</span>
          <select value={query.host} onChange={(e) => setQuery({ host: e.target.value })} aria-label="Filter by host">
            <option value="">All hosts</option>
            {hosts.map((h) => (
              <option key={h.id} value={h.id}>
                {h.name || h.id}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          <span>Phase</span>
          <select
            value={phaseValue}
            aria-label="Filter by phase"
            onChange={(e) => {
              const v = e.target.value;
              setQuery({ attention: v === "attention", phases: v === "" || v === "attention" ? [] : v === "custom" ? query.phases : ALL_PHASES.filter((p) => phaseName(p) === v) });
            }}
          >
            <option value="">All phases</option>
            <option value="attention">Needs attention</option>
            {phaseValue === "custom" && <option value="custom">{query.phases.map(phaseName).join(", ")}</option>}
            {ALL_PHASES.map((p) => (
              <option key={p} value={phaseName(p)}>
                {phaseName(p)}
              </option>
            ))}
          </select>
        </label>
        {can.project === null && (
          <label className="inline">
            <span>Project</span>
            <select value={query.project} onChange={(e) => setQuery({ project: e.target.value })} aria-label="Filter by project">
              <option value="">All projects</option>
              {[...new Set([...projects, query.project].filter(Boolean))].map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          </label>
        )}
        <label className="check">
          <input type="checkbox" checked={query.showDeleted} onChange={(e) => setQuery({ showDeleted: e.target.checked })} /> Show deleted
        </label>
        <button type="button" className="button small toggle" aria-pressed={advanced} onClick={() => (advanced ? (setAdvanced(false), setQuery({ cel: "" })) : setAdvanced(true))}>
          Advanced (CEL)
        </button>
        <span className="grow" />
        <ColumnChooser columns={CHOOSABLE} shown={shownOptional} onChange={setShownOptional} />
        <span className="muted shown-count" data-testid="shown-count">
          {rows.length === all.servers.size ? `${rows.length} shown` : `${rows.length} of ${all.servers.size} shown`}
        </span>
      </div>

      {advanced && (
        <CelBar
          kind="server"
          applied={query.cel}
          pending={cel.pending !== undefined}
          error={cel.error}
          examples={CEL_EXAMPLES}
          onApply={(expr) => (expr === query.cel ? celWatch.set(expr) : setQuery({ cel: expr }))}
          onClear={() => {
            setAdvanced(false);
            setQuery({ cel: "" });
          }}
        />
      )}

      {selected.size > 0 && <BulkBar servers={selectedServers} onClear={() => setSelected(new Set())} />}

      <div className="servers-grid" style={gridStyle}>
      <VirtualRows
        label="Servers"
        className={`servers-table${narrow ? " cards" : ""}`}
        items={rows}
        rowHeight={narrow ? CARD_HEIGHT : ROW_HEIGHT}
        header={header}
        empty={
          <div className="empty">
            {!watch.loaded ? (
              "Loading servers…"
            ) : all.servers.size === 0 ? (
              <>
                No servers yet.{" "}
                {can.operate && (
                  <button type="button" className="link" onClick={() => setCreating(true)}>
                    Create the first one
                  </button>
                )}
              </>
            ) : (
              "No server matches these filters."
            )}
          </div>
        }
        renderRow={(s, index, top) => (
          <ServerRow
            key={s.id}
            server={s}
            index={index}
            top={top}
            selected={selected.has(s.id)}
            pending={pending.get(s.id)}
            error={errors.get(s.id)}
            stuck={stuck.has(s.id)}
            hostName={hostNames.get(s.spec?.hostId ?? "") ?? s.spec?.hostId ?? ""}
            shown={shownOptional}
            usage={usage}
            can={can}
            onToggle={onToggle}
            onOpen={onOpen}
            onAction={onAction}
            onDismissError={onDismissError}
          />
        )}
      />
      </div>
      {dialog}
      {creating && <CreateServerDialog onClose={() => setCreating(false)} />}
      {openId && <DetailDrawer id={openId} onClose={() => setParam("server", undefined, true)} onAction={onAction} />}
    </section>
  );
}
