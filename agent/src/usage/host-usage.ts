/**
 * The host's usage: CPU from /proc/stat, memory from /proc/meminfo, load from
 * /proc/loadavg and the data root's filesystem from statfs. As for
 * containers, `readHostCounters` takes one instant and `hostUsage` turns two
 * into a CPU percentage.
 */
import { statfs } from "node:fs/promises";
import { readText, type ReadText } from "./container-usage.js";
import { parseLoadavg, parseMeminfo, parseProcStat, type CpuTimes, type HostMemory } from "./usage-files.js";

/** A filesystem's size and what is left of it, bytes. */
export interface DiskSpace {
  totalBytes: number;
  /** What an unprivileged writer may still use (df's "Avail": blocks free minus the root reserve). */
  freeBytes: number;
}

/** Reads a filesystem's space; undefined when it cannot. A test seam. */
export type ReadDisk = (path: string) => Promise<DiskSpace | undefined>;

export const readDisk: ReadDisk = async (path) => {
  try {
    const s = await statfs(path);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  } catch {
    return undefined;
  }
};

export interface HostCounters {
  at: number;
  monotonicMs: number;
  cpu?: CpuTimes;
  memory?: HostMemory;
  load?: [number, number, number];
  /** Of the filesystem holding the data root. */
  disk?: DiskSpace;
  /** What was missing or unparsable (never a throw). */
  unreadable: string[];
}

export interface HostReadOptions {
  /** Default "/proc". */
  procRoot?: string;
  /** The directory whose filesystem is reported (the agent's data root); none: no disk figures. */
  dataRoot?: string;
  read?: ReadText;
  disk?: ReadDisk;
  now?: () => number;
  monotonicNow?: () => number;
}

/** Reads the host's counters: three /proc files and one statfs, in parallel. */
export async function readHostCounters(opts: HostReadOptions = {}): Promise<HostCounters> {
  const read = opts.read ?? readText;
  const proc = opts.procRoot ?? "/proc";
  const out: HostCounters = { at: (opts.now ?? Date.now)(), monotonicMs: (opts.monotonicNow ?? performance.now.bind(performance))(), unreadable: [] };
  const get = async <T>(path: string, parse: (text: string) => T | undefined): Promise<T | undefined> => {
    const text = await read(path);
    const v = text === undefined ? undefined : parse(text);
    if (v === undefined) out.unreadable.push(path);
    return v;
  };
  const [cpu, memory, load, disk] = await Promise.all([
    get(`${proc}/stat`, parseProcStat),
    get(`${proc}/meminfo`, parseMeminfo),
    get(`${proc}/loadavg`, parseLoadavg),
    opts.dataRoot === undefined ? undefined : (opts.disk ?? readDisk)(opts.dataRoot),
  ]);
  if (cpu) out.cpu = cpu;
  if (memory) out.memory = memory;
  if (load) out.load = load;
  if (disk) out.disk = disk;
  else if (opts.dataRoot !== undefined) out.unreadable.push(opts.dataRoot);
  out.unreadable.sort();
  return out;
}

export interface HostUsage {
  at: number;
  /** Busy share of all CPUs together, 0–100 (top's summary line); absent on the first sample. */
  cpuPercent?: number;
  cpus?: number;
  memoryTotalBytes?: number;
  memoryAvailableBytes?: number;
  load1?: number;
  load5?: number;
  load15?: number;
  diskTotalBytes?: number;
  diskFreeBytes?: number;
}

/** The host's usage at `cur`, its CPU against `prev`. */
export function hostUsage(prev: HostCounters | undefined, cur: HostCounters): HostUsage {
  const out: HostUsage = { at: cur.at };
  if (cur.cpu) {
    out.cpus = cur.cpu.cpus;
    const p = prev?.cpu;
    const dTotal = p ? cur.cpu.total - p.total : 0;
    const dBusy = p ? cur.cpu.busy - p.busy : -1;
    // A total that did not move (two reads within one tick) or went back (CPU hot-unplug) gives no figure.
    if (dTotal > 0 && dBusy >= 0) out.cpuPercent = Math.min(100, (dBusy / dTotal) * 100);
  }
  if (cur.memory) {
    out.memoryTotalBytes = cur.memory.totalBytes;
    out.memoryAvailableBytes = cur.memory.availableBytes;
  }
  if (cur.load) [out.load1, out.load5, out.load15] = cur.load;
  if (cur.disk) {
    out.diskTotalBytes = cur.disk.totalBytes;
    out.diskFreeBytes = cur.disk.freeBytes;
  }
  return out;
}
