/**
 * A container's usage, read from its cgroup's files and its network
 * namespace's /proc/<pid>/net/dev: no Docker API call, a handful of small
 * file reads per container (see docs/resources.md for the measured cost).
 *
 * Two steps: `readContainerCounters` takes the cumulative counters at one
 * instant (CPU time, bytes) and the gauges (memory, pids); `containerUsage`
 * turns two of those into rates. The first sample of a container has gauges
 * but no rates.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { cgroupDirs, parseProcCgroup, type CgroupDirs } from "./cgroup-path.js";
import { parseBlkioServiceBytes, parseFlatKeyed, parseIoStat, parseLimit, parseNetDev, parseSingleValue, type IoBytes } from "./usage-files.js";

/** Cumulative counters and gauges of one container at one instant; a field absent could not be read. */
export interface ContainerCounters {
  /** Wall clock, ms since the epoch (what a history records). */
  at: number;
  /** Monotonic clock, ms (what rates are computed from: immune to clock steps). */
  monotonicMs: number;
  /** CPU time used by every process of the cgroup, ns. */
  cpuNs?: number;
  /** Memory used without the inactive file cache (what `docker stats` shows). */
  memoryBytes?: number;
  /** The hard limit; null: none. */
  memoryLimitBytes?: number | null;
  pids?: number;
  /** null: none. */
  pidsLimit?: number | null;
  ioReadBytes?: number;
  ioWriteBytes?: number;
  /** Summed over the namespace's interfaces but lo. */
  netRxBytes?: number;
  netTxBytes?: number;
  /** The files that were missing or unparsable (for one log line; never a throw). */
  unreadable: string[];
}

/** Reads a file's text; undefined when it cannot be read. A test seam. */
export type ReadText = (path: string) => Promise<string | undefined>;

/** Reads with fs.promises (the default): every file costs an open, a stat, reads and a close on libuv's thread pool. */
export const readText: ReadText = (path) => readFile(path, "utf8").catch(() => undefined);

/**
 * Reads with readFileSync. The kernel builds cgroup and /proc files in memory
 * (no disk wait), so a blocking read holds the event loop only for the copy,
 * and it costs several times less CPU than the thread-pool round trips of
 * readText (docs/resources.md has the measured figures).
 */
export const readTextBlocking: ReadText = (path) => {
  try {
    return Promise.resolve(readFileSync(path, "utf8"));
  } catch {
    return Promise.resolve(undefined);
  }
};

export interface ContainerReadOptions {
  /** Default "/proc". */
  procRoot?: string;
  /** Default "/sys/fs/cgroup". */
  cgroupRoot?: string;
  /** The container's cgroup directories, when the caller cached them (saves reading /proc/<pid>/cgroup). */
  dirs?: CgroupDirs;
  read?: ReadText;
  now?: () => number;
  monotonicNow?: () => number;
}

/** The cgroup directories of process `pid` (a container's init), from /proc/<pid>/cgroup; empty when unreadable. */
export async function containerCgroupDirs(pid: number, opts: Pick<ContainerReadOptions, "procRoot" | "cgroupRoot" | "read"> = {}): Promise<CgroupDirs> {
  const text = await (opts.read ?? readText)(`${opts.procRoot ?? "/proc"}/${pid}/cgroup`);
  return text === undefined ? {} : cgroupDirs(parseProcCgroup(text), opts.cgroupRoot);
}

/**
 * Reads the counters of the container whose init process is `pid` (in the
 * agent's pid namespace, as `docker inspect` reports State.Pid). All files
 * are read at once (at most 8 reads in flight, 9 when v1's throttle file is
 * empty and the other blkio file is tried). What cannot be read is left out
 * and named in `unreadable`.
 */
export async function readContainerCounters(pid: number, opts: ContainerReadOptions = {}): Promise<ContainerCounters> {
  const read = opts.read ?? readText;
  const proc = opts.procRoot ?? "/proc";
  const at = (opts.now ?? Date.now)();
  const monotonicMs = (opts.monotonicNow ?? performance.now.bind(performance))();
  const unreadable: string[] = [];
  const counters: ContainerCounters = { at, monotonicMs, unreadable };

  let dirs = opts.dirs;
  if (!dirs) {
    const path = `${proc}/${pid}/cgroup`;
    const text = await read(path);
    if (text === undefined) unreadable.push(path);
    dirs = text === undefined ? {} : cgroupDirs(parseProcCgroup(text), opts.cgroupRoot);
  }

  /** Reads and parses one file; records it as unreadable when either fails. */
  const get = async <T>(path: string, parse: (text: string) => T | undefined): Promise<T | undefined> => {
    const text = await read(path);
    const v = text === undefined ? undefined : parse(text);
    if (v === undefined) unreadable.push(path);
    return v;
  };

  const tasks: Promise<void>[] = [];
  const { cpu, memory, pids, io } = dirs;

  if (cpu) {
    tasks.push(
      cpu.version === 2
        ? get(`${cpu.dir}/cpu.stat`, (t) => parseFlatKeyed(t).get("usage_usec")).then((us) => {
            if (us !== undefined) counters.cpuNs = us * 1000;
          })
        : get(`${cpu.dir}/cpuacct.usage`, parseSingleValue).then((ns) => {
            if (ns !== undefined) counters.cpuNs = ns;
          }),
    );
  }

  if (memory) {
    const v2 = memory.version === 2;
    const usage = get(`${memory.dir}/${v2 ? "memory.current" : "memory.usage_in_bytes"}`, parseSingleValue);
    // docker stats: usage minus the inactive file cache (v1's hierarchical total_inactive_file first).
    const inactive = get(`${memory.dir}/memory.stat`, (t) => {
      const m = parseFlatKeyed(t);
      return (v2 ? undefined : m.get("total_inactive_file")) ?? m.get("inactive_file");
    });
    tasks.push(
      Promise.all([usage, inactive]).then(([u, i]) => {
        if (u !== undefined) counters.memoryBytes = i !== undefined && i < u ? u - i : u;
      }),
      get(`${memory.dir}/${v2 ? "memory.max" : "memory.limit_in_bytes"}`, parseLimit).then((l) => {
        if (l) counters.memoryLimitBytes = l.limit;
      }),
    );
  }

  if (pids) {
    tasks.push(
      get(`${pids.dir}/pids.current`, parseSingleValue).then((n) => {
        if (n !== undefined) counters.pids = n;
      }),
      get(`${pids.dir}/pids.max`, parseLimit).then((l) => {
        if (l) counters.pidsLimit = l.limit;
      }),
    );
  }

  if (io) {
    const setIo = (b: IoBytes | undefined) => {
      if (!b) return;
      counters.ioReadBytes = b.readBytes;
      counters.ioWriteBytes = b.writeBytes;
    };
    tasks.push(
      io.version === 2
        ? get(`${io.dir}/io.stat`, parseIoStat).then(setIo)
        : (async () => {
            // The throttle file counts every bio; the other one only what CFQ/BFQ scheduled (empty under mq-deadline/none).
            const throttle = await get(`${io.dir}/blkio.throttle.io_service_bytes`, parseBlkioServiceBytes);
            if (throttle && throttle.devices > 0) return setIo(throttle);
            const text = await read(`${io.dir}/blkio.io_service_bytes`);
            const other = text === undefined ? undefined : parseBlkioServiceBytes(text);
            setIo(other && other.devices > 0 ? other : (throttle ?? other));
            if (!throttle && !other) unreadable.push(`${io.dir}/blkio.io_service_bytes`);
          })(),
    );
  }

  tasks.push(
    get(`${proc}/${pid}/net/dev`, parseNetDev).then((n) => {
      if (!n) return;
      counters.netRxBytes = n.rxBytes;
      counters.netTxBytes = n.txBytes;
    }),
  );

  await Promise.all(tasks);
  unreadable.sort();
  return counters;
}

/** What a container used: gauges at `at` and rates since the previous sample. */
export interface ContainerUsage {
  at: number;
  /** Of one core: 2 busy cores are 200. Absent on the first sample or after a counter reset. */
  cpuPercent?: number;
  memoryBytes?: number;
  memoryLimitBytes?: number | null;
  pids?: number;
  pidsLimit?: number | null;
  netRxBps?: number;
  netTxBps?: number;
  ioReadBps?: number;
  ioWriteBps?: number;
}

/** Per second over `seconds`; undefined when either end is missing or the counter went back (a new cgroup). */
function rate(before: number | undefined, after: number | undefined, seconds: number): number | undefined {
  if (before === undefined || after === undefined || after < before || !(seconds > 0)) return undefined;
  return (after - before) / seconds;
}

/** The usage shown by `cur`, with rates against `prev` (the container's previous sample, if any). */
export function containerUsage(prev: ContainerCounters | undefined, cur: ContainerCounters): ContainerUsage {
  const out: ContainerUsage = { at: cur.at };
  if (cur.memoryBytes !== undefined) out.memoryBytes = cur.memoryBytes;
  if (cur.memoryLimitBytes !== undefined) out.memoryLimitBytes = cur.memoryLimitBytes;
  if (cur.pids !== undefined) out.pids = cur.pids;
  if (cur.pidsLimit !== undefined) out.pidsLimit = cur.pidsLimit;
  if (!prev) return out;
  const seconds = (cur.monotonicMs - prev.monotonicMs) / 1000;
  const set = (key: "cpuPercent" | "netRxBps" | "netTxBps" | "ioReadBps" | "ioWriteBps", v: number | undefined) => {
    if (v !== undefined) out[key] = v;
  };
  const cpuNsPerS = rate(prev.cpuNs, cur.cpuNs, seconds);
  set("cpuPercent", cpuNsPerS === undefined ? undefined : (cpuNsPerS / 1e9) * 100);
  set("netRxBps", rate(prev.netRxBytes, cur.netRxBytes, seconds));
  set("netTxBps", rate(prev.netTxBytes, cur.netTxBytes, seconds));
  set("ioReadBps", rate(prev.ioReadBytes, cur.ioReadBytes, seconds));
  set("ioWriteBps", rate(prev.ioWriteBytes, cur.ioWriteBytes, seconds));
  return out;
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight (the sampler's
 * bound on open files when it reads many containers); results in input order.
 */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
