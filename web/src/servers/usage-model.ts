/**
 * What the dashboard makes of usage samples: the figures and bar lengths of a
 * servers-table cell or a host row, and the lines of a chart. Pure.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { formatBytes } from "../ui/format.js";

/** Memory at or above this share of its limit is shown in the warning tone. */
export const MEMORY_WARN_FRACTION = 0.9;

export interface Gauge {
  /** The figure as shown: "37%", "512 MiB / 1 GiB". */
  text: string;
  /** The figure in a narrow cell: "37%", "512M/1.0G". */
  short: string;
  /** The bar's length, 0 to 1; undefined: no bar (nothing to measure against). */
  fraction: number | undefined;
  /** The warning tone. */
  warn: boolean;
  /** Said in full, for a title and screen readers. */
  title: string;
}

/** "37%", "1.5%", "0%", "240%". */
export function formatPercent(p: number): string {
  if (p > 0 && p < 10) return `${p.toFixed(1).replace(/\.0$/, "")}%`;
  return `${Math.round(p)}%`;
}

/** "1.2 MiB/s". */
export function formatRate(bytesPerSecond: number | undefined): string {
  if (bytesPerSecond === undefined) return "—";
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/**
 * CPU of a sample. A server's figure is of one core (200% = two cores busy),
 * its bar fills at one core; a host's is of all its CPUs.
 */
export function cpuGauge(s: UsageSample | undefined, of: "server" | "host"): Gauge | undefined {
  const p = s?.cpuPercent;
  if (p === undefined) return undefined;
  const text = formatPercent(p);
  return {
    text,
    short: text,
    fraction: Math.max(0, Math.min(1, p / 100)),
    warn: of === "host" && p >= 90,
    title: of === "server" ? `CPU ${text} of one core` : `CPU ${text} of ${s?.cpus ? `${s.cpus} CPUs` : "all CPUs"}`,
  };
}

/** Memory of a sample: against its limit when there is one (a host's is its total). */
export function memoryGauge(s: UsageSample | undefined, of: "server" | "host"): Gauge | undefined {
  if (s?.memoryBytes === undefined) return undefined;
  const used = Number(s.memoryBytes);
  const limit = s.memoryLimitBytes !== undefined && s.memoryLimitBytes > 0n ? Number(s.memoryLimitBytes) : undefined;
  if (limit === undefined) return { text: formatBytes(used), short: shortBytes(used), fraction: undefined, warn: false, title: `Memory ${formatBytes(used)}${of === "server" ? ", no limit" : ""}` };
  const fraction = used / limit;
  return {
    text: `${formatBytes(used)} / ${formatBytes(limit)}`,
    short: `${shortBytes(used)}/${shortBytes(limit)}`,
    fraction: Math.min(1, fraction),
    warn: fraction >= MEMORY_WARN_FRACTION,
    title: `Memory ${formatBytes(used)} of ${of === "server" ? "its limit" : "total"} ${formatBytes(limit)} (${formatPercent(fraction * 100)})`,
  };
}

/** The data root's filesystem of a host sample. */
export function diskGauge(s: UsageSample | undefined): Gauge | undefined {
  if (s?.diskTotalBytes === undefined || s.diskFreeBytes === undefined || s.diskTotalBytes === 0n) return undefined;
  const total = Number(s.diskTotalBytes);
  const free = Number(s.diskFreeBytes);
  const used = (total - free) / total;
  return { text: `${formatBytes(free)} free`, short: shortBytes(free), fraction: Math.max(0, Math.min(1, used)), warn: free / total < 0.1, title: `Data root: ${formatBytes(free)} free of ${formatBytes(total)}` };
}

/** Bytes in a few characters: "512K", "256M", "1.5G", "12G". */
export function shortBytes(n: number): string {
  const units = ["B", "K", "M", "G", "T"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 || v >= 10 ? Math.round(v) : v.toFixed(1)}${units[i]}`;
}

/** "0.52 0.40 0.31". */
export function loadText(s: UsageSample | undefined): string | undefined {
  if (s?.load1 === undefined) return undefined;
  return [s.load1, s.load5, s.load15].map((v) => (v ?? 0).toFixed(2)).join(" ");
}

/** Why a server shows no usage: not running, or nothing sampled yet. */
export function noUsageReason(running: boolean): string {
  return running ? "no usage sample yet (the host's agent samples every 10 s; its agent may be connected to another manager)" : "not running: nothing to measure";
}

export function sampleMs(s: UsageSample): number | undefined {
  return s.time ? timestampMs(s.time) : undefined;
}

/**
 * A chart's data as uPlot takes it: the x values (seconds) and one list per
 * line, `null` where nothing was measured. A gap in time longer than
 * `maxGapMs` (no sample then) gets a null point between its ends, so the line
 * breaks there instead of being drawn across it. `spans[i]`: how long point i
 * stands for (a 5-minute bucket, which the hour falls back to where its
 * manager has no samples: 300,000), counted into the gap after it. Points
 * outside [t0, t1] are left out.
 */
export function chartData(
  times: readonly number[],
  lines: readonly (readonly (number | undefined)[])[],
  t0: number,
  t1: number,
  maxGapMs: number,
  spans: readonly number[] = [],
): [number[], ...(number | null)[][]] {
  const xs: number[] = [];
  const ys: (number | null)[][] = lines.map(() => []);
  let prev: number | undefined;
  let prevSpan = 0;
  times.forEach((t, i) => {
    if (t < t0 || t > t1) return;
    if (prev !== undefined && t - prev > maxGapMs + prevSpan) {
      xs.push((prev + t) / 2 / 1000);
      for (const y of ys) y.push(null);
    }
    xs.push(t / 1000);
    lines.forEach((line, k) => ys[k]!.push(line[i] ?? null));
    prev = t;
    prevSpan = spans[i] ?? 0;
  });
  return [xs, ...ys];
}

/** A history point that stands for a 5-minute bucket (it has the bucket's peak memory), not one sample. */
export const BUCKET_MS = 300_000;
export function pointSpanMs(s: UsageSample): number {
  return s.memoryMaxBytes !== undefined ? BUCKET_MS : 0;
}

/** How many measured values a line has. */
export function measured(values: readonly (number | undefined)[]): number {
  return values.filter((v) => v !== undefined).length;
}

/**
 * The top of a chart's scale: at least `floor`, above the largest value and
 * the limit, rounded up to a figure that reads well (1, 2 or 5 × a power of ten,
 * or of 1024 for bytes).
 */
export function niceMax(values: Iterable<number | undefined>, floor: number, bytes = false): number {
  let m = floor;
  for (const v of values) if (v !== undefined && v > m) m = v;
  const base = bytes ? 1024 : 10;
  let unit = 1;
  while (unit * base <= m) unit *= base;
  for (const k of bytes ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] : [1, 2, 5, 10]) if (k * unit >= m) return k * unit;
  return m;
}
