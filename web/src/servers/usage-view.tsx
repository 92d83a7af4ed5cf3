/**
 * Usage on screen: small bars with figures (the servers table, the hosts
 * page) and charts of the last hour or day from `UsageService.GetUsage`
 * (the server drawer's Usage tab, a host's details). The charts are uPlot
 * canvases (ui/usage-plot.tsx, loaded when a chart is first shown), each in a
 * figure named by its caption, which says the latest values in words.
 */
import { lazy, Suspense, useEffect, useId, useMemo, useState, type ReactNode } from "react";
import { UsageWindow, type GetUsageResponse, type UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { formatBytes, formatClock, formatTime } from "../ui/format.js";
import { chartData, cpuGauge, pointSpanMs, formatPercent, formatRate, measured, memoryGauge, niceMax, noUsageReason, sampleMs, type Gauge } from "./usage-model.js";

const UsagePlot = lazy(() => import("../ui/usage-plot.js").then((m) => ({ default: m.UsagePlot })));

/** A labelled bar with its figure; the bar is left out when there is nothing to measure against. */
export function Meter({ label, gauge, testId, short = false }: { label: string; gauge: Gauge; testId?: string; short?: boolean }) {
  const pct = gauge.fraction === undefined ? undefined : Math.round(gauge.fraction * 100);
  return (
    <span className={`meter${gauge.warn ? " warn" : ""}`} title={gauge.title} data-testid={testId}>
      <span className="meter-label">{label}</span>
      {pct !== undefined && (
        <span className="meter-bar" role="meter" aria-label={gauge.title} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
          <span style={{ width: `${pct}%` }} />
        </span>
      )}
      <span className={`meter-text${gauge.warn ? " tone-text-warn" : ""}`}>{short ? gauge.short : gauge.text}</span>
    </span>
  );
}

/** The servers table's Usage cell: CPU and memory, or a dash saying why there is none. */
export function UsageCell({ sample, running }: { sample: UsageSample | undefined; running: boolean }) {
  const cpu = cpuGauge(sample, "server");
  const mem = memoryGauge(sample, "server");
  if (!cpu && !mem) {
    return (
      <span className="muted" title={noUsageReason(running)}>
        —
      </span>
    );
  }
  return (
    <>
      {cpu && <Meter label="CPU" gauge={cpu} testId="usage-cpu" short />}
      {mem && <Meter label="Mem" gauge={mem} testId="usage-memory" short />}
    </>
  );
}

const WINDOWS = [
  { w: UsageWindow.HOUR, label: "Last hour", ms: 3600_000, gapMs: 60_000 },
  { w: UsageWindow.DAY, label: "Last 24 hours", ms: 86_400_000, gapMs: 15 * 60_000 },
] as const;

/** How often an open history is fetched again (the agents sample every 10 s). */
export const USAGE_REFRESH_MS = 10_000;

/**
 * A server's or a host's history over the last hour or day, fetched again
 * every USAGE_REFRESH_MS while shown: CPU, memory (with the limit line) and,
 * for servers, network.
 */
export function UsageHistory({ subject, name }: { subject: { case: "server" | "host"; value: string }; name: string }) {
  const { api } = useSession();
  const [win, setWin] = useState<UsageWindow>(UsageWindow.HOUR);
  const [res, setRes] = useState<GetUsageResponse>();
  const [error, setError] = useState<string>();
  const [now, setNow] = useState(() => Date.now());
  const groupName = useId();
  const kind = subject.case;
  const id = subject.value;

  useEffect(() => {
    const ctl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Another window: the last one's points are not shown meanwhile.
    setRes(undefined);
    const load = async () => {
      try {
        const r = await api.usage.getUsage({ subject: { case: kind, value: id }, window: win }, { signal: ctl.signal });
        setRes(r);
        setError(undefined);
        setNow(Date.now());
      } catch (err) {
        if (!ctl.signal.aborted) setError(errorText(err));
      }
      if (!ctl.signal.aborted) timer = setTimeout(() => void load(), USAGE_REFRESH_MS);
    };
    void load();
    return () => {
      ctl.abort();
      if (timer) clearTimeout(timer);
    };
  }, [api, kind, id, win]);

  const spec = WINDOWS.find((x) => x.w === win) ?? WINDOWS[0];
  const latest = res?.latest;
  const day = win === UsageWindow.DAY;
  const lines = useMemo(() => {
    const points = res?.points ?? [];
    const pick = (f: (s: UsageSample) => number | bigint | undefined) => points.map((p) => (f(p) === undefined ? undefined : Number(f(p))));
    return {
      times: points.map((p) => sampleMs(p) ?? 0),
      spans: points.map(pointSpanMs),
      cpu: pick((p) => p.cpuPercent),
      // The day's points are 5-minute averages: their peak tells more about memory.
      memory: pick((p) => (day ? (p.memoryMaxBytes ?? p.memoryBytes) : p.memoryBytes)),
      rx: pick((p) => p.netRxBytesPerSecond),
      tx: pick((p) => p.netTxBytesPerSecond),
    };
  }, [res, day]);
  // The window ends now, or at the last point when the host's clock is ahead of this browser's.
  const t1 = Math.max(now, lines.times[lines.times.length - 1] ?? 0);
  const t0 = t1 - spec.ms;
  const limit = latest?.memoryLimitBytes !== undefined && latest.memoryLimitBytes > 0n ? Number(latest.memoryLimitBytes) : undefined;
  const memGauge = memoryGauge(latest, kind);
  const cpuFig = cpuGauge(latest, kind);
  // The same arrays until the next answer: the drawer re-renders on every watch change, the chart need not.
  const charts = useMemo(() => {
    const chart = (values: (number | undefined)[][]) => chartData(lines.times, values, t0, t1, spec.gapMs, lines.spans);
    return { cpu: chart([lines.cpu]), memory: chart([lines.memory]), net: chart([lines.rx, lines.tx]) };
  }, [lines, t0, t1, spec.gapMs]);

  return (
    <div className="usage-history" data-testid="usage-history">
      <div className="usage-head">
        <div className="segmented" role="radiogroup" aria-label="Usage window">
          {WINDOWS.map((x) => (
            <label key={x.w} className="check">
              <input type="radio" name={groupName} checked={win === x.w} onChange={() => setWin(x.w)} /> {x.label}
            </label>
          ))}
        </div>
        {latest && (
          <span className="muted small" data-testid="usage-latest-time">
            latest sample {formatClock(sampleMs(latest))}
          </span>
        )}
      </div>
      {error && (
        <p className="error-box" role="alert">
          Could not read usage: {error}
        </p>
      )}
      {!res && !error && <p className="muted">Loading usage…</p>}
      {res && !latest && lines.times.length === 0 && (
        <p className="notice" data-testid="usage-note">
          {res.note || "No usage measured in this window."}
        </p>
      )}
      {res && (latest || lines.times.length > 0) && (
        <div className="usage-charts">
          <UsageChart
            title={`CPU of ${name}`}
            caption={cpuFig ? cpuFig.title : "CPU: not measured"}
            t0={t0}
            t1={t1}
            points={measured(lines.cpu)}
            data={charts.cpu}
            yMax={kind === "host" ? 100 : niceMax(lines.cpu, 100)}
            yText={formatPercent}
            lines={[{ label: "CPU", tone: "accent" }]}
          />
          <UsageChart
            title={`Memory of ${name}`}
            caption={memGauge ? memGauge.title : "Memory: not measured"}
            t0={t0}
            t1={t1}
            points={measured(lines.memory)}
            data={charts.memory}
            yMax={niceMax([...lines.memory, limit], 1024 * 1024, true)}
            yText={(v) => formatBytes(v)}
            limit={limit}
            warn={memGauge?.warn ?? false}
            lines={[{ label: day ? "Memory (5-min peak)" : "Memory", tone: "accent" }]}
          />
          {kind === "server" && (
            <UsageChart
              title={`Network of ${name}`}
              caption={`Network: received ${formatRate(latest?.netRxBytesPerSecond)}, sent ${formatRate(latest?.netTxBytesPerSecond)}`}
              t0={t0}
              t1={t1}
              points={measured(lines.rx)}
              data={charts.net}
              yMax={niceMax([...lines.rx, ...lines.tx], 1024, true)}
              yText={(v) => formatRate(v)}
              lines={[
                { label: "received", tone: "accent" },
                { label: "sent", tone: "ok" },
              ]}
            />
          )}
          {kind === "host" && latest?.load1 !== undefined && (
            <p className="small muted">
              Load {latest.load1.toFixed(2)} {latest.load5?.toFixed(2)} {latest.load15?.toFixed(2)}
              {latest.cpus ? ` on ${latest.cpus} CPUs` : ""}
            </p>
          )}
          {kind === "server" && latest && (latest.pids !== undefined || latest.ioReadBytesPerSecond !== undefined) && (
            <p className="small muted" data-testid="usage-extra">
              {latest.pids !== undefined && <>Processes {latest.pids}{latest.pidsLimit !== undefined ? ` of ${latest.pidsLimit}` : ""}. </>}
              {latest.ioReadBytesPerSecond !== undefined && <>Disk read {formatRate(latest.ioReadBytesPerSecond)}, written {formatRate(latest.ioWriteBytesPerSecond)}.</>}
            </p>
          )}
          {!latest && res.note && <p className="notice">{res.note}</p>}
        </div>
      )}
    </div>
  );
}

/**
 * One chart: a figure named by its caption (the latest values in words), the
 * title and legend as text, the lines drawn by uPlot once it has loaded.
 */
export function UsageChart(p: {
  title: string;
  caption: ReactNode;
  t0: number;
  t1: number;
  /** Measured points of the first line (a data attribute, for tests and curious readers). */
  points: number;
  data: [number[], ...(number | null)[][]];
  yMax: number;
  yText: (v: number) => string;
  lines: { label: string; tone: "accent" | "ok" }[];
  limit?: number | undefined;
  warn?: boolean;
}) {
  const captionId = useId();
  return (
    <figure className={`usage-chart${p.warn ? " warn" : ""}`} aria-labelledby={captionId} data-testid="usage-chart" data-points={p.points}>
      <div className="usage-chart-title">
        <span className="strong">{p.title}</span>
        <span className="usage-legend">
          {p.lines.length > 1 &&
            p.lines.map((l) => (
              <span key={l.label} className={`legend tone-${l.tone}-line`}>
                {l.label}
              </span>
            ))}
          {p.limit !== undefined && <span className="legend limit">limit {p.yText(p.limit)}</span>}
        </span>
      </div>
      <div role="img" aria-label={`${p.title} from ${formatTime(p.t0)} to ${formatTime(p.t1)}`}>
        <Suspense fallback={<div className="usage-plot-loading muted small">Loading the chart…</div>}>
          <UsagePlot data={p.data} lines={p.lines} t0={p.t0} t1={p.t1} yMax={p.yMax} yText={p.yText} limit={p.limit} warn={p.warn ?? false} />
        </Suspense>
      </div>
      <figcaption id={captionId} className="small" data-testid="usage-caption">
        {p.caption}
      </figcaption>
    </figure>
  );
}
