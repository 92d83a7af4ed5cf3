/**
 * Which servers' newest finished backup failed: what the `backup_failed`
 * alert rule reads (alerts/rules.ts backupConditions) on every evaluation,
 * so it is kept in memory instead of scanning the backups each time. Read
 * once from the store at start, then kept current from the ledger: each
 * `backup.succeeded`, `backup.failed` or `backup.deleted` committed (here or,
 * on PostgreSQL, by another manager) makes it read that server's newest
 * finished backup again. A resync of the change feed reads everything again.
 */
import type { BackupFailureView } from "../alerts/rules.js";
import type { Logger } from "../log.js";
import type { BackupRecord } from "../domain/records.js";
import type { Committed, Store } from "../store/store.js";
import { forEachBackupPage } from "./pages.js";
import { CommitFollower } from "../ledger/commit-follower.js";

const EVENTS = new Set(["backup.succeeded", "backup.failed", "backup.deleted"]);

export class BackupHealth extends CommitFollower {
  /** serverId → its newest finished backup, when that one failed. */
  private readonly failed = new Map<string, BackupFailureView>();

  constructor(
    private readonly store: Pick<Store, "listBackups" | "onCommit">,
    log: Logger,
  ) {
    super(store, log, "the backup_failed alert");
  }

  /** The servers whose newest finished backup failed. */
  failures(): BackupFailureView[] {
    return [...this.failed.values()];
  }

  protected heard(c: Committed): void {
    for (const e of c.events) if (EVENTS.has(e.type) && e.serverId) void this.refresh(e.serverId);
  }

  /** Reads `serverId`'s newest finished backup again (after any read already running for it). */
  refresh(serverId: string): Promise<void> {
    return this.perServer(serverId, async () => {
      const [newest] = await this.store.listBackups({ serverId, states: ["succeeded", "failed"], limit: 1 });
      this.note(serverId, newest);
    });
  }

  private note(serverId: string, newest: BackupRecord | undefined): void {
    if (newest?.state === "failed") this.failed.set(serverId, failureView(newest));
    else this.failed.delete(serverId);
  }

  /** Every server's newest finished backup, newest first across all: the first seen per server wins. */
  protected async loadAll(): Promise<void> {
    const seen = new Set<string>();
    const failed = new Map<string, BackupFailureView>();
    await forEachBackupPage(this.store, { states: ["succeeded", "failed"] }, (page) => {
      for (const b of page) {
        if (seen.has(b.serverId)) continue;
        seen.add(b.serverId);
        if (b.state === "failed") failed.set(b.serverId, failureView(b));
      }
    });
    this.failed.clear();
    for (const [k, v] of failed) this.failed.set(k, v);
  }
}

function failureView(b: BackupRecord): BackupFailureView {
  return { serverId: b.serverId, serverName: b.serverName, project: b.project, hostId: b.hostId, backupId: b.id, reason: b.reason, message: b.message };
}
