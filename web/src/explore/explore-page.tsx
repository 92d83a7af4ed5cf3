/**
 * The Explore page (docs/explore.md): a source (servers, hosts, events), a CEL
 * filter, and a view: a table (live for servers and events), a time line of
 * events, or a chart of Aggregate's counts per group. Everything is in the
 * URL (model.ts), so Copy link shares the view; saved queries are opened,
 * saved, updated and deleted from the side panel (saved-queries.tsx).
 */
import { useCallback, useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Host } from "@berth/proto/berth/v1/host_pb.js";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import type { SavedQuery } from "@berth/proto/berth/v1/query_pb.js";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import { CelBar, type CelError } from "../ui/cel-bar.js";
import { count, formatBytes, formatTime, tsMs } from "../ui/format.js";
import { navigate, replaceQuery, setParam, useLocation } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { EventTimeline } from "../events/event-timeline.js";
import { CelWatch } from "../servers/cel-watch.js";
import { DetailDrawer } from "../servers/detail-drawer.js";
import { isDeleted, phaseBadge } from "../servers/model.js";
import { useServerActionDialog } from "../servers/server-actions.js";
import { ServerWatch, type WatchSnapshot } from "../servers/server-watch.js";
import { ExploreChart } from "./explore-chart.js";
import { celKindOf, formatExplore, parseExplore, SOURCES, stateOfQuery, viewsOf, type ExploreState, type Source, type View } from "./model.js";
import { SavedQueriesPanel, SaveDialog } from "./saved-queries.js";

const EXAMPLES: Record<Source, readonly string[]> = {
  servers: ["server.status.phase == PHASE_FAILED", "server.status.restart_count > 3", 'server.spec.labels["tier"] == "prod"', "!server.status.data_exists"],
  hosts: ["host.state == HOST_STATE_ONLINE && !host.draining", "host.conditions.exists(c, c.status == CONDITION_STATUS_TRUE)"],
  events: ['event.type == "phase.changed"', 'event.actor.startsWith("token:")', 'event.type.startsWith("drift.")', 'event.time > now - duration("24h")'],
};

const VIEW_LABEL: Record<View, string> = { table: "Table", timeline: "Timeline", chart: "Chart" };

/** The refusals that are the filter's fault: shown under the CEL input. */
export function celRefusal(err: unknown, filter: string): CelError | undefined {
  const e = ConnectError.from(err);
  return filter && (e.code === Code.InvalidArgument || e.code === Code.ResourceExhausted) ? { code: e.code, message: e.rawMessage, filter } : undefined;
}

export function ExplorePage() {
  const loc = useLocation();
  const { api } = useSession();
  const toast = useToast();
  const state = useMemo(() => parseExplore(loc.search), [loc.search]);
  const set = useCallback((patch: Partial<ExploreState>) => replaceQuery(formatExplore({ ...parseExplore(window.location.search), ...patch })), []);
  const [celError, setCelError] = useState<CelError>();
  const [saving, setSaving] = useState(false);
  const [panel, setPanel] = useState(false);
  const [opened, setOpened] = useState<SavedQuery>();
  const [listVersion, setListVersion] = useState(0);
  const [copied, setCopied] = useState(false);

  // A new source or filter starts without the last one's refusal.
  useEffect(() => setCelError(undefined), [state.source, state.view]);

  // The saved query named in the URL: fetched for its name and version (Save changes); a bare `?saved=id` fills the page from it.
  useEffect(() => {
    if (!state.saved) {
      setOpened(undefined);
      return;
    }
    if (opened?.id === state.saved) return;
    const abort = new AbortController();
    api.savedQueries
      .getSavedQuery({ id: state.saved }, { signal: abort.signal })
      .then(({ savedQuery }) => {
        if (!savedQuery) return;
        setOpened(savedQuery);
        if (!new URLSearchParams(window.location.search).has("source")) replaceQuery(formatExplore(stateOfQuery(savedQuery.spec?.query, savedQuery.id)));
      })
      .catch((err: unknown) => {
        if (abort.signal.aborted) return;
        toast("error", `Could not open the saved query: ${errorText(err)}`);
        set({ saved: "" });
      });
    return () => abort.abort();
  }, [api, state.saved, opened?.id, set, toast]);

  const open = (q: SavedQuery) => {
    setOpened(q);
    navigate(`/explore${formatExplore(stateOfQuery(q.spec?.query, q.id))}`);
    setPanel(false);
  };

  const copyLink = async () => {
    const url = window.location.href;
    try {
      await navigator.clipboard.writeText(url);
      setCopied(true);
      setTimeout(() => setCopied(false), 2000);
    } catch {
      // No clipboard (plain http off localhost): the link is in the address bar; say so.
      toast("info", `Copy this link: ${url}`);
    }
  };

  const views = viewsOf(state.source);
  const kind = celKindOf(state.source);
  return (
    <section className="page explore-page" aria-labelledby="explore-title">
      <div className="page-head">
        <div>
          <h1 id="explore-title">Explore</h1>
          <p className="summary">
            {opened ? (
              <>
                Saved query <strong data-testid="opened-query">{opened.spec?.name}</strong>
                {opened.spec?.description && <> · {opened.spec.description}</>}
                {opened.alertFiring && <span className="badge tone-bad">alert firing</span>}
              </>
            ) : (
              "Ask servers, hosts and the event ledger with a CEL filter; see rows, a time line or a chart; save and share it."
            )}
          </p>
        </div>
        <div className="explore-actions">
          <button type="button" className="button" onClick={copyLink} data-testid="copy-link">
            {copied ? "Copied" : "Copy link"}
          </button>
          <button type="button" className="button" aria-expanded={panel} aria-controls="saved-queries" onClick={() => setPanel((v) => !v)}>
            Saved queries
          </button>
          <button type="button" className="button primary" onClick={() => setSaving(true)}>
            {opened ? "Save…" : "Save query…"}
          </button>
        </div>
      </div>

      <div className={`explore-body${panel ? " with-panel" : ""}`}>
        <div className="explore-main">
          <div className="toolbar wrap explore-toolbar">
            <label className="inline">
              <span>Source</span>
              <select value={state.source} onChange={(e) => set({ source: e.target.value as Source, cel: "", group: [], view: viewsOf(e.target.value as Source).includes(state.view) ? state.view : "table" })}>
                {SOURCES.map((s) => (
                  <option key={s.value} value={s.value}>
                    {s.label}
                  </option>
                ))}
              </select>
            </label>
            <div className="segmented" role="group" aria-label="View">
              {views.map((v) => (
                <button key={v} type="button" className="button small" aria-pressed={state.view === v} onClick={() => set({ view: v })}>
                  {VIEW_LABEL[v]}
                </button>
              ))}
            </div>
          </div>
          <CelBar
            key={state.source}
            kind={kind}
            applied={state.cel}
            error={celError}
            examples={EXAMPLES[state.source]}
            onApply={(expr) => set({ cel: expr })}
            onClear={() => {
              setCelError(undefined);
              set({ cel: "" });
            }}
            clearLabel="Clear the CEL filter"
          />
          {state.view === "chart" ? (
            <ExploreChart state={state} onChange={set} onFilterError={setCelError} />
          ) : state.source === "servers" ? (
            <ServersTable cel={state.cel} onFilterError={setCelError} />
          ) : state.source === "hosts" ? (
            <HostsTable cel={state.cel} onFilterError={setCelError} />
          ) : (
            <EventTimeline filter={{ cel: state.cel }} live table={state.view === "table"} onFilterError={setCelError} />
          )}
        </div>
        {panel && <SavedQueriesPanel version={listVersion} openedId={opened?.id} onOpen={open} onClose={() => setPanel(false)} onDeleted={(id) => id === opened?.id && set({ saved: "" })} />}
      </div>
      {saving && (
        <SaveDialog
          state={state}
          opened={opened}
          onClose={() => setSaving(false)}
          onSaved={(q) => {
            setOpened(q);
            setListVersion((v) => v + 1);
            set({ saved: q.id });
          }}
          onReloaded={open}
        />
      )}
    </section>
  );
}

const noSubscribe = () => () => {};
const noSnapshot = (): WatchSnapshot | undefined => undefined;
const MAX_ROWS = 500;

/** Servers matching the filter, live: the app's watch without a filter, a second WatchServers with one (cel-watch.ts). */
function ServersTable({ cel, onFilterError }: { cel: string; onFilterError: (e: CelError | undefined) => void }) {
  const session = useSession();
  const loc = useLocation();
  const all = useWatch();
  const { names } = useHosts();
  const celWatch = useMemo(
    () => new CelWatch((filter, onErr) => new ServerWatch((req, signal) => session.api.servers.watchServers(req, { signal }), { filter, onFilterError: onErr })),
    [session.api],
  );
  useEffect(() => () => celWatch.stop(), [celWatch]);
  useEffect(() => celWatch.set(cel), [celWatch, cel]);
  const cw = useSyncExternalStore(celWatch.subscribe, celWatch.getSnapshot);
  const filtered = useSyncExternalStore(cw.watch?.subscribe ?? noSubscribe, cw.watch?.getSnapshot ?? noSnapshot);
  useEffect(() => onFilterError(cw.error), [cw.error, onFilterError]);
  const watch = filtered ?? all;
  const rows = useMemo(
    () => [...watch.servers.values()].filter((s) => !isDeleted(s)).sort((a, b) => (a.spec?.name ?? "").localeCompare(b.spec?.name ?? "") || a.project.localeCompare(b.project)),
    [watch.servers],
  );
  const [dialog, requestAction] = useServerActionDialog();
  const openId = new URLSearchParams(loc.search).get("server") ?? undefined;
  const stale = cel !== cw.applied;
  return (
    <div className="explore-result" aria-busy={cw.pending !== undefined}>
      <p className="muted small" data-testid="explore-count" role="status">
        {!watch.loaded ? "Loading servers…" : `${count(rows.length, "server")}${cel ? (rows.length === 1 ? " matches" : " match") : ""}${rows.length > MAX_ROWS ? ` (the first ${MAX_ROWS} shown)` : ""}${stale && cw.pending ? " · applying…" : ""} · live`}
      </p>
      <div className="table-scroll" tabIndex={0} role="region" aria-label="Servers, scrollable">
        <table className="table stack-on-phone explore-table" aria-label="Servers">
          <thead>
            <tr>
              <th>Name</th>
              <th>Project</th>
              <th>Host</th>
              <th>Phase</th>
              <th>Image</th>
              <th className="num">Restarts</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {rows.slice(0, MAX_ROWS).map((s: Server) => (
              <tr key={s.id} data-server-name={s.spec?.name}>
                <td data-label="Name">
                  <button type="button" className="link strong" onClick={() => setParam("server", s.id, true)}>
                    {s.spec?.name}
                  </button>
                </td>
                <td data-label="Project">{s.project}</td>
                <td data-label="Host">{names.get(s.spec?.hostId ?? "") ?? s.spec?.hostId}</td>
                <td data-label="Phase">
                  <span className={`badge tone-${phaseBadge(s).tone}`} data-phase={s.status?.phase}>
                    {phaseBadge(s).text}
                  </span>
                </td>
                <td data-label="Image" className="mono small">
                  {s.spec?.image}
                </td>
                <td data-label="Restarts" className="num">
                  {s.status?.restartCount ?? 0}
                </td>
                <td data-label="Created" className="small">
                  {formatTime(tsMs(s.createTime))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {watch.loaded && rows.length === 0 && <p className="muted">No server matches.</p>}
      {dialog}
      {openId && <DetailDrawer id={openId} onClose={() => setParam("server", undefined, true)} onAction={requestAction} />}
    </div>
  );
}

/** Hosts matching the filter: ListHosts with `filter`, asked again every 10 s. */
function HostsTable({ cel, onFilterError }: { cel: string; onFilterError: (e: CelError | undefined) => void }) {
  const { api } = useSession();
  const [hosts, setHosts] = useState<Host[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const res = await api.hosts.listHosts({ filter: cel }, { signal: abort.signal });
        setHosts(res.hosts);
        setError(undefined);
        onFilterError(undefined);
      } catch (err) {
        if (abort.signal.aborted) return;
        const refused = celRefusal(err, cel);
        // A refused filter keeps the hosts shown and is not asked again.
        if (refused) return onFilterError(refused);
        setError(errorText(err));
      }
      timer = setTimeout(() => void load(), 10_000);
    };
    void load();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [api, cel, onFilterError]);
  return (
    <div className="explore-result">
      <p className="muted small" data-testid="explore-count" role="status">
        {hosts === undefined ? "Loading hosts…" : `${count(hosts.length, "host")}${cel ? (hosts.length === 1 ? " matches" : " match") : ""} · refreshed every 10 s`}
      </p>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      <div className="table-scroll" tabIndex={0} role="region" aria-label="Hosts, scrollable">
        <table className="table stack-on-phone explore-table" aria-label="Hosts">
          <thead>
            <tr>
              <th>Host</th>
              <th>State</th>
              <th className="num">Servers</th>
              <th className="num">CPUs</th>
              <th className="num">Memory</th>
              <th>Data root free</th>
              <th>Agent</th>
            </tr>
          </thead>
          <tbody>
            {(hosts ?? []).map((h) => (
              <tr key={h.id} data-host-id={h.id}>
                <td data-label="Host">
                  <div className="strong">{h.name || h.id}</div>
                  <div className="muted mono small">{h.id}</div>
                </td>
                <td data-label="State">
                  <span className={`badge tone-${h.state === HostState.ONLINE ? "ok" : "bad"}`}>{h.state === HostState.ONLINE ? "online" : "offline"}</span>
                  {h.draining && <span className="badge tone-warn">draining</span>}
                </td>
                <td data-label="Servers" className="num">
                  {h.serverCount}
                </td>
                <td data-label="CPUs" className="num">
                  {h.cpuCount}
                </td>
                <td data-label="Memory" className="num">
                  {formatBytes(h.memoryBytes)}
                </td>
                <td data-label="Data root free">
                  {formatBytes(h.dataRootFreeBytes)} of {formatBytes(h.dataRootTotalBytes)}
                </td>
                <td data-label="Agent" className="small">
                  {h.agentVersion}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {hosts !== undefined && hosts.length === 0 && <p className="muted">No host matches.</p>}
    </div>
  );
}
