import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ResourceLimitsSchema, type ResourceLimits } from "@berth/proto/berth/v1/server_pb.js";
import { containerConfig } from "./docker-runtime.js";
import { hostConfigLimits, limitsOf, limitsToRemove, limitsUpdate } from "./limits.js";

const MiB = 1024n * 1024n;
const limits = (o: MessageInitShape<typeof ResourceLimitsSchema>): ResourceLimits => create(ResourceLimitsSchema, { pidsLimit: -1n, ...o });

describe("limits in Docker's terms", () => {
  it("a new container gets only the limits that are set; swap equal to memory when not given", () => {
    expect(hostConfigLimits(limits({}))).toEqual({});
    expect(hostConfigLimits(limits({ memoryBytes: 64n * MiB, cpus: 1.5, cpuShares: 512, cpusetCpus: "0", pidsLimit: 100n, blkioWeight: 300 }))).toEqual({
      Memory: 64 * 1024 * 1024,
      MemorySwap: 64 * 1024 * 1024,
      NanoCpus: 1_500_000_000,
      CpuShares: 512,
      CpusetCpus: "0",
      PidsLimit: 100,
      BlkioWeight: 300,
    });
    const cfg = containerConfig({ name: "x", image: "i", command: [], env: {}, labels: {}, ports: [], dataDir: "/d", mountPath: "/data", resources: limits({ memoryBytes: 64n * MiB, pidsLimit: 512n }) });
    expect(cfg.HostConfig).toMatchObject({ Memory: 64 * 1024 * 1024, PidsLimit: 512, Init: true, Privileged: false });
  });

  it("reads HostConfig back in the manager's terms: none as 0, pids none as -1, swap -1 as none", () => {
    expect(limitsOf({ Memory: 0, MemorySwap: 0, NanoCpus: 0, CpuShares: 0, CpusetCpus: "", PidsLimit: null, BlkioWeight: 0 })).toEqual(limits({}));
    expect(limitsOf({ Memory: 67108864, MemorySwap: -1, NanoCpus: 500_000_000, PidsLimit: 0 })).toEqual(limits({ memoryBytes: 64n * MiB, cpus: 0.5 }));
    expect(limitsOf({ Memory: 67108864, MemorySwap: 134217728, PidsLimit: 512 })).toEqual(limits({ memoryBytes: 64n * MiB, memorySwapBytes: 128n * MiB, pidsLimit: 512n }));
  });

  it("an update sets what changed (memory with swap) and never what is to be removed", () => {
    expect(limitsUpdate(limits({ cpus: 1 }), limits({ cpus: 1 }))).toBeUndefined();
    expect(limitsUpdate(limits({ cpus: 2, pidsLimit: 512n }), limits({ cpus: 1 }))).toEqual({ NanoCpus: 2_000_000_000, PidsLimit: 512 });
    expect(limitsUpdate(limits({ memoryBytes: 128n * MiB }), limits({ memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB }))).toEqual({ Memory: 128 * 1024 * 1024, MemorySwap: 128 * 1024 * 1024 });
    // Swap not accounted by the kernel (none shown): memory alone decides.
    expect(limitsUpdate(limits({ memoryBytes: 64n * MiB, memorySwapBytes: 128n * MiB }), limits({ memoryBytes: 64n * MiB }))).toBeUndefined();
    expect(limitsUpdate(limits({}), limits({ cpus: 1, pidsLimit: 512n }))).toEqual({ PidsLimit: -1 });
    expect(limitsToRemove(limits({}), limits({ cpus: 1, memoryBytes: 64n * MiB, cpusetCpus: "0" }))).toEqual(["memory_bytes", "cpus", "cpuset_cpus"]);
    expect(limitsToRemove(limits({ cpus: 1 }), limits({ cpus: 2 }))).toEqual([]);
  });
});
