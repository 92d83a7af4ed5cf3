import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ServerSchema } from "@berth/proto/berth/v1/server_pb.js";
import { diskQuotaUse, limitRows } from "./limits-model.js";

const MiB = 1024n * 1024n;
const text = (rows: ReturnType<typeof limitRows>) => Object.fromEntries(rows.map((r) => [r.label, r.unset ? `(${r.value})` : r.value]));

describe("limits in words", () => {
  it("every limit set", () => {
    const s = create(ServerSchema, {
      spec: { resources: { memoryBytes: 512n * MiB, memorySwapBytes: 1024n * MiB, cpus: 1.5, cpuShares: 512, cpusetCpus: "0-1", pidsLimit: 64n, blkioWeight: 300, diskQuotaBytes: 2n * MiB, stopOverDiskQuota: true } },
    });
    expect(text(limitRows(s))).toEqual({
      Memory: "512 MiB",
      "Memory + swap": "1.0 GiB",
      CPUs: "1.5 cores",
      "CPU shares": "512",
      "CPU set": "0-1",
      Processes: "64",
      "Block IO weight": "300",
      "Disk quota": "2.0 MiB (soft)",
      "Over the quota": "stop the server",
    });
  });

  it("none where unset; what applies instead where something does", () => {
    expect(text(limitRows(create(ServerSchema, { spec: {} })))).toEqual({
      Memory: "(none)",
      "Memory + swap": "(none)",
      CPUs: "(none)",
      "CPU shares": "(none (Docker's default, 1024))",
      "CPU set": "(none (all CPUs))",
      Processes: "(the manager's default)",
      "Block IO weight": "(none (Docker's default))",
      "Disk quota": "(none)",
      "Over the quota": "(—)",
    });
    const some = text(limitRows(create(ServerSchema, { spec: { resources: { memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB, cpus: 1, pidsLimit: -1n, diskQuotaBytes: 8n * MiB } } })));
    expect(some).toMatchObject({ "Memory + swap": "(no swap)", CPUs: "1 core", Processes: "(none)", "Over the quota": "alert, refuse uploads" });
  });
});

describe("disk quota use", () => {
  const server = (size: bigint, quota: bigint, stop = false, exists = true) =>
    create(ServerSchema, { spec: { resources: { diskQuotaBytes: quota, stopOverDiskQuota: stop } }, status: { dataExists: exists, dataSizeBytes: size } });

  it("warns from 90 % of the quota, and says over it", () => {
    expect(diskQuotaUse(server(1n * MiB, 2n * MiB))).toEqual({ fraction: 0.5, warn: false, title: "data directory 1.0 MiB of its 2.0 MiB disk quota (50%)" });
    const near = diskQuotaUse(server((19n * MiB) / 10n, 2n * MiB))!;
    expect(near.warn).toBe(true);
    expect(near.title).toMatch(/^near its disk quota: data directory 1\.9 MiB of its 2\.0 MiB disk quota \(95%\)$/);
    expect(diskQuotaUse(server(3n * MiB, 2n * MiB, true))).toMatchObject({ warn: true, title: "over its disk quota: data directory 3.0 MiB of its 2.0 MiB disk quota (150%); the server is stopped until it is under" });
  });

  it("nothing without a quota or a data directory", () => {
    expect(diskQuotaUse(server(3n * MiB, 0n))).toBeUndefined();
    expect(diskQuotaUse(server(0n, 2n * MiB, false, false))).toBeUndefined();
  });
});
