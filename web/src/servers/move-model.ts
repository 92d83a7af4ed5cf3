/**
 * What the dashboard offers for moving servers between hosts (TransferServer,
 * CloneServer, DrainHost): which hosts a server may go to, which backup
 * targets can carry its data from one host to another, and how a host's
 * scheduling state reads (Cordoned, Draining). Pure functions, unit-tested in
 * move-model.test.ts; the rules are those of proto/berth/v1/server.proto and
 * host.proto.
 */
import type { BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import { HostState, type Host } from "@berth/proto/berth/v1/host_pb.js";
import type { Tone } from "./model.js";

export interface HostChoice {
  host: Host;
  /** Why it cannot be picked, or undefined when it can. */
  blocked: string | undefined;
}

/** Why no new server may be placed on `h` now, or undefined when one may. */
export function placementBlocked(h: Host): string | undefined {
  if (h.state !== HostState.ONLINE) return "offline";
  if (h.draining) return "draining";
  if (h.unschedulable) return "cordoned";
  return undefined;
}

/**
 * The hosts a server on `currentHostId` may be moved to: every other host,
 * those that can take it first (connected, not cordoned), then by name.
 * The server's own host is left out.
 */
export function transferChoices(hosts: readonly Host[], currentHostId: string): HostChoice[] {
  return hostChoices(hosts.filter((h) => h.id !== currentHostId));
}

/** Every host, those that can take a new server first, then by name. */
export function hostChoices(hosts: readonly Host[]): HostChoice[] {
  return hosts
    .map((host) => ({ host, blocked: placementBlocked(host) }))
    .sort((a, b) => Number(a.blocked !== undefined) - Number(b.blocked !== undefined) || (a.host.name || a.host.id).localeCompare(b.host.name || b.host.id));
}

/**
 * A target both the source and the destination host reach: S3, or a
 * directory every host mounts (shared). A plain directory target is on the
 * host that wrote it only.
 */
export function carriesBetweenHosts(t: BackupTarget): boolean {
  return t.kind.case === "s3" || (t.kind.case === "directory" && t.kind.value.shared);
}

export interface SchedulingBadge {
  label: string;
  tone: Tone;
  /** The manager's whole drain message, when there is one. */
  title: string | undefined;
  /** The drain message when it says more than the label (shown under it). */
  detail: string | undefined;
}

/**
 * The host's scheduling state as a badge: "Draining · 3 of 12 moved" while a
 * drain runs (the drain message's first clause), "Cordoned" when no new
 * server is placed on it, nothing for a schedulable host.
 */
export function schedulingBadge(h: Host): SchedulingBadge | undefined {
  const message = h.drainMessage.trim() || undefined;
  if (h.draining) {
    const first = message?.split(";")[0]?.trim();
    return { label: first ? `Draining · ${first}` : "Draining", tone: "busy", title: message, detail: message !== first ? message : undefined };
  }
  if (h.unschedulable) return { label: "Cordoned", tone: "warn", title: message, detail: message };
  return undefined;
}
