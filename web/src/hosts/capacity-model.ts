/**
 * What the Hosts page makes of a host's capacity: what its servers' limits
 * take against what it offers (allocated / allocatable CPU and memory), and
 * the Capacity editor's form (SetHostCapacity). Pure; the manager decides
 * which values are allowed (docs/resources.md#placement).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Host, SetHostCapacityRequestSchema } from "@berth/proto/berth/v1/host_pb.js";
import { formatBytes } from "../ui/format.js";
import { formatSize, parseSize } from "../servers/spec-form-model.js";
import { formatPercent, type Gauge } from "../servers/usage-model.js";

/** Allocated at or above this share of what is allocatable is shown in the warning tone. */
export const ALLOCATED_WARN_FRACTION = 0.9;

/** "1.5", "8", "0.33": CPUs to two decimals at most. */
export function formatCpus(n: number): string {
  return String(Math.round(n * 100) / 100);
}

/** Servers' CPU limits against the CPUs the host offers; undefined while the host never reported its size. */
export function cpuAllocation(h: Pick<Host, "allocatedCpus" | "allocatableCpus" | "cpuCount">): Gauge | undefined {
  if (!h.cpuCount) return undefined;
  return allocation(h.allocatedCpus, h.allocatableCpus, formatCpus, "CPU", "CPUs");
}

/** Servers' memory limits against the memory the host offers; undefined while the host never reported its size. */
export function memoryAllocation(h: Pick<Host, "allocatedMemoryBytes" | "allocatableMemoryBytes" | "memoryBytes">): Gauge | undefined {
  if (!h.memoryBytes) return undefined;
  return allocation(Number(h.allocatedMemoryBytes), Number(h.allocatableMemoryBytes), formatBytes, "Memory", "memory");
}

function allocation(allocated: number, allocatable: number, fmt: (n: number) => string, what: string, of: string): Gauge {
  const fraction = allocatable > 0 ? allocated / allocatable : allocated > 0 ? Infinity : 0;
  const text = `${fmt(allocated)} / ${fmt(allocatable)} allocated`;
  const share = Number.isFinite(fraction) ? ` (${formatPercent(fraction * 100)})` : "";
  return {
    text,
    short: `${fmt(allocated)} / ${fmt(allocatable)}`,
    fraction: Math.min(1, fraction),
    warn: fraction >= ALLOCATED_WARN_FRACTION,
    title: `${what}: its servers' limits take ${fmt(allocated)} of the ${fmt(allocatable)} allocatable ${of}${share}; servers without a limit count nothing`,
  };
}

/** The capacity settings in words when they are not the defaults ("2x CPUs, 1 CPU and 512 MiB kept back"); empty for the defaults. */
export function capacityText(h: Pick<Host, "capacity">): string {
  const c = h.capacity;
  if (!c) return "";
  const parts: string[] = [];
  if (c.cpuOvercommit && c.cpuOvercommit !== 1) parts.push(`${c.cpuOvercommit}x CPUs`);
  if (c.memoryOvercommit && c.memoryOvercommit !== 1) parts.push(`${c.memoryOvercommit}x memory`);
  const kept = [c.reservedCpus ? `${formatCpus(c.reservedCpus)} CPU` : "", c.reservedMemoryBytes ? formatBytes(c.reservedMemoryBytes) : ""].filter(Boolean);
  if (kept.length) parts.push(`${kept.join(" and ")} kept back`);
  return parts.join(", ");
}

/** The Capacity editor's fields, as typed. */
export interface CapacityForm {
  cpuOvercommit: string;
  memoryOvercommit: string;
  reservedCpus: string;
  /** A size: "512M", "1G", bytes. */
  reservedMemory: string;
}

export function capacityForm(h: Pick<Host, "capacity">): CapacityForm {
  const c = h.capacity;
  const bytes = Number(c?.reservedMemoryBytes ?? 0n);
  return {
    cpuOvercommit: String(c?.cpuOvercommit || 1),
    memoryOvercommit: String(c?.memoryOvercommit || 1),
    reservedCpus: String(c?.reservedCpus ?? 0),
    reservedMemory: bytes ? formatSize(bytes) : "0",
  };
}

/**
 * The request the form makes, or what cannot be sent (a field that is not a
 * number). Ranges are the manager's to check: a number out of range is sent
 * and its answer (InvalidArgument) shown.
 */
export function capacityRequest(id: string, f: CapacityForm): { request: MessageInitShape<typeof SetHostCapacityRequestSchema> } | { problem: string } {
  const num = (label: string, text: string): number | string => {
    const t = text.trim();
    if (!t) return 0;
    if (!/^-?\d+(\.\d+)?$/.test(t)) return `${label}: "${text}" is not a number (e.g. 1.5)`;
    return Number(t);
  };
  const cpuOvercommit = num("CPU overcommit", f.cpuOvercommit);
  const memoryOvercommit = num("Memory overcommit", f.memoryOvercommit);
  const reservedCpus = num("CPUs kept back", f.reservedCpus);
  const memText = f.reservedMemory.trim();
  const reservedMemory = memText ? parseSize(memText) : 0;
  for (const v of [cpuOvercommit, memoryOvercommit, reservedCpus]) if (typeof v === "string") return { problem: v };
  if (reservedMemory === undefined) return { problem: `Memory kept back: "${f.reservedMemory}" is not a size: write bytes or a number with K, M or G (e.g. 512M)` };
  return {
    request: {
      id,
      cpuOvercommit: cpuOvercommit as number,
      memoryOvercommit: memoryOvercommit as number,
      reservedCpus: reservedCpus as number,
      reservedMemoryBytes: BigInt(reservedMemory),
    },
  };
}
