/**
 * Resource limits between the manager's terms (ResourceLimits: 0 for none,
 * pids_limit -1 for none) and Docker's HostConfig fields.
 *
 * Docker's update cannot take a limit away: 0 in an update means
 * "unchanged" for memory, CPUs, CPU shares, CPU set and IO weight. So a
 * container that holds a limit the manager wants gone can only lose it by
 * being made again (`needsNewContainer`).
 */
import { create } from "@bufbuild/protobuf";
import { ResourceLimitsSchema, type ResourceLimits } from "@berth/proto/berth/v1/server_pb.js";

/** The HostConfig fields berth sets for limits. */
export interface HostLimits {
  Memory?: number;
  MemorySwap?: number;
  NanoCpus?: number;
  CpuShares?: number;
  CpusetCpus?: string;
  PidsLimit?: number;
  BlkioWeight?: number;
}

const num = (n: bigint) => Number(n);

/** The HostConfig fields of `limits`, for a new container: only what is set (a fresh container has no limits). */
export function hostConfigLimits(limits: ResourceLimits): HostLimits {
  const out: HostLimits = {};
  if (limits.memoryBytes > 0n) {
    out.Memory = num(limits.memoryBytes);
    out.MemorySwap = num(limits.memorySwapBytes > limits.memoryBytes ? limits.memorySwapBytes : limits.memoryBytes);
  }
  if (limits.cpus > 0) out.NanoCpus = Math.round(limits.cpus * 1e9);
  if (limits.cpuShares > 0) out.CpuShares = limits.cpuShares;
  if (limits.cpusetCpus) out.CpusetCpus = limits.cpusetCpus;
  if (limits.pidsLimit > 0n) out.PidsLimit = num(limits.pidsLimit);
  if (limits.blkioWeight > 0) out.BlkioWeight = limits.blkioWeight;
  return out;
}

/** The limits a container's HostConfig holds, in the manager's terms. */
export function limitsOf(hc: (Omit<HostLimits, "PidsLimit"> & { PidsLimit?: number | null }) | undefined): ResourceLimits {
  const memory = hc?.Memory ?? 0;
  const swap = hc?.MemorySwap ?? 0;
  const pids = hc?.PidsLimit ?? 0;
  return create(ResourceLimitsSchema, {
    memoryBytes: BigInt(Math.max(0, memory)),
    // -1: unlimited swap, or a kernel without swap accounting (Docker then ignores the limit).
    memorySwapBytes: memory > 0 && swap > 0 ? BigInt(swap) : 0n,
    cpus: (hc?.NanoCpus ?? 0) / 1e9,
    cpuShares: hc?.CpuShares ?? 0,
    cpusetCpus: hc?.CpusetCpus ?? "",
    pidsLimit: pids > 0 ? BigInt(pids) : -1n,
    blkioWeight: hc?.BlkioWeight ?? 0,
  });
}

/** Limits `have` holds that `want` has none of: only a new container drops them. */
export function limitsToRemove(want: ResourceLimits, have: ResourceLimits): string[] {
  const out: string[] = [];
  if (want.memoryBytes === 0n && have.memoryBytes > 0n) out.push("memory_bytes");
  if (want.cpus === 0 && have.cpus > 0) out.push("cpus");
  if (want.cpuShares === 0 && have.cpuShares > 0) out.push("cpu_shares");
  if (!want.cpusetCpus && have.cpusetCpus) out.push("cpuset_cpus");
  if (want.blkioWeight === 0 && have.blkioWeight > 0) out.push("blkio_weight");
  return out;
}

/**
 * The `docker update` body that takes a container from `have` to `want`
 * (limits to remove left out: see limitsToRemove), or undefined when
 * nothing is to change. Memory and swap go together: Docker refuses a
 * memory limit above the current swap limit.
 */
export function limitsUpdate(want: ResourceLimits, have: ResourceLimits): HostLimits | undefined {
  const out: HostLimits = {};
  if (want.memoryBytes > 0n) {
    const swap = want.memorySwapBytes > want.memoryBytes ? want.memorySwapBytes : want.memoryBytes;
    // A kernel without swap accounting shows none: compare memory alone then.
    if (want.memoryBytes !== have.memoryBytes || (have.memorySwapBytes > 0n && swap !== have.memorySwapBytes)) {
      out.Memory = num(want.memoryBytes);
      out.MemorySwap = num(swap);
    }
  }
  const nano = Math.round(want.cpus * 1e9);
  if (nano > 0 && nano !== Math.round(have.cpus * 1e9)) out.NanoCpus = nano;
  if (want.cpuShares > 0 && want.cpuShares !== have.cpuShares) out.CpuShares = want.cpuShares;
  if (want.cpusetCpus && want.cpusetCpus !== have.cpusetCpus) out.CpusetCpus = want.cpusetCpus;
  if (want.pidsLimit !== have.pidsLimit) out.PidsLimit = want.pidsLimit > 0n ? num(want.pidsLimit) : -1;
  if (want.blkioWeight > 0 && want.blkioWeight !== have.blkioWeight) out.BlkioWeight = want.blkioWeight;
  return Object.keys(out).length > 0 ? out : undefined;
}
