/**
 * How much of a host servers' limits may take, and whether a server fits.
 *
 * A host offers its CPUs and memory (as its agent reported them) times an
 * overcommit ratio, less a reserve kept for the host itself (SetHostCapacity;
 * by default 1x and nothing kept back). What a server takes is its limits:
 * `resources.cpus` and `resources.memory_bytes`. A server without a limit
 * takes nothing in that dimension (it is not bounded, so it cannot be
 * counted), and every server that is not deleted counts, running or not: a
 * stopped server may start at any time. Disk is not counted.
 */
import type { HostRecord, HostSchedule, ServerRecord } from "../domain/records.js";
import { formatBytes } from "../domain/limits.js";

export interface HostCapacity {
  cpuOvercommit: number;
  memoryOvercommit: number;
  reservedCpus: number;
  reservedMemoryBytes: number;
}

export const DEFAULT_CAPACITY: HostCapacity = { cpuOvercommit: 1, memoryOvercommit: 1, reservedCpus: 0, reservedMemoryBytes: 0 };

/** What a server asks of a host. */
export interface Request {
  cpus: number;
  memoryBytes: number;
}

export interface Room {
  /** The host reported its CPUs and memory (an agent connected once). */
  known: boolean;
  /** The host's CPUs: no one server may have a CPU limit above them (Docker refuses it). */
  cpus: number;
  allocatableCpus: number;
  allocatableMemoryBytes: number;
  allocatedCpus: number;
  allocatedMemoryBytes: number;
}

export function capacityOf(s: HostSchedule): HostCapacity {
  return { ...DEFAULT_CAPACITY, ...s.capacity };
}

/** `next` keeping `prev`'s capacity settings unless it sets its own: schedule writes (cordon, drain) leave them alone. */
export function keepCapacity(next: HostSchedule, prev: HostSchedule): HostSchedule {
  return next.capacity !== undefined || prev.capacity === undefined ? next : { ...next, capacity: prev.capacity };
}

export function requestOf(s: Pick<ServerRecord, "spec">): Request {
  return { cpus: s.spec.resources?.cpus ?? 0, memoryBytes: Number(s.spec.resources?.memoryBytes ?? 0n) };
}

/** The host's room, its servers (`servers`, deleted ones left out here) counted; `exceptId`'s not (a server being changed). */
export function roomOf(host: HostRecord, servers: readonly Pick<ServerRecord, "id" | "hostId" | "deletedAt" | "spec">[], exceptId = ""): Room {
  const allocated: Request = { cpus: 0, memoryBytes: 0 };
  for (const s of servers) {
    if (s.deletedAt !== null || s.id === exceptId || s.hostId !== host.id) continue;
    const r = requestOf(s);
    allocated.cpus += r.cpus;
    allocated.memoryBytes += r.memoryBytes;
  }
  return roomWith(host, allocated);
}

/** The host's room with `allocated` taken by its servers (as summed by Store.allocationByHost, or by roomOf). */
export function roomWith(host: HostRecord, allocated: Request): Room {
  const c = capacityOf(host.schedule);
  const cpus = host.facts.cpuCount ?? 0;
  const memory = host.facts.memoryBytes ?? 0;
  return {
    known: cpus > 0 && memory > 0,
    cpus,
    allocatableCpus: Math.max(0, cpus * c.cpuOvercommit - c.reservedCpus),
    allocatableMemoryBytes: Math.max(0, Math.floor(memory * c.memoryOvercommit) - c.reservedMemoryBytes),
    allocatedCpus: allocated.cpus,
    allocatedMemoryBytes: allocated.memoryBytes,
  };
}

/** What `request` lacks on a host with `room`, in words; empty when it fits (or the host's size is not known). */
export function shortage(room: Room, request: Request): string[] {
  if (!room.known) return [];
  const out: string[] = [];
  const freeCpus = room.allocatableCpus - room.allocatedCpus;
  if (request.cpus > room.cpus) out.push(`CPUs: ${round(request.cpus)} asked, the host has ${room.cpus} (Docker refuses a CPU limit above the host's CPUs)`);
  // A hair of tolerance: 0.1 + 0.2 cores must fit in 0.3.
  else if (request.cpus > 0 && request.cpus > freeCpus + 1e-9) {
    out.push(`CPUs: ${round(request.cpus)} asked, ${round(Math.max(0, freeCpus))} free of ${round(room.allocatableCpus)} allocatable`);
  }
  const freeMemory = room.allocatableMemoryBytes - room.allocatedMemoryBytes;
  if (request.memoryBytes > 0 && request.memoryBytes > freeMemory) {
    out.push(`memory: ${formatBytes(BigInt(request.memoryBytes))} asked, ${formatBytes(BigInt(Math.max(0, freeMemory)))} free of ${formatBytes(BigInt(room.allocatableMemoryBytes))} allocatable`);
  }
  return out;
}

/**
 * How full the host would be with `request` added: the larger of its CPU and
 * memory shares (0 to 1 and beyond; 0 when its size is not known). Spread
 * placement picks the host where this is lowest.
 */
export function loadWith(room: Room, request: Request): number {
  if (!room.known) return 0;
  const cpu = room.allocatableCpus > 0 ? (room.allocatedCpus + request.cpus) / room.allocatableCpus : 0;
  const memory = room.allocatableMemoryBytes > 0 ? (room.allocatedMemoryBytes + request.memoryBytes) / room.allocatableMemoryBytes : 0;
  return Math.max(cpu, memory);
}

const round = (n: number) => Math.round(n * 100) / 100;
