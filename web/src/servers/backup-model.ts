/**
 * What the dashboard shows of backups and of a server's data operation
 * (backup, restore, transfer): state names and colours, the progress line ("Backing up · Copying 45%
 * (450 MiB of 1.0 GiB)"), when the Backups tab must keep refreshing, and the
 * ignore patterns as typed, the backup policy form. Pure functions, unit-tested in backup-model.test.ts;
 * the states and stages are those of proto/berth/v1/backup.proto and
 * ServerStatus.operation.
 */
import { BackupState, type Backup } from "@berth/proto/berth/v1/backup_pb.js";
import type { BackupPolicy, Operation } from "@berth/proto/berth/v1/server_pb.js";
import { formatBytes } from "../ui/format.js";
import type { Tone } from "./model.js";

/** State as the docs spell it: Pending, Running, Succeeded, Failed, Deleting. */
export function backupStateName(s: BackupState): string {
  switch (s) {
    case BackupState.PENDING:
      return "Pending";
    case BackupState.RUNNING:
      return "Running";
    case BackupState.SUCCEEDED:
      return "Succeeded";
    case BackupState.FAILED:
      return "Failed";
    case BackupState.DELETING:
      return "Deleting";
    default:
      return "—";
  }
}

export function backupStateTone(s: BackupState): Tone {
  switch (s) {
    case BackupState.SUCCEEDED:
      return "ok";
    case BackupState.PENDING:
    case BackupState.RUNNING:
    case BackupState.DELETING:
      return "busy";
    case BackupState.FAILED:
      return "bad";
    default:
      return "muted";
  }
}

/** A backup that will still change by itself (the list keeps refreshing while there is one). */
export function isBackupActive(b: Backup): boolean {
  return b.state === BackupState.PENDING || b.state === BackupState.RUNNING || b.state === BackupState.DELETING;
}

/** Whole percent of done/total, clamped to 0..100; undefined when the total is not known (0). */
export function percentOf(done: bigint, total: bigint): number | undefined {
  if (total <= 0n) return undefined;
  const p = Number((done * 100n) / total);
  return Math.max(0, Math.min(100, p));
}

export interface ProgressLine {
  /** "Backing up · Copying 45%" */
  text: string;
  /** "450 MiB of 1.0 GiB", or "" when the total is not known. */
  bytes: string;
  percent: number | undefined;
}

/**
 * The line for a server's status.operation (the row and the drawer header).
 * A transfer names the host it moves to ("Moving to host-b · Copying 45%"),
 * by name when `hostName` knows it.
 */
export function operationProgress(op: Operation, hostName: (id: string) => string = (id) => id): ProgressLine {
  const what =
    op.kind === "restore"
      ? "Restoring"
      : op.kind === "backup"
        ? "Backing up"
        : op.kind === "transfer"
          ? op.targetHost
            ? `Moving to ${hostName(op.targetHost)}`
            : "Moving"
          : op.kind;
  const percent = percentOf(op.bytesDone, op.bytesTotal);
  const stage = [op.stage, percent === undefined ? "" : `${percent}%`].filter(Boolean).join(" ");
  return {
    text: [what, stage].filter(Boolean).join(" · "),
    bytes: op.bytesTotal > 0n ? `${formatBytes(op.bytesDone)} of ${formatBytes(op.bytesTotal)}` : "",
    percent,
  };
}

/** Ignore patterns from the textarea: one per line, blank lines and surrounding spaces dropped. */
export function parseIgnore(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** The backup policy editor's fields, as typed (ignore: one pattern per line). */
export interface PolicyForm {
  keepLast: string;
  keepDays: string;
  alertAfterHours: string;
  ignore: string;
}

export type PolicyNumber = "keepLast" | "keepDays" | "alertAfterHours";

/** Each number's label and the contract's upper bound (proto/berth/v1/server.proto BackupPolicy). */
export const POLICY_LIMITS: Record<PolicyNumber, { max: number; label: string }> = {
  keepLast: { max: 1000, label: "Keep the newest" },
  keepDays: { max: 3650, label: "Keep for days" },
  alertAfterHours: { max: 87600, label: "Alert after hours" },
};

/** The form showing `p` (all 0 when the server has no policy). */
export function formOfPolicy(p: BackupPolicy | undefined): PolicyForm {
  return { keepLast: String(p?.keepLast ?? 0), keepDays: String(p?.keepDays ?? 0), alertAfterHours: String(p?.alertAfterHours ?? 0), ignore: (p?.ignore ?? []).join("\n") };
}

/** The policy the form says, or the first field it cannot be (digits only, 0..max; empty is 0). */
export function policyOf(f: PolicyForm): { policy: { keepLast: number; keepDays: number; alertAfterHours: number; ignore: string[] } } | { field: keyof PolicyForm; message: string } {
  const out = { keepLast: 0, keepDays: 0, alertAfterHours: 0, ignore: parseIgnore(f.ignore) };
  if (out.ignore.length > 100) return { field: "ignore", message: "Leave out: at most 100 patterns" };
  const long = out.ignore.find((l) => l.length > 1024);
  if (long) return { field: "ignore", message: `Leave out: a pattern is at most 1024 characters (${long.slice(0, 20)}…)` };
  for (const k of Object.keys(POLICY_LIMITS) as PolicyNumber[]) {
    const text = f[k].trim();
    const n = text === "" ? 0 : /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(n <= POLICY_LIMITS[k].max)) return { field: k, message: `${POLICY_LIMITS[k].label}: a whole number from 0 to ${POLICY_LIMITS[k].max} (0: no rule)` };
    out[k] = n;
  }
  return { policy: out };
}

/** "keep the newest 5, 30 days · alert after 24 h", or "no retention · no alert". */
export function policySummary(p: BackupPolicy | undefined): string {
  const keep = [p?.keepLast ? `the newest ${p.keepLast}` : "", p?.keepDays ? `${p.keepDays} ${p.keepDays === 1 ? "day" : "days"}` : ""].filter(Boolean).join(", ");
  const ignored = p?.ignore.length ? ` · leaves out ${p.ignore.length} ${p.ignore.length === 1 ? "pattern" : "patterns"}` : "";
  return `${keep ? `keep ${keep}` : "no retention"} · ${p?.alertAfterHours ? `alert after ${p.alertAfterHours} h` : "no alert"}${ignored}`;
}
