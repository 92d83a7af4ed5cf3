/**
 * Usage on screen: small bars with figures (the servers table, the hosts
 * page) and charts of the last hour or day from `UsageService.GetUsage`
 * (the server drawer's Usage tab, a host's details). The charts are
 * hand-drawn SVG lines: no chart library, the theme's colours, and each
 * chart a figure whose caption says its latest values in words.
 */
import { useEffect, useId, useState, type ReactNode } from "react";
import { UsageWindow, type GetUsageResponse, type UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { formatBytes, formatClock, formatTime } from "../ui/format.js";
import { cpuGauge, formatPercent, formatRate, linePath, memoryGauge, niceMax, noUsageReason, sampleMs, type ChartPoint, type Gauge } from "./usage-model.js";

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
  const points = res?.points ?? [];
  const times = points.map((p) => sampleMs(p) ?? 0);
  // The window ends now, or at the last point when the host's clock is ahead of this browser's.
  const t1 = Math.max(now, times[times.length - 1] ?? 0);
  const t0 = t1 - spec.ms;
  const series = (pick: (s: UsageSample) => number | undefined): ChartPoint[] => points.map((p, i) => ({ t: times[i]!, v: pick(p) }));
  const latest = res?.latest;
  const limit = latest?.memoryLimitBytes !== undefined && latest.memoryLimitBytes > 0n ? Number(latest.memoryLimitBytes) : undefined;
  const memory = series((p) => (win === UsageWindow.DAY && p.memoryMaxBytes !== undefined ? Number(p.memoryMaxBytes) : p.memoryBytes === undefined ? undefined : Number(p.memoryBytes)));
  const cpu = series((p) => p.cpuPercent);
  const cpuCeil = kind === "host" ? 100 : niceMax(cpu.map((p) => p.v), 100);
  const rx = series((p) => p.netRxBytesPerSecond);
  const tx = series((p) => p.netTxBytesPerSecond);
  const memGauge = memoryGauge(latest, kind);
  const cpuFig = cpuGauge(latest, kind);

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
      {res && !latest && points.length === 0 && (
        <p className="notice" data-testid="usage-note">
          {res.note || "No usage measured in this window."}
        </p>
      )}
      {res && (latest || points.length > 0) && (
        <div className="usage-charts">
          <UsageChart
            title={`CPU of ${name}`}
            caption={cpuFig ? cpuFig.title : "CPU: not measured"}
            t0={t0}
            t1={t1}
            gapMs={spec.gapMs}
            yMax={cpuCeil}
            yText={formatPercent}
            lines={[{ key: "cpu", label: "CPU", points: cpu }]}
          />
          <UsageChart
            title={`Memory of ${name}`}
            caption={memGauge ? memGauge.title : "Memory: not measured"}
            t0={t0}
            t1={t1}
            gapMs={spec.gapMs}
            yMax={niceMax([...memory.map((p) => p.v), limit], 64 * 1024 * 1024, true)}
            yText={(v) => formatBytes(v)}
            limit={limit}
            warn={memGauge?.warn ?? false}
            lines={[{ key: "memory", label: win === UsageWindow.DAY ? "Memory (5-min peak)" : "Memory", points: memory }]}
          />
          {kind === "server" && (
            <UsageChart
              title={`Network of ${name}`}
              caption={`Network: received ${formatRate(latest?.netRxBytesPerSecond)}, sent ${formatRate(latest?.netTxBytesPerSecond)}`}
              t0={t0}
              t1={t1}
              gapMs={spec.gapMs}
              yMax={niceMax([...rx, ...tx].map((p) => p.v), 1024, true)}
              yText={(v) => formatRate(v)}
              lines={[
                { key: "rx", label: "received", points: rx },
                { key: "tx", label: "sent", points: tx },
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

const W = 600;
const H = 120;

/**
 * One chart: lines over [t0, t1], a dashed limit line, the scale's top and
 * the window's ends as text. A figure named by its title; its caption holds
 * the latest values in words.
 */
export function UsageChart(p: {
  title: string;
  caption: ReactNode;
  t0: number;
  t1: number;
  gapMs: number;
  yMax: number;
  yText: (v: number) => string;
  lines: { key: string; label: string; points: readonly ChartPoint[] }[];
  limit?: number | undefined;
  warn?: boolean;
}) {
  const captionId = useId();
  const limitY = p.limit !== undefined ? H - (Math.min(p.limit, p.yMax) / p.yMax) * H : undefined;
  return (
    <figure className={`usage-chart${p.warn ? " warn" : ""}`} aria-labelledby={captionId} data-testid="usage-chart">
      <div className="usage-chart-title">
        <span className="strong">{p.title}</span>
        <span className="usage-legend">
          {p.lines.length > 1 &&
            p.lines.map((l, i) => (
              <span key={l.key} className={`legend series-${i + 1}`}>
                {l.label}
              </span>
            ))}
          {p.limit !== undefined && <span className="legend limit">limit {p.yText(p.limit)}</span>}
        </span>
      </div>
      <div className="usage-plot">
        <span className="usage-y top" aria-hidden="true">
          {p.yText(p.yMax)}
        </span>
        <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label={`${p.title} from ${formatTime(p.t0)} to ${formatTime(p.t1)}`}>
          <line className="grid" x1={0} x2={W} y1={H / 2} y2={H / 2} vectorEffect="non-scaling-stroke" />
          <line className="grid" x1={0} x2={W} y1={H} y2={H} vectorEffect="non-scaling-stroke" />
          {limitY !== undefined && <line className="limit" x1={0} x2={W} y1={limitY} y2={limitY} vectorEffect="non-scaling-stroke" />}
          {p.lines.map((l, i) => (
            <path key={l.key} className={`series-${i + 1}`} d={linePath(l.points, p.t0, p.t1, p.yMax, W, H, p.gapMs)} vectorEffect="non-scaling-stroke" />
          ))}
        </svg>
        <span className="usage-x" aria-hidden="true">
          <span>{formatClock(p.t0)}</span>
          <span>now</span>
        </span>
      </div>
      <figcaption id={captionId} className="small" data-testid="usage-caption">
        {p.caption}
      </figcaption>
    </figure>
  );
}
