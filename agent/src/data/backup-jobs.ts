/**
 * The agent's side of backups and restores (BACKUP_DATA, RESTORE_DATA,
 * REMOVE_BACKUP, DISCARD_PREVIOUS_DATA): archives a server's data directory
 * into a backup directory, checks and unpacks one back, and reports progress.
 * Every job stops at its command's deadline (the manager gives up then too),
 * and a job that fails leaves nothing behind: no partial archive in the
 * target (BackupDirs.writeAtomic), no half-restored data (DataRoot.restoreFrom).
 */
import type { Command } from "@berth/proto/berth/v1/agent_pb.js";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { compressionForKey, createArchive, extractArchive, openArchive, type ArchiveStats } from "./archive.js";
import { S3Error, S3Target, type S3Location } from "./s3-target.js";
import type { BackupDirs } from "./backup-dir.js";
import { DataPathError, type DataRoot } from "./data-root.js";

/** One progress report of a running job (sent as CommandProgress). */
export interface JobProgress {
  commandId: string;
  serverId: string;
  stage: "Copying" | "Restoring";
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

  /** BACKUP_DATA: the server's data directory as a tar.zst (tar.gz for a key not ending in .tar.zst) at the job's location. */
  async backup(cmd: Command): Promise<ArchiveStats> {
    const job = this.job(cmd);
    const source = await this.data.safePathFor(cmd.serverId);
    if (!(await this.data.check(cmd.serverId).then((c) => c.exists))) throw new JobError("NoData", `the data directory ${source} does not exist; there is nothing to back up`);
    return this.withDeadline(cmd, "TargetFull", async (signal) => {
      const report = this.reporter(cmd, "Copying");
      const write = (out: Writable) => createArchive(source, out, { ignore: job.ignore, compression: compressionForKey(job.key), signal, onProgress: (p) => report(p.bytesDone, p.bytesTotal, p.files) });
      if (job.s3) return this.withS3(job.s3, (t) => t.upload(job.key, write, { signal }));
      return this.dirs.writeAtomic(job.directory, job.key, write);
    });
  }

  /**
   * RESTORE_DATA: unpacks the archive into a fresh directory, checking its
   * sha256 on the way through, and swaps that in for the data directory
   * only if the sha256 matched. An archive in S3 is downloaded into the data
   * root's work directory first (a cut download fails before anything is unpacked).
   */
  async restore(cmd: Command): Promise<{ kept: boolean }> {
    const job = this.job(cmd);
    if (!/^[0-9a-f]{64}$/.test(job.sha256)) throw new JobError("BadCommand", "restore-data needs the archive's sha256");
    return this.withDeadline(cmd, "DataRootFull", async (signal) => {
      let path: string;
      let download: string | undefined;
      if (job.s3) {
        download = await this.data.workFile(`${cmd.dataDir}.download`);
        const s3 = job.s3;
        await this.withS3(s3, async (t) => pipeline(await t.download(job.key, { signal }), createWriteStream(download!, { mode: 0o600 }), { signal }));
        path = download;
      } else {
        path = await this.dirs.resolve(job.directory, job.key);
      }
      try {
        const restoring = this.reporter(cmd, "Restoring");
        return await this.data.restoreFrom(cmd.serverId, cmd.dataDir, async (dest) => {
          // The sha256 is checked on the way through: the fresh directory is swapped in only if it matches.
          await extractArchive(await openArchive(path), dest, { signal, sha256: job.sha256, bytesTotal: job.rawBytes, onProgress: (p) => restoring(p.bytesDone, p.bytesTotal, p.files) });
        });
      } finally {
        if (download) await rm(download, { force: true });
      }
    });
  }

  /** REMOVE_BACKUP: the archive is gone (idempotent); in S3 also a multipart upload of it left by an interrupted backup. */
  async removeArchive(cmd: Command): Promise<void> {
    const job = this.job(cmd);
    if (job.s3) {
      await this.withS3(job.s3, async (t) => {
        await t.abortStaleUploads(0, job.key).catch((err: unknown) => {
          // A server that cannot list uploads (s3rver) has nothing this could remove.
          if (!(err instanceof S3Error && /NotImplemented|not implemented/i.test(err.message))) throw err;
        });
        await t.remove(job.key);
      });
      return;
    }
    await this.dirs.remove(job.directory, job.key);
  }

  /** Runs `fn` with a client for `loc`, closed afterwards. */
  private async withS3<T>(loc: S3Location, fn: (t: S3Target) => Promise<T>): Promise<T> {
    const t = new S3Target(loc);
    try {
      return await fn(t);
    } finally {
      t.destroy();
    }
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

  private job(cmd: Command): { directory: string; s3?: S3Location; key: string; ignore: string[]; sha256: string; rawBytes: number } {
    const b = cmd.backup;
    const loc = b?.location?.kind;
    if (!b || !loc?.case || !b.key) throw new JobError("BadCommand", "the command names no backup location (an agent older than the manager's backup targets?)");
    const common = { key: b.key, ignore: [...b.ignore], sha256: b.sha256, rawBytes: Number(b.rawBytes) };
    if (loc.case === "directory") return { ...common, directory: loc.value };
    const { targetId: _id, ...s3 } = loc.value;
    return { ...common, directory: "", s3 };
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
