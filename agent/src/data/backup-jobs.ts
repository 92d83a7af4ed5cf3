/**
 * The agent's side of backups and restores (BACKUP_DATA, RESTORE_DATA,
 * REMOVE_BACKUP, DISCARD_PREVIOUS_DATA): archives a server's data directory
 * into a backup directory, checks and unpacks one back, and reports progress.
 * Every job stops at its command's deadline (the manager gives up then too),
 * and a job that fails leaves nothing behind: no partial archive in the
 * target (BackupDirs.writeAtomic), no half-restored data (DataRoot.restoreFrom).
 */
import type { Command } from "@berth/proto/berth/v1/agent_pb.js";
import { createArchive, extractArchive, verifyArchive, type ArchiveStats } from "./archive.js";
import type { BackupDirs } from "./backup-dir.js";
import { DataPathError, type DataRoot } from "./data-root.js";

/** One progress report of a running job (sent as CommandProgress). */
export interface JobProgress {
  commandId: string;
  serverId: string;
  stage: "Copying" | "Verifying" | "Restoring";
  bytesDone: number;
  bytesTotal: number;
  files: number;
}

/** At most one report per job this often (plus the first). */
export const PROGRESS_EVERY_MS = 1000;

/** A job's failure, with the CamelCase reason the manager records. */
export class JobError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export class BackupJobs {
  constructor(
    private readonly data: DataRoot,
    private readonly dirs: BackupDirs,
    private readonly onProgress: (p: JobProgress) => void,
    /** The manager's clock (command deadlines are manager time). */
    private readonly managerNow: () => number = Date.now,
  ) {}

  /** Where the agent may write archives (Hello.backup_dirs). */
  get roots(): readonly string[] {
    return this.dirs.roots;
  }

  /** BACKUP_DATA: the server's data directory as a tar.gz at the job's location. */
  async backup(cmd: Command): Promise<ArchiveStats> {
    const job = this.job(cmd);
    const source = await this.data.safePathFor(cmd.serverId);
    if (!(await this.data.check(cmd.serverId).then((c) => c.exists))) throw new JobError("NoData", `the data directory ${source} does not exist; there is nothing to back up`);
    return this.withDeadline(cmd, "TargetFull", async (signal) => {
      const report = this.reporter(cmd, "Copying");
      return this.dirs.writeAtomic(job.directory, job.key, (out) =>
        createArchive(source, out, { ignore: job.ignore, signal, onProgress: (p) => report(p.bytesDone, p.bytesTotal, p.files) }),
      );
    });
  }

  /** RESTORE_DATA: checks the archive's sha256, then swaps its content in for the data directory. */
  async restore(cmd: Command): Promise<{ kept: boolean }> {
    const job = this.job(cmd);
    if (!/^[0-9a-f]{64}$/.test(job.sha256)) throw new JobError("BadCommand", "restore-data needs the archive's sha256");
    const path = await this.dirs.resolve(job.directory, job.key);
    return this.withDeadline(cmd, "DataRootFull", async (signal) => {
      const verifying = this.reporter(cmd, "Verifying");
      await verifyArchive(path, job.sha256, { signal, onProgress: (done, total) => verifying(done, total, 0) });
      const restoring = this.reporter(cmd, "Restoring");
      return this.data.restoreFrom(cmd.serverId, cmd.dataDir, async (dest) => {
        await extractArchive(await this.dirs.open(job.directory, job.key), dest, { signal, bytesTotal: job.rawBytes, onProgress: (p) => restoring(p.bytesDone, p.bytesTotal, p.files) });
      });
    });
  }

  /** REMOVE_BACKUP: the archive is gone (idempotent). */
  async removeArchive(cmd: Command): Promise<void> {
    const job = this.job(cmd);
    await this.dirs.remove(job.directory, job.key);
  }

  /** DISCARD_PREVIOUS_DATA: a restore's safety copy is gone (idempotent). */
  async discardPrevious(cmd: Command): Promise<void> {
    if (!cmd.dataDir.startsWith(`${cmd.serverId}.`)) throw new DataPathError(`refusing to discard ${JSON.stringify(cmd.dataDir)}: not a safety copy of ${cmd.serverId}`);
    await this.data.discardPrevious(cmd.dataDir);
  }

  /** Removes what an agent that stopped mid-job left (called at start: no job runs then). */
  async sweep(): Promise<number> {
    await this.data.sweepRestoreWork();
    return this.dirs.sweepPartials();
  }

  private job(cmd: Command): { directory: string; key: string; ignore: string[]; sha256: string; rawBytes: number } {
    const b = cmd.backup;
    if (!b || b.location?.kind.case !== "directory" || !b.key) throw new JobError("BadCommand", "the command names no backup location (an agent older than the manager's backup targets?)");
    return { directory: b.location.kind.value, key: b.key, ignore: [...b.ignore], sha256: b.sha256, rawBytes: Number(b.rawBytes) };
  }

  /** Runs `fn` with a signal that aborts at the command's deadline; an abort is DeadlineExceeded. */
  private async withDeadline<T>(cmd: Command, fullReason: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const deadline = cmd.deadline ? Number(cmd.deadline.seconds) * 1000 + Math.floor(cmd.deadline.nanos / 1e6) : 0;
    const ac = new AbortController();
    const timer = deadline > 0 ? setTimeout(() => ac.abort(), Math.max(0, deadline - this.managerNow())) : undefined;
    try {
      return await fn(ac.signal);
    } catch (err) {
      if (ac.signal.aborted) throw new JobError("DeadlineExceeded", `stopped at the command's deadline (${new Date(deadline).toISOString()}); nothing of it was kept`);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOSPC" || code === "EDQUOT") throw new JobError(fullReason, `no space left: ${(err as Error).message}; nothing of it was kept`);
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** A progress callback for one stage of `cmd`, throttled to PROGRESS_EVERY_MS. */
  private reporter(cmd: Command, stage: JobProgress["stage"]): (done: number, total: number, files: number) => void {
    let last = 0;
    return (bytesDone, bytesTotal, files) => {
      const now = Date.now();
      if (now - last < PROGRESS_EVERY_MS && bytesDone < bytesTotal) return;
      last = now;
      this.onProgress({ commandId: cmd.id, serverId: cmd.serverId, stage, bytesDone, bytesTotal, files });
    };
  }
}
