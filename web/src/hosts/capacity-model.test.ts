import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { HostSchema } from "@berth/proto/berth/v1/host_pb.js";
import { capacityForm, capacityRequest, capacityText, cpuAllocation, memoryAllocation } from "./capacity-model.js";

const GiB = 1024n ** 3n;

describe("host capacity", () => {
  it("allocated against allocatable: figures, bar and warning from 90 %", () => {
    const h = create(HostSchema, { cpuCount: 8, memoryBytes: 16n * GiB, allocatedCpus: 3, allocatableCpus: 8, allocatedMemoryBytes: 15n * GiB, allocatableMemoryBytes: 16n * GiB });
    const cpu = cpuAllocation(h)!;
    expect(cpu).toMatchObject({ text: "3 / 8 allocated", short: "3 / 8", fraction: 3 / 8, warn: false });
    expect(cpu.title).toBe("CPU: its servers' limits take 3 of the 8 allocatable CPUs (38%); servers without a limit count nothing");
    const mem = memoryAllocation(h)!;
    expect(mem).toMatchObject({ text: "15 GiB / 16 GiB allocated", warn: true });
    expect(mem.fraction).toBeCloseTo(15 / 16);
    // Over what it offers (capacity lowered, or a reserve above the host): a full bar, warned.
    expect(cpuAllocation({ cpuCount: 2, allocatedCpus: 1.256, allocatableCpus: 0 })).toMatchObject({ text: "1.26 / 0 allocated", fraction: 1, warn: true });
    // Never reported its size: nothing to show.
    expect(cpuAllocation(create(HostSchema, {}))).toBeUndefined();
    expect(memoryAllocation(create(HostSchema, {}))).toBeUndefined();
  });

  it("the settings in words, empty for the defaults", () => {
    expect(capacityText(create(HostSchema, { capacity: { cpuOvercommit: 1, memoryOvercommit: 1 } }))).toBe("");
    expect(capacityText(create(HostSchema, {}))).toBe("");
    expect(capacityText(create(HostSchema, { capacity: { cpuOvercommit: 2, memoryOvercommit: 1.5, reservedCpus: 0.5, reservedMemoryBytes: 512n * 1024n * 1024n } }))).toBe(
      "2x CPUs, 1.5x memory, 0.5 CPU and 512 MiB kept back",
    );
  });

  it("the form round-trips the settings; numbers out of range are sent (the manager says why), what is not a number is not", () => {
    const h = create(HostSchema, { id: "host_a", capacity: { cpuOvercommit: 2, memoryOvercommit: 1, reservedCpus: 0.5, reservedMemoryBytes: 256n * 1024n * 1024n } });
    const f = capacityForm(h);
    expect(f).toEqual({ cpuOvercommit: "2", memoryOvercommit: "1", reservedCpus: "0.5", reservedMemory: "256M" });
    expect(capacityRequest("host_a", f)).toEqual({ request: { id: "host_a", cpuOvercommit: 2, memoryOvercommit: 1, reservedCpus: 0.5, reservedMemoryBytes: 256n * 1024n * 1024n } });
    expect(capacityForm(create(HostSchema, {}))).toEqual({ cpuOvercommit: "1", memoryOvercommit: "1", reservedCpus: "0", reservedMemory: "0" });
    expect(capacityRequest("host_a", { ...f, cpuOvercommit: "500", reservedCpus: "-1" })).toMatchObject({ request: { cpuOvercommit: 500, reservedCpus: -1 } });
    expect(capacityRequest("host_a", { ...f, reservedCpus: "", reservedMemory: " " })).toMatchObject({ request: { reservedCpus: 0, reservedMemoryBytes: 0n } });
    expect(capacityRequest("host_a", { ...f, memoryOvercommit: "lots" })).toEqual({ problem: 'Memory overcommit: "lots" is not a number (e.g. 1.5)' });
    expect(capacityRequest("host_a", { ...f, reservedMemory: "1 pint" })).toEqual({ problem: 'Memory kept back: "1 pint" is not a size: write bytes or a number with K, M or G (e.g. 512M)' });
  });
});
