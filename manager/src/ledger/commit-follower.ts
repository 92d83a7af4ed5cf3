/**
 * An in-memory view the alert rules read on every evaluation, kept current
 * from the store's commits instead of scanning the store each time: read
 * whole at start and after a resync of the change feed (anything may have
 * been missed), and per server in between, from the events of each batch
 * committed here or, on PostgreSQL, by another manager (store.onCommit hears
 * both). Used by backups/health.ts, backups/overdue.ts and transfers/health.ts.
 */
import type { Logger } from "../log.js";
import type { Committed, Store } from "../store/store.js";

export abstract class CommitFollower {
  /** Reads in flight per server, so two never race (the later one runs after). */
  private readonly pending = new Map<string, Promise<void>>();
  private unsubscribe: (() => void) | undefined;

  protected constructor(
    private readonly commits: Pick<Store, "onCommit">,
    protected readonly log: Logger,
    /** What the view is for, in log lines: "the backup_failed alert". */
    private readonly purpose: string,
  ) {}

  /** Reads everything once and follows the commits from then on. */
  async start(): Promise<void> {
    this.unsubscribe ??= this.commits.onCommit((c) => {
      if (c.resync) void this.loadAll().catch((err: unknown) => this.log.warn({ err }, `could not read everything again after a resync; ${this.purpose} may be stale until the next one`));
      else this.heard(c);
    });
    await this.loadAll();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Everything, read again (start, resync). */
  protected abstract loadAll(): Promise<void>;

  /** One committed batch (not a resync). */
  protected abstract heard(c: Committed): void;

  /** Runs `read` for `serverId` after any read already running for it; a failure is logged, never thrown. */
  protected perServer(serverId: string, read: () => Promise<void>): Promise<void> {
    const before = this.pending.get(serverId) ?? Promise.resolve();
    const run = before
      .then(read)
      .catch((err: unknown) => this.log.warn({ err, server: serverId }, `could not read a server again; ${this.purpose} may be stale`))
      .finally(() => {
        if (this.pending.get(serverId) === run) this.pending.delete(serverId);
      });
    this.pending.set(serverId, run);
    return run;
  }
}
