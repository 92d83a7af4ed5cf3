/**
 * A server's resource limits: what its container gets (the spec's, with the
 * manager's defaults filled in) and how that compares with what Docker holds
 * for its container (ContainerInfo.resources, from the agent's inspect).
 *
 * Limits are not part of the spec hash: a changed limit is applied to the
 * container live (docker update) rather than by a new container. Docker's
 * update cannot take a limit away (0 there means "unchanged"), so removing a
 * memory, CPU, CPU-set, CPU-weight or IO-weight limit needs a new container:
 * the agent makes one the next time the container is started while stopped
 * (a restart, a start), or at a rebuild.
 */
import { create } from "@bufbuild/protobuf";
import { ResourceLimitsSchema, type ResourceLimits, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";

/** The manager's default pids limit (--default-pids-limit). */
export const DEFAULT_PIDS_LIMIT = 512;

/** What the container gets: the spec's limits with pids_limit's default and swap made explicit (equal to memory: no swap). */
export function effectiveLimits(spec: ServerSpec, defaultPidsLimit = DEFAULT_PIDS_LIMIT): ResourceLimits {
  const r = spec.resources;
  const memory = r?.memoryBytes ?? 0n;
  const swap = r?.memorySwapBytes ?? 0n;
  return create(ResourceLimitsSchema, {
    memoryBytes: memory,
    memorySwapBytes: memory > 0n ? (swap > memory ? swap : memory) : 0n,
    cpus: r?.cpus ?? 0,
    cpuShares: r?.cpuShares ?? 0,
    cpusetCpus: r?.cpusetCpus ?? "",
    pidsLimit: r?.pidsLimit ? r.pidsLimit : defaultPidsLimit > 0 ? BigInt(defaultPidsLimit) : -1n,
    blkioWeight: r?.blkioWeight ?? 0,
  });
}

/** A key of effective limits: equal keys, equal limits. */
export function limitsKey(l: ResourceLimits): string {
  return [l.memoryBytes, l.memorySwapBytes, nanoCpus(l.cpus), l.cpuShares, l.cpusetCpus, l.pidsLimit, l.blkioWeight].join("|");
}

const nanoCpus = (cpus: number) => Math.round(cpus * 1e9);

export interface LimitsDiff {
  /** Limits Docker holds otherwise than wanted that docker update can set (names as in ResourceLimits). */
  live: string[];
  /** Limits wanted gone that the container has: only a new container drops them. */
  removal: string[];
}

/**
 * How the limits Docker holds (`have`) differ from the wanted ones. Swap is
 * compared only when Docker holds a swap limit: a kernel without swap
 * accounting makes Docker ignore it (inspect then shows none).
 */
export function limitsDiff(want: ResourceLimits, have: ResourceLimits): LimitsDiff {
  const out: LimitsDiff = { live: [], removal: [] };
  const check = (name: string, w: bigint | number | string, h: bigint | number | string, none: bigint | number | string) => {
    if (w === h) return;
    if (w === none) out.removal.push(name);
    else out.live.push(name);
  };
  check("memory_bytes", want.memoryBytes, have.memoryBytes, 0n);
  if (want.memoryBytes > 0n && have.memorySwapBytes > 0n && have.memoryBytes > 0n) check("memory_swap_bytes", want.memorySwapBytes, have.memorySwapBytes, 0n);
  check("cpus", nanoCpus(want.cpus), nanoCpus(have.cpus), 0);
  check("cpu_shares", want.cpuShares, have.cpuShares, 0);
  check("cpuset_cpus", want.cpusetCpus, have.cpusetCpus, "");
  // No pids limit is -1, which docker update can set: never a removal.
  if (want.pidsLimit !== have.pidsLimit) out.live.push("pids_limit");
  check("blkio_weight", want.blkioWeight, have.blkioWeight, 0);
  return out;
}

/** "2 GiB", "512 MiB", "1.5 GiB", "12 bytes": a byte count as every message of the manager says it. */
export function formatBytes(n: bigint | number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/** What the ledger and the phase say of a container the kernel killed for memory. */
export function oomMessage(exitCode: number, memoryLimit: bigint): string {
  return memoryLimit > 0n
    ? `killed for exceeding its ${formatBytes(memoryLimit)} memory limit (exit code ${exitCode})`
    : `killed by the kernel for want of memory: the host ran out (exit code ${exitCode}; the server has no memory limit)`;
}
