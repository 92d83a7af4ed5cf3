/**
 * What a benchmark run produces: figures (every sample, and min / median /
 * p99 over them), targets with PASS/FAIL, process usage, and notes saying
 * what was run at which size. Printed as tables and written as JSON.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { summarize, type Summary } from "./stats.js";
import type { UsageWindow } from "./proc-stats.js";

const MAX_SAMPLES = 2000;

export interface Figure {
  suite: string;
  name: string;
  unit: string;
  summary: Summary;
  /** Every sample, up to MAX_SAMPLES (beyond, only the summary is kept). */
  samples?: number[];
  note?: string;
  /** The row it goes in side by side, when its name holds a value that differs between runs. */
  compareAs?: string;
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  /** null: not measured in this run (skipped or failed before it). */
  pass: boolean | null;
  note?: string;
}

/**
 * One figure across several configurations (the same suite run on several
 * stores): a median, p99 or single value per column, null where that
 * configuration did not produce the figure.
 */
export interface ComparisonRow {
  figure: string;
  unit: string;
  stat: "value" | "median" | "p99";
  values: (number | null)[];
}

export interface Comparison {
  title: string;
  /** Column labels, e.g. sqlite, postgres, postgres-2. */
  columns: string[];
  rows: ComparisonRow[];
}

/** Rows sampled over time (e.g. each manager every second), kept for charts drawn after the run. */
export interface Series {
  suite: string;
  name: string;
  columns: string[];
  rows: (number | string | null)[][];
}

export class Report {
  readonly figures: Figure[] = [];
  readonly targets: Target[] = [];
  readonly usage: { suite: string; phase: string; process: string; window: UsageWindow }[] = [];
  readonly notes: string[] = [];
  readonly errors: { suite: string; error: string }[] = [];
  readonly sizes: Record<string, number | string> = {};
  readonly comparisons: Comparison[] = [];
  readonly series: Series[] = [];

  figure(suite: string, name: string, unit: string, samples: number[], note?: string, opts: { compareAs?: string } = {}): Figure {
    const f: Figure = {
      suite,
      name,
      unit,
      summary: summarize(samples),
      ...(samples.length <= MAX_SAMPLES ? { samples: samples.map((x) => round(x)) } : {}),
      ...(note ? { note } : {}),
      ...(opts.compareAs ? { compareAs: opts.compareAs } : {}),
    };
    this.figures.push(f);
    return f;
  }

  target(name: string, goal: string, measured: string, pass: boolean | null, note?: string): void {
    this.targets.push({ name, goal, measured, pass, ...(note ? { note } : {}) });
  }

  use(suite: string, phase: string, process: string, window: UsageWindow): void {
    this.usage.push({ suite, phase, process, window });
  }

  note(text: string): void {
    this.notes.push(text);
  }

  /**
   * Adds a side-by-side table of the figures filed under each column's
   * suite, rows in the order the figures were first reported: a figure of
   * one sample shows its value; of several, its median and p99 (two rows).
   * Then the CPU the manager process(es) used per phase, summed over the
   * managers of a configuration.
   */
  sideBySide(title: string, columns: { label: string; suite: string }[]): Comparison {
    const rows = new Map<string, ComparisonRow>();
    const row = (figure: string, unit: string, stat: ComparisonRow["stat"]) => {
      const key = `${figure}\u0000${unit}\u0000${stat}`;
      let r = rows.get(key);
      if (!r) rows.set(key, (r = { figure, unit, stat, values: columns.map(() => null) }));
      return r;
    };
    const rowName = (f: Figure) => f.compareAs ?? f.name;
    const several = new Set(this.figures.filter((f) => f.summary.n > 1).map(rowName));
    columns.forEach((c, i) => {
      for (const f of this.figures) {
        if (f.suite !== c.suite) continue;
        const name = rowName(f);
        if (several.has(name)) {
          row(name, f.unit, "median").values[i] = f.summary.median;
          row(name, f.unit, "p99").values[i] = f.summary.p99;
        } else {
          row(name, f.unit, "value").values[i] = f.summary.n ? f.summary.median : null;
        }
      }
    });
    columns.forEach((c, i) => {
      for (const u of this.usage) {
        if (u.suite !== c.suite || !u.process.startsWith("manager")) continue;
        const r = row(`${u.phase}: manager CPU (all managers)`, "cpu s", "value");
        r.values[i] = (r.values[i] ?? 0) + (Number.isFinite(u.window.cpuS) ? u.window.cpuS : 0);
      }
    });
    const comparison: Comparison = { title, columns: columns.map((c) => c.label), rows: [...rows.values()] };
    this.comparisons.push(comparison);
    return comparison;
  }

  /** The tables, for a terminal. */
  render(): string {
    const out: string[] = [];
    out.push(table(
      ["suite", "figure", "n", "min", "median", "p99", "unit"],
      this.figures.map((f) => [f.suite, f.name, String(f.summary.n), fmt(f.summary.min), fmt(f.summary.median), fmt(f.summary.p99), f.unit]),
    ));
    if (this.usage.length) {
      out.push(table(
        ["suite", "phase", "process", "wall s", "cpu s", "cpu %", "rss peak MB", "rss end MB"],
        this.usage.map((u) => [u.suite, u.phase, u.process, fmt(u.window.wallS), fmt(u.window.cpuS), fmt(u.window.cpuPercent), fmt(u.window.rssPeakMB), fmt(u.window.rssEndMB)]),
      ));
    }
    out.push(table(
      ["target", "goal", "measured", "result"],
      this.targets.map((t) => [t.name, t.goal, t.measured, t.pass === null ? "n/a" : t.pass ? "PASS" : "FAIL"]),
    ));
    for (const c of this.comparisons) {
      out.push(
        `${c.title}\n` +
          table(
            ["figure", "stat", ...c.columns, "unit"],
            c.rows.map((r) => [r.figure, r.stat === "value" ? "" : r.stat, ...r.values.map((v) => (v === null ? "-" : fmt(v))), r.unit]),
          ),
      );
    }
    for (const e of this.errors) out.push(`ERROR in ${e.suite}: ${e.error}`);
    for (const n of this.notes) out.push(`note: ${n}`);
    return out.join("\n\n") + "\n";
  }

  write(path: string, header: Record<string, unknown>): void {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(
      path,
      JSON.stringify(
        {
          ...header,
          sizes: this.sizes,
          figures: this.figures,
          targets: this.targets,
          usage: this.usage,
          ...(this.comparisons.length ? { comparisons: this.comparisons } : {}),
          ...(this.series.length ? { series: this.series } : {}),
          notes: this.notes,
          errors: this.errors,
        },
        (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : typeof v === "number" ? round(v) : v),
        2,
      ) + "\n",
    );
  }
}

function round(x: number): number {
  return Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x;
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return "-";
  if (Math.abs(x) >= 1000) return Math.round(x).toString();
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
