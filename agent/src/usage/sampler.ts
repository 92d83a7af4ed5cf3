/**
 * The agent's usage sampler: every interval, the host's counters and those of
 * every running berth container, turned into rates against the previous round
 * and sent as one UsageReport.
 *
 * Per container it keeps what the next round needs: the init pid and cgroup
 * directories (found once per run of the container: a Docker inspect and a
 * read of /proc/<pid>/cgroup) and the previous counters. A container that
 * stopped, or was replaced, loses its entry, so the cache holds at most the
 * running containers. Reads are blocking (readTextBlocking: cgroup and /proc
 * files are built in memory by the kernel, and docs/resources.md measured them
 * several times cheaper than the thread pool), at most 16 containers in flight.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { UsageSampleSchema, type UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import type { ContainerUsage as ContainerUsageMessage, UsageReport } from "@berth/proto/berth/v1/agent_pb.js";
import { ContainerUsageSchema, UsageReportSchema } from "@berth/proto/berth/v1/agent_pb.js";
import type { CgroupDirs } from "./cgroup-path.js";
import { containerCgroupDirs, containerUsage, mapBounded, readContainerCounters, readTextBlocking, type ContainerCounters, type ContainerUsage, type ReadText } from "./container-usage.js";
import { hostUsage, readHostCounters, type HostCounters, type HostUsage, type ReadDisk } from "./host-usage.js";

/** A running berth container as the agent believes it to be. */
export interface RunningContainer {
  id: string;
  serverId: string;
  /** Docker's start time of this run (ms): a restart is a new run with a new pid. */
  startedMs: number;
}

export interface SamplerOptions {
  /** The running berth containers now. */
  running(): RunningContainer[];
  /** The host pid of a container's init (undefined: not running). */
  initPid(containerId: string): Promise<number | undefined>;
  /** The data root, whose filesystem is reported for the host. */
  dataRoot: string;
  procRoot?: string;
  cgroupRoot?: string;
  read?: ReadText;
  disk?: ReadDisk;
  now?: () => number;
  monotonicNow?: () => number;
}

interface Tracked {
  startedMs: number;
  pid: number;
  dirs: CgroupDirs;
  prev?: ContainerCounters;
}

/** Containers read at once (bounds the files open). */
const IN_FLIGHT = 16;

export class UsageSampler {
  private readonly tracked = new Map<string, Tracked>();
  private prevHost: HostCounters | undefined;

  constructor(private readonly opts: SamplerOptions) {}

  /** Containers whose pid and cgroup are cached (the running ones sampled last round). */
  get trackedCount(): number {
    return this.tracked.size;
  }

  /** One round: the report to send. Never throws for a container that vanished meanwhile (it is left out). */
  async sample(): Promise<UsageReport> {
    const o = this.opts;
    const read = o.read ?? readTextBlocking;
    const clock = { ...(o.now ? { now: o.now } : {}), ...(o.monotonicNow ? { monotonicNow: o.monotonicNow } : {}) };
    const hostCounters = await readHostCounters({ dataRoot: o.dataRoot, read, ...(o.procRoot ? { procRoot: o.procRoot } : {}), ...(o.disk ? { disk: o.disk } : {}), ...clock });
    const host = hostUsage(this.prevHost, hostCounters);
    this.prevHost = hostCounters;

    const running = o.running();
    const live = new Set(running.map((c) => c.id));
    for (const id of this.tracked.keys()) if (!live.has(id)) this.tracked.delete(id);

    const samples = await mapBounded(running, IN_FLIGHT, async (c): Promise<ContainerUsageMessage | undefined> => {
      let t = this.tracked.get(c.id);
      if (!t || t.startedMs !== c.startedMs) {
        const pid = await o.initPid(c.id).catch(() => undefined);
        if (pid === undefined) {
          this.tracked.delete(c.id);
          return undefined;
        }
        const dirs = await containerCgroupDirs(pid, { read, ...(o.procRoot ? { procRoot: o.procRoot } : {}), ...(o.cgroupRoot ? { cgroupRoot: o.cgroupRoot } : {}) });
        t = { startedMs: c.startedMs, pid, dirs };
        this.tracked.set(c.id, t);
      }
      const counters = await readContainerCounters(t.pid, { dirs: t.dirs, read, ...(o.procRoot ? { procRoot: o.procRoot } : {}), ...(o.cgroupRoot ? { cgroupRoot: o.cgroupRoot } : {}), ...clock });
      // Nothing readable: the container's processes are gone (it stopped between the listing and now).
      if (counters.cpuNs === undefined && counters.memoryBytes === undefined) {
        this.tracked.delete(c.id);
        return undefined;
      }
      const usage = containerUsage(t.prev, counters);
      t.prev = counters;
      return create(ContainerUsageSchema, { serverId: c.serverId, containerId: c.id, sample: containerSample(usage) });
    });
    return create(UsageReportSchema, { host: hostSample(host), containers: samples.filter((s): s is ContainerUsageMessage => s !== undefined) });
  }
}

const whole = (n: number | undefined): bigint | undefined => (n === undefined || !Number.isFinite(n) || n < 0 ? undefined : BigInt(Math.round(n)));
const finite = (n: number | undefined): number | undefined => (n === undefined || !Number.isFinite(n) || n < 0 ? undefined : n);

/** The wire form of a container's usage (absent fields stay absent; a null limit is no limit). */
export function containerSample(u: ContainerUsage): UsageSample {
  const s = create(UsageSampleSchema, { time: timestampFromMs(u.at) });
  s.cpuPercent = finite(u.cpuPercent);
  s.memoryBytes = whole(u.memoryBytes);
  s.memoryLimitBytes = u.memoryLimitBytes === null ? undefined : whole(u.memoryLimitBytes);
  s.pids = u.pids === undefined ? undefined : Math.min(u.pids, 0xffffffff);
  s.pidsLimit = u.pidsLimit === null ? undefined : whole(u.pidsLimit);
  s.netRxBytesPerSecond = finite(u.netRxBps);
  s.netTxBytesPerSecond = finite(u.netTxBps);
  s.ioReadBytesPerSecond = finite(u.ioReadBps);
  s.ioWriteBytesPerSecond = finite(u.ioWriteBps);
  return s;
}

/** The wire form of the host's usage: memory used is total less available, its "limit" the total. */
export function hostSample(u: HostUsage): UsageSample {
  const s = create(UsageSampleSchema, { time: timestampFromMs(u.at) });
  s.cpuPercent = finite(u.cpuPercent);
  if (u.memoryTotalBytes !== undefined && u.memoryAvailableBytes !== undefined) s.memoryBytes = whole(Math.max(0, u.memoryTotalBytes - u.memoryAvailableBytes));
  s.memoryLimitBytes = whole(u.memoryTotalBytes);
  s.load1 = finite(u.load1);
  s.load5 = finite(u.load5);
  s.load15 = finite(u.load15);
  s.cpus = u.cpus;
  s.diskTotalBytes = whole(u.diskTotalBytes);
  s.diskFreeBytes = whole(u.diskFreeBytes);
  return s;
}
