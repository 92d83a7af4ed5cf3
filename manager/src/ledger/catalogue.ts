/**
 * THE catalogue of event types berth records in its ledger. Every `type`
 * appended anywhere in the manager must be listed here with what it means
 * (`catalogue.test.ts` greps the source tree and fails on a missing one), and
 * `docs/events.md` is generated from this list (`renderCatalogueMarkdown`).
 */

/** Who records an event of this type (the `actor` field). */
export type EventActor = "operator" | "reconciler" | "agent" | "alerts" | "manager" | "schedule";

export interface EventTypeInfo {
  /** One line: what happened. */
  meaning: string;
  /** Usual actor: `operator` means `token:<id>:<name>` (or `bootstrap`/`cli` for tokens); `schedule` means `schedule:<id>`. */
  actor: EventActor;
  /** What the event's own fields carry, when it is more than the message. */
  fields?: string;
}

export const EVENT_CATALOGUE = {
  // --- operator actions on servers (ServerService) ----------------------------
  "server.created": { meaning: "CreateServer recorded a new server on the chosen host", actor: "operator" },
  "server.updated": { meaning: "UpdateServer replaced the spec (generation + 1); with apply_now the container is recreated at once", actor: "operator" },
  "server.start_requested": { meaning: "StartServer: desired state running", actor: "operator" },
  "server.stop_requested": { meaning: "StopServer: desired state stopped", actor: "operator" },
  "server.pause_requested": { meaning: "PauseServer: desired state paused", actor: "operator" },
  "server.resume_requested": { meaning: "ResumeServer: desired state running again after a pause", actor: "operator" },
  "server.restart_requested": { meaning: "RestartServer: stop then start the container (applying a newer spec)", actor: "operator" },
  "server.rebuild_requested": { meaning: "RebuildServer: recreate the container from the current spec, keeping data", actor: "operator" },
  "server.deleted": { meaning: "DeleteServer: soft delete; container removed, data and record kept", actor: "operator" },
  "server.restored": { meaning: "RestoreServer: a soft-deleted server is back (stopped)", actor: "operator" },
  "exec.run": {
    meaning: "ExecCommand: a one-off command was started in the server's running container; its output and environment are not recorded",
    actor: "operator",
    fields: "payload: argv",
  },
  "console.command": {
    meaning: "SendConsoleCommand: a line was written to the server's console (the main process's stdin); its output is not recorded",
    actor: "operator",
    fields: "payload: line",
  },
  // --- FileService: changes to a server's data directory (reads are not recorded) ---
  "file.written": { meaning: "WriteFile: an upload's last chunk replaced (or created) a file in the server's data directory", actor: "operator", fields: "payload: path, bytes" },
  "file.directory_created": { meaning: "MakeDirectory: a directory was created in the server's data directory", actor: "operator", fields: "payload: path" },
  "file.moved": { meaning: "MoveFile: a file or directory of the server's data directory was renamed or moved", actor: "operator", fields: "payload: path, to, overwrite" },
  "file.copied": { meaning: "CopyFile: a file or tree of the server's data directory was copied", actor: "operator", fields: "payload: path, to, entries, bytes" },
  "file.deleted": { meaning: "DeleteFile: a file, link or directory (tree with recursive) was deleted from the server's data directory", actor: "operator", fields: "payload: path, recursive" },
  "file.mode_changed": { meaning: "ChangeFileMode: an entry's permission bits were changed", actor: "operator", fields: "payload: path, mode" },
  "file.archive_created": { meaning: "CreateArchive: files of the server's data directory were archived into a new .tar.gz or .zip there", actor: "operator", fields: "payload: path (the archive), paths, entries" },
  "file.archive_extracted": { meaning: "ExtractArchive: an archive of the server's data directory was extracted into a directory of it", actor: "operator", fields: "payload: path (the archive), to, entries, bytes" },
  "server.purge_requested": { meaning: "PurgeServer: remove container and record (data only with remove_data)", actor: "operator" },
  "server.purged": {
    meaning: "the server's record was dropped: purge finished, delete retention expired, or a forced purge while the host was offline",
    actor: "reconciler",
    fields: "reason: Purged, RetentionExpired, ForcedWhileHostOffline, ...",
  },

  // --- the reconciler and the agent ------------------------------------------
  "command.issued": { meaning: "the reconciler sent a command to the server's agent", actor: "reconciler", fields: "correlation_id: the command id; message: the command kind" },
  "command.succeeded": { meaning: "the agent finished a command (reason ObservedDone, actor reconciler: its result came after the deadline, but the host shows it done)", actor: "agent", fields: "correlation_id: the command id" },
  "command.failed": { meaning: "the agent could not finish a command", actor: "agent", fields: "correlation_id: the command id; reason and message from the agent" },
  "command.expired": { meaning: "a command passed its deadline without a result", actor: "reconciler", fields: "correlation_id: the command id" },
  "phase.changed": {
    meaning: "the server's phase (or its reason) changed",
    actor: "reconciler",
    fields: "reason: the new phase's reason; payload: {from, to, cause}: the cause is what triggered the reconcile",
  },
  "container.died": { meaning: "the container exited by itself (not stopped by berth or an operator), or the kernel killed it for exceeding its memory limit", actor: "agent", fields: "reason: Crashed, Exited or OOMKilled; payload: {exitCode} (OOMKilled: also oomKilled, memoryLimitBytes)" },
  "drift.adopted": { meaning: "a stop made outside berth (or a clean exit) became the desired state: desired is now stopped", actor: "reconciler" },
  "drift.healed": { meaning: "a stop made outside berth was undone because the restart policy is always", actor: "reconciler" },
  "drift.container_removed": { meaning: "the container was removed outside berth; the server is Missing until started", actor: "reconciler" },
  "image.pull_progress": {
    meaning: "the agent is pulling the server's image (at most one event per server every 2 s, plus the last)",
    actor: "agent",
    fields: "reason: Pulling or PullFinished; correlation_id: the command id",
  },
  "data.lost": { meaning: "the data directory of a server that had data is gone (phase DataLost)", actor: "reconciler" },

  // --- backups (BackupService; docs/data.md) -----------------------------------
  "backup.target_created": { meaning: "CreateBackupTarget configured where backups go (a directory on the hosts)", actor: "operator" },
  "backup.target_deleted": { meaning: "DeleteBackupTarget removed a target no backup used any more", actor: "operator" },
  "backup.requested": {
    meaning: "CreateBackup: the server's data directory is to be archived into a target (the server stops for the copy unless live)",
    actor: "operator",
    fields: "correlation_id: the backup id",
  },
  "backup.succeeded": { meaning: "the agent wrote the backup's archive; its size and sha256 are on the backup", actor: "agent", fields: "correlation_id: the backup id" },
  "backup.failed": {
    meaning: "a backup ended without an archive; nothing of it is left in the target, and the server goes back to its desired state",
    actor: "agent",
    fields: "reason: AgentRestarted, DeadlineExceeded, TargetFull, NoData, StopFailed, ServerDeleted, BackupDirNotAllowed, ...; correlation_id: the backup id",
  },
  "backup.locked": { meaning: "LockBackup: the backup is never deleted until unlocked", actor: "operator", fields: "correlation_id: the backup id" },
  "backup.unlocked": { meaning: "LockBackup with locked=false", actor: "operator", fields: "correlation_id: the backup id" },
  "backup.deleted": { meaning: "DeleteBackup removed the backup's archive from its target and the backup", actor: "operator", fields: "correlation_id: the backup id" },
  "backup.restore_requested": {
    meaning: "RestoreBackup: the server stops, its data directory is replaced by the backup's content, and it starts again if it should run",
    actor: "operator",
    fields: "correlation_id: the backup id",
  },
  "backup.restored": {
    meaning: "the agent checked the archive's sha256 and swapped its content in; the replaced data is kept as a safety copy until the server runs again",
    actor: "agent",
    fields: "correlation_id: the backup id",
  },
  "backup.restore_failed": {
    meaning: "a restore ended without replacing anything: the data directory is as it was",
    actor: "agent",
    fields: "reason: ChecksumMismatch, ArchiveMissing, UnsafeArchive, DataRootFull, AgentRestarted, DeadlineExceeded, ...; correlation_id: the backup id",
  },
  "backup.previous_kept": {
    meaning: "the safety copy a restore kept could not be removed once the server ran again; it stays (under the data root's .berth-previous) until removed by hand",
    actor: "reconciler",
  },

  // --- templates (TemplateService; docs/templates.md) ----------------------------
  "template.created": {
    meaning: "CreateTemplate recorded a new template (version 1); at start the manager creates its built-in templates that are missing (actor manager)",
    actor: "operator",
    fields: "project: the template's project, empty for a global template; correlation_id: the template id",
  },
  "template.updated": {
    meaning: "UpdateTemplate replaced a template (version + 1); servers made from it keep their rendered spec and show TemplateOutdated; at start the manager updates a built-in template whose definition changed (actor manager)",
    actor: "operator",
    fields: "correlation_id: the template id; payload: {version}",
  },
  "template.deleted": { meaning: "DeleteTemplate removed a template; servers made from it keep running their rendered spec", actor: "operator", fields: "correlation_id: the template id" },
  "template.imported": {
    meaning: "ImportTemplate converted a Pterodactyl or Pelican egg into a new template (version 1)",
    actor: "operator",
    fields: "correlation_id: the template id; payload: {format, eggVersion, unmapped: the egg's fields not taken over}",
  },

  // --- orphans (OrphanService) -------------------------------------------------
  "orphan.adopted": {
    meaning: "AdoptOrphan made a server record from an orphan container's actual configuration (docs/orphans.md)",
    actor: "operator",
    fields: "reason: the orphan kind; correlation_id: the orphan id; payload: {orphanKind, containerId, mode: same-id, bind or copy, warnings}",
  },
  "orphan.adopt_failed": {
    meaning: "the agent did not copy an adopted container's data (move_data): the server record AdoptOrphan made is removed again; the container and its directory are as they were",
    actor: "manager",
    fields: "reason: CopyFailed; correlation_id: the orphan id",
  },
  "orphan.destroyed": {
    meaning: "DestroyOrphan removed an orphan's container, data directory (only with remove_data) or stranded record",
    actor: "operator",
    fields: "reason: the orphan kind, or PartlyDestroyed; correlation_id: the orphan id; payload: {removed, kept, error}",
  },
  "server.reassigned": { meaning: "ReassignServer moved a stranded server (its host was removed) to a host that has its data directory", actor: "operator", fields: "payload: {from, to}" },

  // --- transfers and clones (ServerService.TransferServer/CloneServer; docs/data.md) ---
  "server.transfer_requested": {
    meaning: "TransferServer: the server is to move to another host through a backup target (stop, archive, verify and unpack there, start there); the source keeps its copy until then",
    actor: "operator",
    fields: "host_id: the source; correlation_id: the backup id; payload: {from, to, target}",
  },
  "server.transfer_moved": {
    meaning: "the data is archived on the source: the server's record is on the target host now, which verifies and unpacks it; the source copy is untouched",
    actor: "reconciler",
    fields: "host_id: the target; correlation_id: the backup id; payload: {from, to}",
  },
  "server.transfer_succeeded": {
    meaning: "the server is in its desired state on the target host; the source copy is removed (after keep_source_hours)",
    actor: "reconciler",
    fields: "correlation_id: the backup id; payload: {from, to, backupId}",
  },
  "server.transfer_failed": {
    meaning: "a transfer ended without moving the server: it is on its source host with its data as it was (and in its desired state there); what reached the target is removed there",
    actor: "reconciler",
    fields: "reason: BackupFailed, AgentRestarted, TargetFull, TargetHostOffline, ChecksumMismatch, StartFailed, DeadlineExceeded, ...; correlation_id: the backup id; payload: {from, to}",
  },
  "server.copy_removed": {
    meaning: "a copy of the server on another host was removed: the container and data a transfer left on its source, or what a failed transfer put on its target",
    actor: "reconciler",
    fields: "host_id: the host the copy was on; reason: TransferSourceRemoved, TransferPartialRemoved",
  },
  "server.cloned": {
    meaning: "CloneServer: a new server with the source's spec (clashing host ports moved) whose data is copied from a backup of the source",
    actor: "operator",
    fields: "correlation_id: the backup id; payload: {source, backupId}",
  },
  "server.clone_failed": {
    meaning: "a clone's data could not be copied (the source's backup or the restore failed): the clone stays Failed with no data until purged or started empty",
    actor: "reconciler",
    fields: "correlation_id: the backup id",
  },

  // --- install scripts (ServerSpec.install; docs/templates.md "Install scripts") ---
  "server.reinstall_requested": { meaning: "ReinstallServer: the install script is to run again (status.install pending) before the server's container is started", actor: "operator" },
  "install.started": { meaning: "a server's install script started in its install container (RUN_INSTALL)", actor: "reconciler", fields: "correlation_id: the command id" },
  "install.succeeded": { meaning: "a server's install script exited with code 0; the server is made and started as its desired state says", actor: "reconciler", fields: "correlation_id: the command id" },
  "install.failed": {
    meaning: "a server's install script failed (exit code other than 0, timed out, or no result in time): the server stays Failed/InstallFailed until ReinstallServer; its output is kept (GetInstallLog)",
    actor: "reconciler",
    fields: "reason: InstallFailed, or ServerDeleted (stopped because the server was deleted: pending again); correlation_id: the command id",
  },

  // --- schedules (ScheduleService; docs/schedules.md) --------------------------
  "schedule.created": { meaning: "CreateSchedule recorded a schedule; its first tick is the first after now", actor: "operator", fields: "correlation_id: the schedule id" },
  "schedule.updated": { meaning: "UpdateSchedule replaced a schedule's spec (a changed cron, time zone or enabled flag counts ticks from now on)", actor: "operator", fields: "correlation_id: the schedule id" },
  "schedule.deleted": { meaning: "DeleteSchedule removed a schedule and its run history (a run under way is cut short: ScheduleDeleted)", actor: "operator", fields: "correlation_id: the schedule id" },
  "schedule.run_started": {
    meaning: "a schedule's run began: its tick (on time, or a catch-up within the grace period) on the leading manager, or RunScheduleNow",
    actor: "schedule",
    fields: "correlation_id: the schedule id; payload: {runId, trigger, scheduledFor, servers}",
  },
  "schedule.run_succeeded": { meaning: "every task of a schedule's run succeeded (on every server not skipped)", actor: "schedule", fields: "correlation_id: the schedule id; payload: {runId, trigger, scheduledFor, targets: each server's outcome and each task's outcome and message}" },
  "schedule.run_failed": {
    meaning: "a schedule's run failed: a task failed, or the run was cut short",
    actor: "schedule",
    fields: "reason: TaskFailed, DeadlineExceeded, ManagerShutdown, ManagerRestarted, ScheduleDeleted, NoServers, RunningCheckFailed, PreviousRunUnderWay, ...; payload as schedule.run_succeeded",
  },
  "schedule.run_skipped": { meaning: "a schedule's run did nothing: only_when_running, and its server was not running", actor: "schedule", fields: "reason: NotRunning; payload as schedule.run_succeeded" },
  "schedule.ticks_missed": {
    meaning: "ticks of a schedule were not run (no manager ran then, and they are older than its grace period): one event for them all",
    actor: "schedule",
    fields: "reason: Missed; payload: {runId, count, countCapped, firstMissed, lastMissed}",
  },

  // --- saved queries (SavedQueryService; docs/explore.md) ----------------------
  "query.created": { meaning: "CreateSavedQuery recorded a saved query (shared or private, with or without an alert)", actor: "operator", fields: "correlation_id: the saved query id" },
  "query.updated": { meaning: "UpdateSavedQuery replaced a saved query's spec (a changed query or a disabled alert starts its alert's clock again)", actor: "operator", fields: "correlation_id: the saved query id; payload: {version}" },
  "query.deleted": { meaning: "DeleteSavedQuery removed a saved query (its saved_query alert resolves at the next evaluation)", actor: "operator", fields: "correlation_id: the saved query id" },

  // --- hosts and access --------------------------------------------------------
  "host.enrolled": { meaning: "an agent enrolled with a one-time token; a new host exists", actor: "agent", fields: "correlation_id: the enrollment token id" },
  "host.connected": { meaning: "the host's agent connected and sent its full inventory", actor: "agent" },
  "host.disconnected": { meaning: "the host's agent stream ended; its servers become Unknown", actor: "agent" },
  "host.docker_unreachable": { meaning: "the host's agent cannot reach its Docker engine", actor: "agent" },
  "host.docker_reachable": { meaning: "the host's agent reaches its Docker engine again", actor: "agent" },
  "host.reports_refused": {
    meaning: "the host's agent reported more than berth stores for one host (per-host caps), or ids it does not accept; those reports were not stored (at most one event per host per 10 minutes, with the counts per reason)",
    actor: "agent",
  },
  "host.resync_requested": {
    meaning: "ResyncHost on a manager other than the one holding the host's agent stream: that manager asks the agent for a full inventory",
    actor: "operator",
  },
  "host.removed": { meaning: "RemoveHost: the host's credential is revoked and its stream closed", actor: "operator" },
  "host.cordoned": { meaning: "CordonHost: no new server is placed on the host (create, clone, transfer, drain); its servers keep running", actor: "operator" },
  "host.capacity_set": { meaning: "SetHostCapacity: how much of the host servers' CPU and memory limits may take (overcommit ratios, reserve) changed", actor: "operator" },
  "host.uncordoned": { meaning: "UncordonHost: the host takes new servers again; a drain under way ends (transfers under way finish, no new ones start)", actor: "operator" },
  "host.drain_started": { meaning: "DrainHost: the host is cordoned and the leader transfers its servers to other hosts, a few at a time (docs/data.md)", actor: "operator" },
  "host.drain_updated": { meaning: "DrainHost on a host already draining: new parallel/target settings; servers that failed are tried again", actor: "operator" },
  "host.drain_server_failed": {
    meaning: "a drain could not move one server (its transfer did not start, ended failed, or no host has its ports free); the drain goes on without it, DrainHost again retries it",
    actor: "manager",
  },
  "host.drain_finished": { meaning: "a drain has nothing left to move: the summary says what moved, what failed and what soft-deleted servers stay; the host stays cordoned", actor: "manager" },
  "enrollment.created": { meaning: "CreateEnrollmentToken issued a one-time enrollment token", actor: "operator", fields: "correlation_id: the enrollment token id" },
  "token.created": { meaning: "an operator token was created (API, CLI, or the first start's admin token)", actor: "operator", fields: "correlation_id: the token id" },
  "token.revoked": { meaning: "an operator token was revoked; its open streams end", actor: "operator", fields: "correlation_id: the token id" },

  // --- alerts and notifications ------------------------------------------------
  "alert.fired": { meaning: "an alert rule's condition holds (for its threshold): a new firing alert", actor: "alerts", fields: "correlation_id: the alert id; reason: the rule" },
  "alert.severity_changed": { meaning: "a firing alert moved to another stage of its rule (crash_loop: warning while the server crashes and is restarted, critical at Failed/CrashLoop): the same alert, its acknowledgement kept", actor: "alerts", fields: "correlation_id: the alert id; reason: the rule; payload: {rule, subject, from, to}" },
  "alert.resolved": { meaning: "an alert's condition cleared; the alert is resolved", actor: "alerts", fields: "correlation_id: the alert id; reason: the rule" },
  "alert.acknowledged": { meaning: "AcknowledgeAlert: an operator took care of an alert", actor: "operator", fields: "correlation_id: the alert id" },
  "alert.muted": { meaning: "MuteAlert: an alert's notifications are silenced until a time (or unmuted)", actor: "operator", fields: "correlation_id: the alert id; payload: {mutedUntil}" },
  "webhook.delivered": { meaning: "a webhook receiver accepted an alert notification (2xx)", actor: "alerts", fields: "correlation_id: the alert id; payload: {url, attempt, status, delivery}" },
  "webhook.failed": {
    meaning: "a webhook delivery attempt failed; it is retried with backoff until the last attempt",
    actor: "alerts",
    fields: "correlation_id: the alert id; payload: {url, attempt, status or error, willRetry, delivery}",
  },
} as const satisfies Record<string, EventTypeInfo>;

export type EventType = keyof typeof EVENT_CATALOGUE;

export function isCatalogued(type: string): type is EventType {
  return Object.hasOwn(EVENT_CATALOGUE, type);
}

/** The catalogue as the Markdown table in docs/events.md, grouped by the part before the dot. */
export function renderCatalogueMarkdown(): string {
  const lines = ["| type | actor | meaning |", "| --- | --- | --- |"];
  for (const [type, info] of Object.entries(EVENT_CATALOGUE) as [string, EventTypeInfo][]) {
    const more = info.fields ? ` (${info.fields})` : "";
    lines.push(`| \`${type}\` | ${info.actor} | ${info.meaning}${more} |`);
  }
  return lines.join("\n") + "\n";
}
