/**
 * What sampling one container's usage from cgroup files costs the agent:
 * reads the counters of one process N times (default: this script's own
 * process; `--pid <n>` for a container's init) and prints CPU time and wall
 * time per sample, with and without re-reading /proc/<pid>/cgroup, and what
 * that means for 100 containers every 10 s.
 *
 *   node --import tsx scripts/usage-sampling-cost.ts [--pid <n>] [--samples 1000]
 *
 * Not a test: the numbers depend on the machine and its load.
 */
import { parseArgs } from "node:util";
import { containerCgroupDirs, mapBounded, readContainerCounters, readText, readTextBlocking } from "../agent/src/usage/container-usage.js";
import { readHostCounters } from "../agent/src/usage/host-usage.js";

const { values } = parseArgs({ options: { pid: { type: "string" }, samples: { type: "string", default: "1000" }, runs: { type: "string", default: "3" } } });
const pid = values.pid ? Number(values.pid) : process.pid;
const samples = Number(values.samples);
const runs = Number(values.runs);

/** CPU time (this process, every thread: libuv's pool included) and wall time per sample, µs: the lowest of the runs. */
interface Cost {
  cpuUs: number;
  wallUs: number;
  cpuUsRuns: number[];
}

async function measure(label: string, one: () => Promise<unknown>, concurrency = 1): Promise<Cost> {
  // Warm up: JIT, the kernel's dentries.
  for (let i = 0; i < 100; i++) await one();
  const cpuUsRuns: number[] = [];
  let wallUs = Infinity;
  for (let r = 0; r < runs; r++) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await mapBounded(
      Array.from({ length: samples }, (_, i) => i),
      concurrency,
      () => one(),
    );
    wallUs = Math.min(wallUs, ((performance.now() - t0) * 1000) / samples);
    const cpu = process.cpuUsage(cpu0);
    cpuUsRuns.push((cpu.user + cpu.system) / samples);
  }
  const cost = { cpuUs: Math.min(...cpuUsRuns), wallUs, cpuUsRuns };
  console.log(`${label.padEnd(62)} cpu ${cost.cpuUs.toFixed(0).padStart(5)} µs (runs: ${cpuUsRuns.map((c) => c.toFixed(0)).join(", ")})   wall ${wallUs.toFixed(0).padStart(5)} µs`);
  return cost;
}

const dirs = await containerCgroupDirs(pid);
const first = await readContainerCounters(pid, { dirs });
console.log(`pid ${pid}: cgroup ${JSON.stringify(dirs)}`);
console.log(`one sample: ${JSON.stringify({ ...first, unreadable: undefined })}; unreadable: ${first.unreadable.join(", ") || "none"}`);
console.log(`per sample, lowest of ${runs} runs of ${samples}:`);

const rows: [string, Cost][] = [];
for (const [name, read] of [
  ["fs.promises", readText],
  ["readFileSync", readTextBlocking],
] as const) {
  rows.push([`${name}, dirs cached, one at a time`, await measure(`container, ${name}, dirs cached, one at a time`, () => readContainerCounters(pid, { dirs, read }))]);
  rows.push([`${name}, /proc/<pid>/cgroup re-read`, await measure(`container, ${name}, /proc/<pid>/cgroup re-read each time`, () => readContainerCounters(pid, { read }))]);
  rows.push([`${name}, dirs cached, 16 in flight`, await measure(`container, ${name}, dirs cached, 16 containers in flight`, () => readContainerCounters(pid, { dirs, read }), 16)]);
}
const hostAsync = await measure("host (/proc/stat, meminfo, loadavg, statfs /), fs.promises", () => readHostCounters({ dataRoot: "/" }));
const hostSync = await measure("host, readFileSync", () => readHostCounters({ dataRoot: "/", read: readTextBlocking }));

console.log("\n100 containers + the host every 10 s: CPU time per round, share of one core");
for (const [label, c] of rows) {
  const ms = (c.cpuUs * 100 + (label.startsWith("readFileSync") ? hostSync : hostAsync).cpuUs) / 1000;
  console.log(`  ${label.padEnd(42)} ${ms.toFixed(1).padStart(6)} ms = ${((ms / 10_000) * 100).toFixed(2)} %`);
}
