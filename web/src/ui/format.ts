/** Human formats for bytes, times and durations. Pure. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

export function formatBytes(n: number | bigint | undefined): string {
  if (n === undefined) return "—";
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "4s ago", "12m ago", "3h ago", "2d ago"; future times "in 5m". */
export function formatAgo(ms: number, now: number): string {
  const d = now - ms;
  const abs = Math.abs(d);
  const s = Math.round(abs / 1000);
  const text = s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : s < 86400 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`;
  if (s < 2) return "just now";
  return d >= 0 ? `${text} ago` : `in ${text}`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 360) / 10} h`.replace(".0 ", " ");
  return `${Math.round(seconds / 8640) / 10} d`.replace(".0 ", " ");
}

export function tsMs(t: Timestamp | undefined): number | undefined {
  return t ? timestampMs(t) : undefined;
}

/** "1 server", "3 servers": a count with its noun, plural when it is not 1 (`plural` for irregular nouns). */
export function count(n: number | bigint, noun: string, plural = `${noun}s`): string {
  return `${n} ${Number(n) === 1 ? noun : plural}`;
}

/** Local date and time, second precision: "2025-01-31 14:03:07". */
export function formatTime(ms: number | undefined): string {
  if (ms === undefined) return "—";
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Local time of day, "14:03" (with the date when it is not today: "2025-01-31 14:03"). */
export function formatClock(ms: number | undefined, now = Date.now()): string {
  if (ms === undefined) return "—";
  const full = formatTime(ms);
  return full.slice(0, 10) === formatTime(now).slice(0, 10) ? full.slice(11, 16) : full.slice(0, 16);
}

/** Splits a command line into words: spaces separate, '…' and "…" quote, \ escapes. */
export function splitWords(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let has = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = "";
      has = false;
    } else {
      cur += c;
    }
  }
  if (quote) throw new Error(`unclosed ${quote} quote`);
  if (has || cur) out.push(cur);
  return out;
}

/** The inverse of splitWords: quotes words that need it. */
export function joinWords(words: readonly string[]): string {
  return words.map((w) => (w !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(" ");
}
