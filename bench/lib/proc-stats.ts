/**
 * CPU and memory of a process, read from /proc/<pid>/stat (utime + stime)
 * and /proc/<pid>/status (VmRSS, VmHWM): what the benchmark reports for the
 * manager and the simulated agents' processes.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export interface ProcReading {
  /** CPU time (user + system) since the process started, ms. */
  cpuMs: number;
  rssBytes: number;
  /** Peak RSS since the process started. */
  hwmBytes: number;
}

export function readProc(pid: number): ProcReading | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may contain spaces and parentheses: fields start after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cpuTicks = Number(fields[11]) + Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
    return { cpuMs: (cpuTicks / ticksPerSecond()) * 1000, rssBytes: kb("VmRSS"), hwmBytes: kb("VmHWM") };
  } catch {
    return undefined;
  }
}

/** What a process used during a window of the benchmark. */
export interface UsageWindow {
  wallS: number;
  cpuS: number;
  /** Average CPU over the window, in % of one core. */
  cpuPercent: number;
  rssPeakMB: number;
  rssEndMB: number;
}

/** Samples a process every `everyMs` so a window can report its peak RSS. */
export class ProcWatch {
  private timer: NodeJS.Timeout | undefined;
  private readonly windows = new Set<{ peak: number }>();

  constructor(
    readonly pid: number,
    private readonly everyMs = 250,
  ) {}

  /** Starts a window; `end()` reports CPU and memory over it. */
  begin(): { end(): UsageWindow } {
    const t0 = performance.now();
    const r0 = readProc(this.pid);
    const w = { peak: r0?.rssBytes ?? 0 };
    this.windows.add(w);
    this.ensureTimer();
    return {
      end: () => {
        this.windows.delete(w);
        const r1 = readProc(this.pid);
        if (r1) w.peak = Math.max(w.peak, r1.rssBytes);
        if (this.windows.size === 0) this.stop();
        const wallS = (performance.now() - t0) / 1000;
        const cpuS = r0 && r1 ? (r1.cpuMs - r0.cpuMs) / 1000 : Number.NaN;
        return {
          wallS,
          cpuS,
          cpuPercent: wallS > 0 ? (cpuS / wallS) * 100 : Number.NaN,
          rssPeakMB: w.peak / 2 ** 20,
          rssEndMB: (r1?.rssBytes ?? Number.NaN) / 2 ** 20,
        };
      },
    };
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const r = readProc(this.pid);
      if (!r) return;
      for (const w of this.windows) w.peak = Math.max(w.peak, r.rssBytes);
    }, this.everyMs);
    this.timer.unref();
  }
}

/** CPU time used by the whole machine (all processes), ms, from /proc/stat. */
export function machineBusyMs(): number {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const busy = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]! + cpu[7]!;
  return (busy / ticksPerSecond()) * 1000;
}

/** The 1-minute load average. */
export function loadAverage(): number {
  return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
}

/** TCP listen-queue overflows and SYNs dropped by it, machine-wide (/proc/net/netstat TcpExt). */
export function listenDrops(): { overflows: number; drops: number } {
  try {
    const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
    const i = lines.findIndex((l) => l.startsWith("TcpExt:"));
    const names = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/).map(Number);
    const get = (k: string) => values[names.indexOf(k)] ?? 0;
    return { overflows: get("ListenOverflows"), drops: get("ListenDrops") };
  } catch {
    return { overflows: Number.NaN, drops: Number.NaN };
  }
}
