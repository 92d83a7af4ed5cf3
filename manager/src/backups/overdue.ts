/**
 * The servers whose BackupPolicy asks for the `backup_overdue` alert
 * (alert_after_hours > 0), each with its newest successful backup: what the
 * rule (alerts/rules.ts overdueConditions) reads on every evaluation, every
 * few seconds, so it is kept in memory: a fleet of 100,000 servers must not
 * be listed with its backups at each run. Read once at start with one query
 * (Store.backupPolicyFacts: only the servers with such a policy), then kept
 * current from the ledger: an event that can change a server's newest
 * success (`backup.succeeded`, `backup.deleted`) or its policy, name, host or
 * liveness (`server.created`, `.updated`, `.deleted`, `.restored`,
 * `.purge_requested`, `.purged`, `.reassigned`), committed here or, on
 * PostgreSQL, by another manager (store.onCommit hears both), makes it read
 * that one server again. A resync of the change feed reads everything again.
 */
import type { BackupPolicyView } from "../alerts/rules.js";
import type { Logger } from "../log.js";
import type { Committed, Store } from "../store/store.js";
import { CommitFollower } from "../ledger/commit-follower.js";

const EVENTS = new Set([
  "backup.succeeded",
  "backup.deleted",
  "server.created",
  "server.updated",
  "server.deleted",
  "server.restored",
  "server.purge_requested",
  "server.purged",
  "server.reassigned",
]);

export class BackupPolicies extends CommitFollower {
  /** serverId → its policy and newest success, for the servers whose policy sets alert_after_hours. */
  private readonly views = new Map<string, BackupPolicyView>();
  /**
   * While a full read runs: the servers a per-server read updated meanwhile.
   * Their views are newer than what the full read saw, so it keeps them.
   */
  private refreshedDuringLoad: Set<string> | undefined;

  constructor(
    private readonly store: Pick<Store, "backupPolicyFacts" | "onCommit">,
    log: Logger,
  ) {
    super(store, log, "the backup_overdue alert");
  }

  /** The servers whose policy sets alert_after_hours (overdue or not: the rule decides against its clock). */
  policies(): BackupPolicyView[] {
    return [...this.views.values()];
  }

  protected heard(c: Committed): void {
    const servers = new Set<string>();
    for (const e of c.events) if (EVENTS.has(e.type) && e.serverId) servers.add(e.serverId);
    for (const id of servers) void this.refresh(id);
  }

  /** Reads `serverId`'s policy and newest success again (after any read already running for it). */
  refresh(serverId: string): Promise<void> {
    return this.perServer(serverId, async () => {
      const [facts] = await this.store.backupPolicyFacts(serverId);
      if (facts) this.views.set(serverId, facts);
      else this.views.delete(serverId);
      this.refreshedDuringLoad?.add(serverId);
    });
  }

  protected async loadAll(): Promise<void> {
    const refreshed = new Set<string>();
    this.refreshedDuringLoad = refreshed;
    try {
      const all = await this.store.backupPolicyFacts();
      for (const id of this.views.keys()) if (!refreshed.has(id)) this.views.delete(id);
      for (const f of all) if (!refreshed.has(f.serverId)) this.views.set(f.serverId, f);
    } finally {
      if (this.refreshedDuringLoad === refreshed) this.refreshedDuringLoad = undefined;
    }
  }
}
