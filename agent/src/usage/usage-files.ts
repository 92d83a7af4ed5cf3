/**
 * Parsers for the kernel files the usage sampler reads: each takes the file's
 * text and returns numbers, or undefined for what the text does not hold.
 * Never a throw, never NaN: a garbled file costs its own figure only.
 *
 * Formats (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/*.rst,
 * filesystems/proc.rst):
 * - flat keyed (`key value` per line): v2 cpu.stat, memory.stat; v1 memory.stat
 * - single value: memory.current, cpuacct.usage, pids.current, …
 * - single value or "max": v2 memory.max, pids.max
 * - nested keyed (`MAJ:MIN key=value …` per line): v2 io.stat
 * - v1 blkio: `MAJ:MIN Op value` per line, then `Total value`
 * - /proc/<pid>/net/dev, /proc/stat, /proc/meminfo, /proc/loadavg
 */

/** A non-negative integer (or decimal, for loadavg) the file states; undefined otherwise. */
function num(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d+(\.\d+)?$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** The one value of a single-value file (memory.current, cpuacct.usage, pids.current). */
export function parseSingleValue(text: string): number | undefined {
  return num(text.trim());
}

/**
 * A limit: a number, or none. "max" (v2) is none; so is v1's "unlimited",
 * which the kernel writes as the largest page-aligned signed 64-bit value
 * (9223372036854771712 with 4 KiB pages): anything at or above 2^62 is taken
 * as none, far beyond any real memory size. Undefined when unreadable.
 */
export function parseLimit(text: string): { limit: number | null } | undefined {
  const t = text.trim();
  if (t === "max") return { limit: null };
  const n = num(t);
  if (n === undefined) return undefined;
  return { limit: n >= 2 ** 62 ? null : n };
}

/** A flat keyed file (`key value` per line) as a map; lines of another shape are skipped. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) continue;
    const v = num(parts[1]);
    if (v !== undefined) out.set(parts[0]!, v);
  }
  return out;
}

/** Bytes read and written, summed over devices; undefined when no device line is readable. */
export interface IoBytes {
  readBytes: number;
  writeBytes: number;
}

/** v2 io.stat: `8:0 rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per device. */
export function parseIoStat(text: string): IoBytes | undefined {
  let readBytes = 0;
  let writeBytes = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (!/^\d+:\d+$/.test(parts[0] ?? "")) continue;
    let r: number | undefined;
    let w: number | undefined;
    for (const kv of parts.slice(1)) {
      const eq = kv.indexOf("=");
      if (eq < 0) continue;
      const key = kv.slice(0, eq);
      if (key === "rbytes") r = num(kv.slice(eq + 1));
      else if (key === "wbytes") w = num(kv.slice(eq + 1));
    }
    if (r === undefined && w === undefined) continue;
    readBytes += r ?? 0;
    writeBytes += w ?? 0;
    seen = true;
  }
  return seen ? { readBytes, writeBytes } : undefined;
}

/**
 * v1 blkio.throttle.io_service_bytes (or blkio.io_service_bytes):
 * `8:0 Read 123` / `8:0 Write 456` / … per device, then `Total 579`.
 * An empty file, or one with only "Total 0", is no IO yet (`devices: 0`: the
 * caller may then try the other file); undefined when a line has another shape.
 */
export function parseBlkioServiceBytes(text: string): (IoBytes & { devices: number }) | undefined {
  let readBytes = 0;
  let writeBytes = 0;
  const devices = new Set<string>();
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts[0] === "") continue;
    if (parts.length === 2 && parts[0] === "Total" && num(parts[1]) !== undefined) continue;
    const v = num(parts[2]);
    if (parts.length !== 3 || !/^\d+:\d+$/.test(parts[0]!) || v === undefined) return undefined;
    devices.add(parts[0]!);
    if (parts[1] === "Read") readBytes += v;
    else if (parts[1] === "Write") writeBytes += v;
  }
  return { readBytes, writeBytes, devices: devices.size };
}

/** Network bytes received and sent. */
export interface NetBytes {
  rxBytes: number;
  txBytes: number;
}

/**
 * /proc/<pid>/net/dev (the process's network namespace): two header lines,
 * then `iface: rx_bytes rx_packets … (8 receive fields) tx_bytes …` per
 * interface. Summed over every interface but the loopback; undefined when no
 * interface line is readable.
 */
export function parseNetDev(text: string): NetBytes | undefined {
  let rxBytes = 0;
  let txBytes = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const iface = line.slice(0, colon).trim();
    // Old kernels glue a wide counter to the colon ("eth0:1234567"): split at the colon, not at spaces.
    const fields = line.slice(colon + 1).trim().split(/\s+/);
    if (iface === "" || iface.includes(" ") || fields.length < 16) continue;
    const rx = num(fields[0]);
    const tx = num(fields[8]);
    if (rx === undefined || tx === undefined) continue;
    seen = true;
    if (iface === "lo") continue;
    rxBytes += rx;
    txBytes += tx;
  }
  return seen ? { rxBytes, txBytes } : undefined;
}

/** The machine's CPU time, in USER_HZ ticks, from the aggregate `cpu` line of /proc/stat. */
export interface CpuTimes {
  /** Every state but idle and iowait. */
  busy: number;
  /** All states (user nice system idle iowait irq softirq steal; guest time is already in user). */
  total: number;
  /** How many `cpuN` lines follow: the online CPUs. */
  cpus: number;
}

export function parseProcStat(text: string): CpuTimes | undefined {
  let times: number[] | undefined;
  let cpus = 0;
  for (const line of text.split("\n")) {
    if (/^cpu\d+\s/.test(line)) cpus++;
    else if (/^cpu\s/.test(line)) {
      const f = line.trim().split(/\s+/).slice(1, 9).map(num);
      // Kernels before 2.6.11 have fewer columns: the first four (user nice system idle) must be there.
      if (f.length < 4 || f.some((v) => v === undefined)) return undefined;
      times = f as number[];
    }
  }
  if (!times) return undefined;
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = times;
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  return { busy: total - idle - iowait, total, cpus };
}

/** Memory of the machine, bytes. */
export interface HostMemory {
  totalBytes: number;
  /** MemAvailable (kernel ≥ 3.14); on older kernels MemFree + Buffers + Cached, as free(1) did. */
  availableBytes: number;
}

export function parseMeminfo(text: string): HostMemory | undefined {
  const kb = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+):\s+(\d+)(?: kB)?\s*$/.exec(line);
    if (m) kb.set(m[1]!, Number(m[2]) * 1024);
  }
  const total = kb.get("MemTotal");
  if (total === undefined) return undefined;
  const available = kb.get("MemAvailable") ?? (kb.has("MemFree") ? kb.get("MemFree")! + (kb.get("Buffers") ?? 0) + (kb.get("Cached") ?? 0) : undefined);
  if (available === undefined) return undefined;
  return { totalBytes: total, availableBytes: available };
}

/** /proc/loadavg: `0.50 0.40 0.30 2/345 6789`. */
export function parseLoadavg(text: string): [number, number, number] | undefined {
  const f = text.trim().split(/\s+/).slice(0, 3).map(num);
  if (f.length < 3 || f.some((v) => v === undefined)) return undefined;
  return f as [number, number, number];
}
