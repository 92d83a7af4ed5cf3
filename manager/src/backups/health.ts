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

const EVENTS = new Set(["backup.succeeded", "backup.failed", "backup.deleted"]);

export class BackupHealth {
  /** serverId → its newest finished backup, when that one failed. */
  private readonly failed = new Map<string, BackupFailureView>();
  /** Reads in flight per server, so two never race (the later one runs after). */
  private readonly pending = new Map<string, Promise<void>>();
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly store: Pick<Store, "listBackups" | "onCommit">,
    private readonly log: Logger,
  ) {}

  /** Reads the backups once and follows the ledger from then on. */
  async start(): Promise<void> {
    this.unsubscribe ??= this.store.onCommit((c) => this.heard(c));
    await this.loadAll();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** The servers whose newest finished backup failed. */
  failures(): BackupFailureView[] {
    return [...this.failed.values()];
  }

  private heard(c: Committed): void {
    if (c.resync) {
      void this.loadAll().catch((err: unknown) => this.log.warn({ err }, "could not read backups again after a resync; the backup alert may be stale until the next one"));
      return;
    }
    for (const e of c.events) if (EVENTS.has(e.type) && e.serverId) this.refresh(e.serverId);
  }

  /** Reads `serverId`'s newest finished backup again (after any read already running for it). */
  refresh(serverId: string): Promise<void> {
    const before = this.pending.get(serverId) ?? Promise.resolve();
    const run = before
      .then(async () => {
        const [newest] = await this.store.listBackups({ serverId, states: ["succeeded", "failed"], limit: 1 });
        this.note(serverId, newest);
      })
      .catch((err: unknown) => this.log.warn({ err, server: serverId }, "could not read a server's backups; the backup alert may be stale"))
      .finally(() => {
        if (this.pending.get(serverId) === run) this.pending.delete(serverId);
      });
    this.pending.set(serverId, run);
    return run;
  }

  private note(serverId: string, newest: BackupRecord | undefined): void {
    if (newest?.state === "failed") this.failed.set(serverId, failureView(newest));
    else this.failed.delete(serverId);
  }

  /** Every server's newest finished backup, newest first across all: the first seen per server wins. */
  private async loadAll(): Promise<void> {
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
