/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`, e.g. the scale
 * suite's manager with `npm run bench -- --profile`): the functions with the
 * most self time, and with the most inclusive time (self + callees).
 *
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile> [top=30] [filter]
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile> --stalls [count=5] [top=15]
 *
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile> --stalls-log <manager.log> [top=15]
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile> --window <from>:<to> [top=30] [filter]
 *
 * `--stalls`: the longest stretches in which the thread never went idle (what
 * holds the event loop: a stretch of 1 s is a second in which no timer,
 * socket or keepalive was served), each with its own inclusive breakdown.
 * Consecutive turns merge into one stretch; `--stalls-log` is exact: the
 * stalls the manager logged ("the event loop was blocked", with monotonic
 * start and end in µs, the profile's clock; metrics/stall-watch.ts), each
 * with what ran in it. `--window`: only the samples between two points, in
 * seconds from the profile's start, or from its end when negative
 * (`--window -14:-2`: a phase that ended 2 s before the process did).
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const stalls = args.includes("--stalls");
const logAt = args.indexOf("--stalls-log");
const stallsLog = logAt >= 0 ? args[logAt + 1] : undefined;
const windowAt = args.indexOf("--window");
const windowArg = windowAt >= 0 ? args[windowAt + 1] : undefined;
/** Indices of options and their values, not positional arguments. */
const skipped = new Set([logAt, windowAt].filter((i) => i >= 0).flatMap((i) => [i, i + 1]));
const [file, topArg, filter] = args.filter((a, i) => a !== "--stalls" && !skipped.has(i));
if (!file) {
  process.stderr.write("usage: bench/profile-summary.ts <file.cpuprofile> [top] [url-filter] | <file.cpuprofile> --stalls [count] [top]\n");
  process.exit(2);
}
const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));

/** Self time per node over samples [from, to): each sample lasts until the next one. */
function selfTimes(from: number, to: number): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = from; i < to; i++) {
    const dt = p.timeDeltas[i + 1] ?? 0;
    m.set(p.samples[i]!, (m.get(p.samples[i]!) ?? 0) + dt);
  }
  return m;
}

const label = (n: Node) => {
  const url = n.callFrame.url.replace(/^file:\/\//, "").replace(/.*\/node_modules\//, "~/").replace(/.*\/work\/main\//, "");
  return `${n.callFrame.functionName || "(anonymous)"} ${url}:${n.callFrame.lineNumber + 1}`;
};

function breakdown(selfUs: Map<number, number>): { self: Map<string, number>; incl: Map<string, number> } {
const self = new Map<string, number>();
const incl = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  self.set(label(n), (self.get(label(n)) ?? 0) + us);
  // Inclusive: every distinct frame on the stack once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (seen.has(l)) continue;
    seen.add(l);
    incl.set(l, (incl.get(l) ?? 0) + us);
  }
}
return { self, incl };
}

const show = (title: string, m: Map<string, number>, totalUs: number, top: number, only?: string) => {
  process.stdout.write(`\n${title} (of ${(totalUs / 1e6).toFixed(3)} s)\n`);
  const rows = [...m].filter(([l]) => !only || l.includes(only)).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [l, us] of rows) process.stdout.write(`${(us / 1e6).toFixed(2).padStart(8)} s ${((us / totalUs) * 100).toFixed(1).padStart(5)}%  ${l}\n`);
};
/** Monotonic time (µs) of each sample. */
function sampleTimes(): number[] {
  const at: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) at.push((t += d));
  return at;
}

if (stallsLog) {
  const top = Number(topArg ?? 15);
  const at = sampleTimes();
  for (const line of readFileSync(stallsLog, "utf8").split("\n")) {
    if (!line.includes('"startUs"')) continue;
    let rec: { blockedMs?: number; startUs?: number; endUs?: number };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      continue;
    }
    const { startUs, endUs, blockedMs } = rec;
    if (startUs === undefined || endUs === undefined || startUs < p.startTime || endUs > p.endTime) continue;
    const from = at.findIndex((t) => t >= startUs);
    if (from < 0) continue;
    let to = from;
    while (to < at.length && at[to]! <= endUs) to++;
    const { incl } = breakdown(selfTimes(from, to));
    show(`stall of ${blockedMs} ms at +${((startUs - p.startTime) / 1e6).toFixed(1)} s, inclusive time`, incl, endUs - startUs, top);
  }
} else if (stalls) {
  // Busy stretches: runs of samples with no (idle) sample in between.
  const count = Number(topArg ?? 5);
  const top = Number(filter ?? 15);
  const at = sampleTimes();
  const runs: { from: number; to: number; us: number }[] = [];
  let from = -1;
  for (let i = 0; i <= p.samples.length; i++) {
    const busy = i < p.samples.length && !idle.has(p.samples[i]!);
    if (busy && from < 0) from = i;
    if (!busy && from >= 0) {
      runs.push({ from, to: i, us: (at[i] ?? p.endTime) - at[from]! });
      from = -1;
    }
  }
  runs.sort((a, b) => b.us - a.us);
  for (const r of runs.slice(0, count)) {
    const { incl } = breakdown(selfTimes(r.from, r.to));
    show(`stall at +${((at[r.from]! - p.startTime) / 1e6).toFixed(1)} s, inclusive time`, incl, r.us, top);
  }
} else {
  const top = Number(topArg ?? 30);
  let [from, to, totalUs] = [0, p.samples.length, p.endTime - p.startTime];
  if (windowArg) {
    const [a, b] = windowArg.split(":").map(Number);
    if (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b)) throw new Error(`--window wants <from>:<to> in seconds, got "${windowArg}"`);
    const point = (sec: number) => (sec < 0 ? p.endTime : p.startTime) + sec * 1e6;
    const at = sampleTimes();
    const [fromUs, toUs] = [point(a), point(b)];
    from = at.findIndex((t) => t >= fromUs);
    to = at.findIndex((t) => t > toUs);
    if (from < 0) from = at.length;
    if (to < 0) to = at.length;
    totalUs = Math.max(0, Math.min(toUs, p.endTime) - Math.max(fromUs, p.startTime));
  }
  const { self, incl } = breakdown(selfTimes(from, to));
  show("self time", self, totalUs, top, filter);
  show("inclusive time", incl, totalUs, top, filter);
}
