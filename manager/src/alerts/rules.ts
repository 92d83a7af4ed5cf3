import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { formatBytes } from "../domain/limits.js";

/**
 * Alert rules as pure functions of a snapshot of the fleet: each rule says
 * which subjects are in trouble right now, and for how long the trouble must
 * last before it is worth an alert (`forMs`). Timing and state (pending,
 * firing, resolved) are the evaluator's business (`evaluator.ts`).
 */

export const ALERT_RULES = ["host_offline", "server_not_converged", "crash_loop", "data_lost", "stopped_outside", "orphan_found", "disk_low", "backup_failed", "backup_overdue", "transfer_failed", "disk_quota", "install_failed", "saved_query"] as const;
export type AlertRule = (typeof ALERT_RULES)[number];

export type AlertSeverity = "info" | "warning" | "critical";

/** The CamelCase reason recorded on `alert.*` events, per rule. */
export const RULE_REASON: Record<AlertRule, string> = {
  host_offline: "HostOffline",
  server_not_converged: "NotConverged",
  crash_loop: "CrashLoop",
  data_lost: "DataLost",
  stopped_outside: "StoppedOutsideBerth",
  orphan_found: "OrphanFound",
  disk_low: "DiskLow",
  backup_failed: "BackupFailed",
  transfer_failed: "TransferFailed",
  backup_overdue: "BackupOverdue",
  disk_quota: "DiskQuotaExceeded",
  install_failed: "InstallFailed",
  saved_query: "SavedQueryRows",
};

export interface AlertThresholds {
  /** A host's agent disconnected for longer than this (default 30 s). */
  hostOfflineMs: number;
  /** A server's observed state differs from its desired state for longer than this (default 2 min). */
  notConvergedMs: number;
  /** A connected host's data root has less than this fraction free (default 0.10). */
  diskFreeFraction: number;
}

export const DEFAULT_THRESHOLDS: AlertThresholds = {
  hostOfflineMs: 30_000,
  notConvergedMs: 120_000,
  diskFreeFraction: 0.1,
};

export interface HostView {
  id: string;
  name: string;
  connected: boolean;
  dataRootFreeBytes?: number | undefined;
  dataRootTotalBytes?: number | undefined;
}

export interface ServerView {
  id: string;
  name: string;
  project: string;
  hostId: string;
  desired: DesiredState;
  phase: Phase;
  reason: string;
  generation: number;
  observedGeneration: number;
  /** Soft-deleted or being purged: nothing to alert about. */
  retired: boolean;
  /** Crashes towards a crash loop while berth restarts it (status.crash.recent; 0 or absent when not crashing). */
  recentCrashes?: number;
  /** While Unknown (its host away): the phase and reason observed before (status.last_known_*). */
  lastKnownPhase?: Phase;
  lastKnownReason?: string;
  /** resources.disk_quota_bytes (0 or absent: none) and the data directory's size as last measured. */
  diskQuotaBytes?: number;
  dataSizeBytes?: number;
}

/**
 * Something on a host that no server owns (`untracked`: a container labelled
 * by this manager without a record), or a server whose host is gone
 * (`stranded`), as OrphanDetector.alertViews reports them.
 */
export interface OrphanView {
  hostId: string;
  kind: "container" | "data" | "server";
  /** Container id, data directory name or server id. */
  id: string;
  reason: "untracked" | "stranded";
}

/** A server whose newest finished backup failed (backups/health.ts). */
export interface BackupFailureView {
  serverId: string;
  serverName: string;
  project: string;
  hostId: string;
  backupId: string;
  reason: string;
  message: string;
}

/** A server whose latest transfer failed (transfers/health.ts keeps these from the ledger). */
export interface TransferFailureView {
  serverId: string;
  project: string;
  /** Where the server is: the transfer's source. */
  hostId: string;
  targetHost: string;
  reason: string;
  message: string;
}

/**
 * A live server whose BackupPolicy sets alert_after_hours, with its newest
 * successful backup (backups/overdue.ts keeps these from the ledger).
 */
export interface BackupPolicyView {
  serverId: string;
  serverName: string;
  project: string;
  hostId: string;
  /** When the server record was created: the clock when it never had a successful backup. */
  createdAt: number;
  alertAfterHours: number;
  /** When its newest successful backup finished; null: it never had one. */
  newestSuccessAt: number | null;
}

export interface FleetSnapshot {
  hosts: HostView[];
  servers: ServerView[];
  orphans: OrphanView[];
  backupFailures?: BackupFailureView[];
  transferFailures?: TransferFailureView[];
  backupPolicies?: BackupPolicyView[];
  /** The time the overdue rule measures ages against (default: Date.now()). */
  now?: number;
}

/** "This subject is in trouble now", as one rule sees it. */
export interface AlertCondition {
  rule: AlertRule;
  /** `host:<id>`, `server:<id>` or `orphan:<host>/<kind>` (all of a host's orphans of a kind): one firing alert per rule and subject. */
  subject: string;
  severity: AlertSeverity;
  message: string;
  project: string;
  hostId: string;
  serverId: string;
  /** How long the condition must hold before the alert fires. */
  forMs: number;
}

/** The key of "the same alert": at most one firing alert per key. */
export function alertKey(c: { rule: string; subject: string }): string {
  return `${c.rule} ${c.subject}`;
}

/** Reasons plan() gives a server while a backup or restore holds it (reconcile/plan.ts, step 2b). */
const DATA_OPERATION_REASONS: ReadonlySet<string> = new Set(["StoppingForBackup", "BackingUp", "StoppingForRestore", "Restoring"]);

/** A server whose install script runs, or is about to (plan step 5b). */
const INSTALL_REASONS: ReadonlySet<string> = new Set(["Installing", "StoppingForInstall"]);

/** Phases that satisfy each desired state. */
const CONVERGED: Record<DesiredState, readonly Phase[]> = {
  [DesiredState.UNSPECIFIED]: [],
  [DesiredState.RUNNING]: [Phase.RUNNING],
  [DesiredState.PAUSED]: [Phase.PAUSED],
  // Missing with desired stopped is what a restore leaves: nothing runs, as asked.
  [DesiredState.STOPPED]: [Phase.STOPPED, Phase.MISSING],
};

/**
 * A server is converged when the reconciler has nothing left to do for its
 * generation and its phase is what the desired state asks for. Phases that
 * have their own rule are not counted again: Unknown (host_offline),
 * DataLost (data_lost), Failed/CrashLoop (crash_loop).
 */
export function notConverged(s: ServerView): boolean {
  if (s.retired) return false;
  // Stopped for a backup or restore: it has its own deadline, and its failure its own event.
  if (DATA_OPERATION_REASONS.has(s.reason)) return false;
  // Stopped over its disk quota (stop_over_disk_quota): the disk_quota alert says so.
  if (s.reason === "DiskQuotaExceeded") return false;
  // Its install script runs (up to its own timeout; a failure is install_failed's).
  if (INSTALL_REASONS.has(s.reason)) return false;
  // Running and loading until its ready pattern matches: it has its own deadline (ReadyTimeout,
  // 10 minutes; that one counts), and a game loading for 3 minutes is not an incident.
  if (s.phase === Phase.STARTING && s.reason === "WaitingForReady") return false;
  if (s.phase === Phase.UNKNOWN || s.phase === Phase.DATA_LOST) return false;
  if (s.phase === Phase.FAILED && s.reason === "CrashLoop") return false;
  return s.observedGeneration !== s.generation || !CONVERGED[s.desired].includes(s.phase);
}

/** A second crash in the window is a pattern, not an accident: crash_loop's warning stage. */
export const CRASH_WARNING_AT = 2;

export function evaluateRules(fleet: FleetSnapshot, t: AlertThresholds): AlertCondition[] {
  const hosts = new Map(fleet.hosts.map((h) => [h.id, h]));
  return [...hostConditions(fleet.hosts, t), ...serverConditions(fleet.servers, hosts, t), ...orphanConditions(fleet.orphans, hosts), ...backupConditions(fleet.backupFailures ?? []), ...overdueConditions(fleet.backupPolicies ?? [], fleet.now ?? Date.now()), ...transferConditions(fleet.transferFailures ?? [])];
}

/** The rules about hosts (evaluateRules, in parts: the evaluator runs the server rules a page at a time). */
export function hostConditions(fleetHosts: readonly HostView[], t: AlertThresholds): AlertCondition[] {
  const out: AlertCondition[] = [];
  for (const h of fleetHosts) {
    const host = { project: "", hostId: h.id, serverId: "" };
    if (!h.connected) {
      out.push({
        ...host,
        rule: "host_offline",
        subject: `host:${h.id}`,
        severity: "critical",
        forMs: t.hostOfflineMs,
        message: `host ${h.name} is offline: its agent has not been connected for over ${seconds(t.hostOfflineMs)}; its servers are Unknown`,
      });
      continue;
    }
    const total = h.dataRootTotalBytes ?? 0;
    const free = h.dataRootFreeBytes ?? 0;
    if (total > 0 && free / total < t.diskFreeFraction) {
      out.push({
        ...host,
        rule: "disk_low",
        subject: `host:${h.id}`,
        severity: "warning",
        forMs: 0,
        message: `host ${h.name}: data root has ${percent(free / total)} free (${formatBytes(free)} of ${formatBytes(total)}), below ${percent(t.diskFreeFraction)}`,
      });
    }
  }
  return out;
}

/** The rules about servers, for any subset of them; `hosts` names the hosts in messages. */
export function serverConditions(servers: readonly ServerView[], hosts: ReadonlyMap<string, HostView>, t: AlertThresholds): AlertCondition[] {
  const out: AlertCondition[] = [];
  for (const live of servers) {
    if (live.retired) continue;
    // Its own alert, whatever else is wrong: a server over its quota is so however it runs.
    const quota = live.diskQuotaBytes ?? 0;
    if (quota > 0 && (live.dataSizeBytes ?? 0) > quota) {
      out.push({
        project: live.project,
        hostId: live.hostId,
        serverId: live.id,
        subject: `server:${live.id}`,
        rule: "disk_quota",
        severity: "warning",
        forMs: 0,
        message: `server ${live.name} uses ${formatBytes(BigInt(live.dataSizeBytes ?? 0))} of its ${formatBytes(BigInt(quota))} disk quota; uploads through the file manager are refused until it is under it again`,
      });
    }
    // A host that goes away hides nothing: a server's alert goes on as it was (same alert, its
    // acknowledgement kept) on what was last seen, the host's own alert saying why it is not current.
    const away = live.phase === Phase.UNKNOWN && live.lastKnownPhase !== undefined && live.lastKnownPhase !== Phase.UNSPECIFIED;
    const s: ServerView = away ? { ...live, phase: live.lastKnownPhase!, reason: live.lastKnownReason ?? "" } : live;
    const asLastSeen = (m: string) => (away ? `${m} (last seen before host ${hosts.get(s.hostId)?.name ?? s.hostId} went away)` : m);
    const server = { project: s.project, hostId: s.hostId, serverId: s.id, subject: `server:${s.id}` };
    if (s.phase === Phase.FAILED && s.reason === "InstallFailed") {
      out.push({ ...server, rule: "install_failed", severity: "critical", forMs: 0, message: asLastSeen(`server ${s.name}: its install script failed; read its output with GetInstallLog, fix the cause, then ReinstallServer`) });
    } else if (s.phase === Phase.FAILED && s.reason === "CrashLoop") {
      out.push({ ...server, rule: "crash_loop", severity: "critical", forMs: 0, message: asLastSeen(`server ${s.name} is crash-looping; fix it and start it again`) });
    } else if ((s.phase === Phase.STARTING || s.phase === Phase.RUNNING) && (s.recentCrashes ?? 0) >= CRASH_WARNING_AT) {
      // The same alert as the crash loop's, in its warning stage: it turns critical there, acknowledgement kept.
      out.push({
        ...server,
        rule: "crash_loop",
        severity: "warning",
        forMs: 0,
        message: asLastSeen(`server ${s.name} crashed ${s.recentCrashes} times in 10 minutes; berth restarts it, and gives up at the 5th (Failed/CrashLoop)`),
      });
    } else if (s.phase === Phase.DATA_LOST) {
      out.push({
        ...server,
        rule: "data_lost",
        severity: "critical",
        forMs: 0,
        message: asLastSeen(`server ${s.name}: its data directory is gone from host ${hosts.get(s.hostId)?.name ?? s.hostId}; purge it, or start it with allow_empty_data`),
      });
    } else if (s.phase === Phase.STOPPED && s.reason === "StoppedOutsideBerth") {
      out.push({
        ...server,
        rule: "stopped_outside",
        severity: "warning",
        forMs: 0,
        message: asLastSeen(`server ${s.name} was stopped outside berth (docker stop or kill on host ${hosts.get(s.hostId)?.name ?? s.hostId}); berth now keeps it stopped: start it to run it again, or acknowledge if that was intended`),
      });
    } else if (!away && notConverged(s)) {
      out.push({
        ...server,
        rule: "server_not_converged",
        severity: "warning",
        forMs: t.notConvergedMs,
        message: `server ${s.name} is ${phaseName(s.phase)}${s.reason ? ` (${s.reason})` : ""} but should be ${DesiredState[s.desired].toLowerCase()}${
          s.observedGeneration !== s.generation ? ` at generation ${s.generation}` : ""
        }, for over ${seconds(t.notConvergedMs)}`,
      });
    }
  }
  return out;
}

/**
 * The orphan rule. One alert per host and kind, not one per orphan: a host
 * reporting 30,000 untracked containers once made 30,001 alerts (and twice
 * as many events).
 */
export function orphanConditions(orphans: readonly OrphanView[], hosts: ReadonlyMap<string, HostView>): AlertCondition[] {
  const out: AlertCondition[] = [];
  const groups = new Map<string, OrphanView[]>();
  for (const o of orphans) {
    const key = `${o.hostId}/${o.kind}`;
    const g = groups.get(key);
    if (g) g.push(o);
    else groups.set(key, [o]);
  }
  for (const [key, group] of groups) {
    const { hostId, kind } = group[0]!;
    out.push({
      rule: "orphan_found",
      subject: `orphan:${key}`,
      severity: "warning",
      forMs: 0,
      project: "",
      hostId,
      serverId: "",
      message: orphanMessage(group, hosts.get(hostId)?.name ?? hostId, kind),
    });
  }
  return out;
}

/** "3 untracked containers on host a: c1, c2, c3; adopt or destroy them (OrphanService)", at most 5 ids named. */
function orphanMessage(group: OrphanView[], hostName: string, kind: OrphanView["kind"]): string {
  const reasons = [...new Set(group.map((o) => o.reason))].join("/");
  const n = group.length;
  const shown = group.slice(0, 5).map((o) => (kind === "container" ? o.id.slice(0, 12) : o.id));
  const more = n > shown.length ? ` and ${n - shown.length} more` : "";
  return `${n} ${reasons} ${kind}${n === 1 ? "" : "s"} on host ${hostName}: ${shown.join(", ")}${more}; adopt or destroy ${n === 1 ? "it" : "them"} (OrphanService)`;
}

function phaseName(p: Phase): string {
  const name = Phase[p] ?? "UNSPECIFIED";
  return name
    .toLowerCase()
    .split("_")
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join("");
}

function seconds(ms: number): string {
  return ms % 60_000 === 0 && ms >= 60_000 ? `${ms / 60_000} min` : `${Math.round(ms / 100) / 10} s`;
}

function percent(f: number): string {
  return `${Math.round(f * 1000) / 10} %`;
}

/**
 * The backup rule: a server whose newest finished backup failed, until a
 * newer one succeeds (or the failed one is deleted). A warning: the server
 * runs, but its data is not protected as asked.
 */
export function backupConditions(failures: readonly BackupFailureView[]): AlertCondition[] {
  return failures.map((f) => ({
    rule: "backup_failed",
    subject: `server:${f.serverId}`,
    severity: "warning",
    forMs: 0,
    project: f.project,
    hostId: f.hostId,
    serverId: f.serverId,
    message: `server ${f.serverName}: its last backup (${f.backupId}) failed (${f.reason}): ${f.message}`.slice(0, 1000),
  }));
}

/**
 * A server whose latest transfer failed: a warning (it runs on its source as
 * before, but the move the operator asked for did not happen). It resolves
 * when the next transfer of the server is asked for or succeeds.
 */
export function transferConditions(failures: readonly TransferFailureView[]): AlertCondition[] {
  return failures.map((f) => ({
    rule: "transfer_failed",
    subject: `server:${f.serverId}`,
    severity: "warning",
    forMs: 0,
    project: f.project,
    hostId: f.hostId,
    serverId: f.serverId,
    message: `server ${f.serverId}: its transfer${f.targetHost ? ` to host ${f.targetHost}` : ""} failed (${f.reason}); it stays on host ${f.hostId}: ${f.message}`.slice(0, 1000),
  }));
}

/**
 * The overdue rule: a server whose policy asks for an alert after
 * `alertAfterHours` and whose newest successful backup finished longer ago
 * than that, or that never had one and was created longer ago than that. It
 * resolves when a backup succeeds or the policy is cleared (the view drops
 * the server). A warning, like backup_failed: the server runs, its data is
 * not protected as asked.
 */
export function overdueConditions(policies: readonly BackupPolicyView[], now: number): AlertCondition[] {
  const out: AlertCondition[] = [];
  for (const p of policies) {
    if (p.alertAfterHours <= 0) continue;
    const limitMs = p.alertAfterHours * 3600_000;
    const since = p.newestSuccessAt ?? p.createdAt;
    if (now - since <= limitMs) continue;
    const age = hours(now - since);
    out.push({
      rule: "backup_overdue",
      subject: `server:${p.serverId}`,
      severity: "warning",
      forMs: 0,
      project: p.project,
      hostId: p.hostId,
      serverId: p.serverId,
      message:
        p.newestSuccessAt === null
          ? `server ${p.serverName}: no successful backup since it was created ${age} ago; its backup policy alerts after ${p.alertAfterHours} h; back it up (BackupService.CreateBackup)`
          : `server ${p.serverName}: its newest successful backup finished ${age} ago (${new Date(p.newestSuccessAt).toISOString()}); its backup policy alerts after ${p.alertAfterHours} h; back it up (BackupService.CreateBackup)`,
    });
  }
  return out;
}

/** "30 h", or "3 d 4 h" from two days on; whole hours, rounded down. */
function hours(ms: number): string {
  const h = Math.floor(ms / 3600_000);
  return h >= 48 ? `${Math.floor(h / 24)} d ${h % 24} h` : `${h} h`;
}

/**
 * A saved query with an alert (query/saved-alerts.ts runs it on the leader
 * and stores what it saw): since when it has returned rows (null: none at
 * its last run), how many and the first.
 */
export interface SavedQueryAlertView {
  id: string;
  name: string;
  project: string;
  rowsSince: number | null;
  rows: number;
  first: string;
  fireAfterMs: number;
  severity: AlertSeverity;
}

/**
 * The saved_query rule: a query that has returned rows for its fire_after
 * (counted from rows_since, which the alert runner keeps in the store, so a
 * new leader does not start the clock again). Resolves when it returns none,
 * or its alert is disabled, or it is deleted (the view drops it).
 */
export function savedQueryConditions(views: readonly SavedQueryAlertView[], now: number): AlertCondition[] {
  const out: AlertCondition[] = [];
  for (const v of views) {
    if (v.rowsSince === null || v.rows <= 0 || now - v.rowsSince < v.fireAfterMs) continue;
    out.push({
      rule: "saved_query",
      subject: `query:${v.id}`,
      severity: v.severity,
      forMs: 0,
      project: v.project,
      hostId: "",
      serverId: "",
      message: `saved query "${v.name}" returned ${v.rows} row${v.rows === 1 ? "" : "s"} for ${seconds(Math.max(v.fireAfterMs, now - v.rowsSince))}${v.first ? ` (first: ${v.first})` : ""}`.slice(0, 1000),
    });
  }
  return out;
}
