/**
 * A server's limits in words (the drawer's Overview) and how close its data
 * directory is to its disk quota (the servers table's Data cell). Pure.
 */
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { formatBytes } from "../ui/format.js";
import { formatPercent } from "./usage-model.js";

/** A data directory at or above this share of its disk quota is shown in the warning tone. */
export const DISK_QUOTA_WARN_FRACTION = 0.9;

export interface LimitRow {
  label: string;
  /** The limit as shown; `unset` when there is none. */
  value: string;
  /** No limit set (shown muted). */
  unset: boolean;
}

/** Every limit of the spec, in the spec form's order; "none" (or what applies instead) where unset. */
export function limitRows(s: Pick<Server, "spec">): LimitRow[] {
  const r = s.spec?.resources;
  const row = (label: string, value: string | undefined, instead = "none"): LimitRow => ({ label, value: value ?? instead, unset: value === undefined });
  const memory = r?.memoryBytes ?? 0n;
  const swap = r?.memorySwapBytes ?? 0n;
  const pids = r?.pidsLimit ?? 0n;
  const quota = r?.diskQuotaBytes ?? 0n;
  return [
    row("Memory", memory ? formatBytes(memory) : undefined),
    // Swap is memory plus swap; 0 or equal to memory is no swap.
    row("Memory + swap", swap && swap !== memory ? formatBytes(swap) : undefined, memory ? "no swap" : "none"),
    row("CPUs", r?.cpus ? `${r.cpus} ${r.cpus === 1 ? "core" : "cores"}` : undefined),
    row("CPU shares", r?.cpuShares ? String(r.cpuShares) : undefined, "none (Docker's default, 1024)"),
    row("CPU set", r?.cpusetCpus || undefined, "none (all CPUs)"),
    row("Processes", pids > 0n ? String(pids) : undefined, pids === -1n ? "none" : "the manager's default"),
    row("Block IO weight", r?.blkioWeight ? String(r.blkioWeight) : undefined, "none (Docker's default)"),
    row("Disk quota", quota ? `${formatBytes(quota)} (soft)` : undefined),
    row("Over the quota", quota ? (r?.stopOverDiskQuota ? "stop the server" : "alert, refuse uploads") : undefined, "—"),
  ];
}

export interface QuotaUse {
  /** The data directory's size over its quota (may pass 1). */
  fraction: number;
  warn: boolean;
  /** Said in full, for the cell's title. */
  title: string;
}

/** The data directory's last measured size against the spec's disk quota; undefined without a quota or a measured size. */
export function diskQuotaUse(s: Pick<Server, "spec" | "status">): QuotaUse | undefined {
  const quota = Number(s.spec?.resources?.diskQuotaBytes ?? 0n);
  if (!quota || !s.status?.dataExists) return undefined;
  const size = Number(s.status.dataSizeBytes);
  const fraction = size / quota;
  const share = `${formatBytes(size)} of its ${formatBytes(quota)} disk quota (${formatPercent(fraction * 100)})`;
  const title =
    fraction > 1
      ? `over its disk quota: data directory ${share}${s.spec?.resources?.stopOverDiskQuota ? "; the server is stopped until it is under" : ""}`
      : fraction >= DISK_QUOTA_WARN_FRACTION
        ? `near its disk quota: data directory ${share}`
        : `data directory ${share}`;
  return { fraction, warn: fraction >= DISK_QUOTA_WARN_FRACTION, title };
}
