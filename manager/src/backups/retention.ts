/**
 * Backup retention: each server's BackupPolicy (ServerSpec.backup_policy)
 * says which of its successful backups are kept; the others are removed (the
 * archive through an agent, then the backup: api/backup-removal.ts). Runs on
 * the leader, every few minutes. A backup whose removal cannot happen now
 * (its host offline, on another manager) is tried again next time.
 */
import type { BackupPolicy } from "@berth/proto/berth/v1/server_pb.js";
import type { BackupRecord } from "../domain/records.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";
import type { BackupRemoval } from "../api/backup-removal.js";
import { forEachBackupPage } from "./pages.js";

const DAY_MS = 86_400_000;
/** A server's successful backups looked at per run (a policy keeps at most 1,000 by count). */
const PER_SERVER = 2_000;

/**
 * Which of one server's successful backups (newest first) its policy lets
 * go: a backup is kept when it is one of the newest `keepLast` OR newer than
 * `keepDays` days (each rule only when set, as restic's --keep-last and
 * --keep-within); the newest one and locked ones are always kept. No rule set:
 * nothing goes.
 */
export function retentionVictims(succeeded: readonly BackupRecord[], policy: Pick<BackupPolicy, "keepLast" | "keepDays"> | undefined, now: number): BackupRecord[] {
  if (!policy || (policy.keepLast === 0 && policy.keepDays === 0)) return [];
  return succeeded.filter((b, i) => {
    if (i === 0 || b.locked) return false;
    const byCount = policy.keepLast > 0 && i < policy.keepLast;
    const byAge = policy.keepDays > 0 && b.createdAt > now - policy.keepDays * DAY_MS;
    return !byCount && !byAge;
  });
}

export interface BackupRetentionDeps {
  store: Store;
  removal: Pick<BackupRemoval, "remove">;
  log: Logger;
  now?: () => number;
  /** Default 10 minutes. */
  intervalMs?: number;
}

export class BackupRetention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private readonly now: () => number;

  constructor(private readonly deps: BackupRetentionDeps) {
    this.now = deps.now ?? Date.now;
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      if (this.running) return;
      this.running = this.runOnce()
        .catch((err: unknown) => this.deps.log.error({ err }, "backup retention failed; trying again at the next run"))
        .finally(() => (this.running = undefined));
    };
    this.timer = setInterval(tick, this.deps.intervalMs ?? 600_000);
    this.timer.unref();
    tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass over every server with successful backups: removes what its policy lets go. */
  async runOnce(): Promise<{ removed: number; failed: number }> {
    const { store, removal, log } = this.deps;
    const servers = new Set<string>();
    await forEachBackupPage(store, { states: ["succeeded"] }, (page) => {
      for (const b of page) servers.add(b.serverId);
    });
    let removed = 0;
    let failed = 0;
    for (const serverId of servers) {
      // A purged server's policy is gone with it: its backups stay until deleted.
      const policy = (await store.getServer(serverId))?.spec.backupPolicy;
      if (!policy) continue;
      const succeeded = await store.listBackups({ serverId, states: ["succeeded"], limit: PER_SERVER });
      for (const b of retentionVictims(succeeded, policy, this.now())) {
        try {
          await removal.remove(b, "retention", `retention: keep_last=${policy.keepLast}, keep_days=${policy.keepDays}`);
          removed++;
        } catch (err) {
          failed++;
          log.warn({ backup: b.id, server: serverId, err: err instanceof Error ? err.message : String(err) }, "retention could not remove a backup now; trying again at the next run");
        }
      }
    }
    if (removed > 0 || failed > 0) log.info({ removed, failed }, "backup retention");
    return { removed, failed };
  }
}
