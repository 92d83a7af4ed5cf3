import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, realpath, rename, rm, statfs, unlink } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { finished } from "node:stream/promises";
import type { Readable, Writable } from "node:stream";
import { ArchiveError } from "./archive.js";

export type BackupDirErrorReason =
  /** The target directory is not one of the agent's backup roots (--backup-dir) or under one. */
  | "BackupDirNotAllowed"
  /** The archive key is not a plain relative path of at most MAX_KEY_PARTS names. */
  | "BadKey";

export class BackupDirError extends Error {
  override readonly name = "BackupDirError";
  constructor(
    readonly reason: BackupDirErrorReason,
    message: string,
  ) {
    super(message);
  }
}

/** "srv_abc/bk_xyz.tar.gz" needs two; room for a prefix or two, never a tree. */
const MAX_KEY_PARTS = 4;
/** Backups are a copy of every server's data: root only, like the data root. */
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** `<archive>.partial-<hex>`: what writeAtomic writes before the rename, and all sweepPartials deletes. */
const PARTIAL_RE = /\.partial-[0-9a-f]+$/;

/**
 * The host directories an agent writes backup archives into, and nothing
 * else: like the data root (data-root.ts), a manager names a target
 * directory and a key, and the agent refuses any that is not one of the
 * roots it was started with (--backup-dir) or under one, lexically and
 * after resolving symlinks. Roots are created on first write, mode 0700.
 */
export class BackupDirs {
  readonly roots: readonly string[];

  constructor(roots: readonly string[]) {
    for (const r of roots) {
      if (!isAbsolute(r)) throw new Error(`backup directory "${r}" must be an absolute path (--backup-dir)`);
    }
    this.roots = roots.map((r) => resolve(r));
  }

  /**
   * The archive path for target directory `targetPath` and `key` (e.g.
   * "srv_abc/bk_xyz.tar.gz"). Throws BackupDirError "BackupDirNotAllowed"
   * when the target is not one of the roots or under one (also after
   * resolving the symlinks of what exists of the path), "BadKey" for a key
   * that is empty, absolute, holds `..`, `.`, an empty component, NUL or a
   * backslash, names a partial file, or has more than MAX_KEY_PARTS parts.
   */
  async resolve(targetPath: string, key: string): Promise<string> {
    const parts = checkKey(key);
    const { root, target } = this.allowedTarget(targetPath);
    const path = join(target, ...parts);
    const [realRoot, realPath] = await Promise.all([realpathOfExisting(root), realpathOfExisting(path)]);
    if (!inside(realRoot, realPath)) {
      throw new BackupDirError(
        "BackupDirNotAllowed",
        `refusing backup path ${path}: it resolves to ${realPath} through a symlink, outside the backup directory ${root}`,
      );
    }
    return path;
  }

  /**
   * Writes an archive: `write` streams into `<path>.partial-<random>`
   * (created 0600, never over anything), which is then fsynced, renamed to
   * the final path (replacing an older archive of the same key) and its
   * directory fsynced, so a crash leaves either the whole archive or a
   * partial file sweepPartials removes. When `write` rejects (an abort
   * included) the partial file is removed and the error passed on. Answers
   * what `write` answered.
   */
  async writeAtomic<T>(targetPath: string, key: string, write: (out: Writable) => Promise<T>): Promise<T> {
    const path = await this.resolve(targetPath, key);
    await this.makeDirs(dirname(path));
    const partial = `${path}.partial-${randomBytes(8).toString("hex")}`;
    // "wx": O_EXCL, so never over anything (a symlink included). The stream owns its fd and
    // closes it once finished or destroyed; fsync goes through a second fd of the same file.
    const out = createWriteStream(partial, { flags: "wx", mode: FILE_MODE });
    let done = false;
    try {
      const result = await write(out);
      if (!out.writableEnded) out.end();
      await finished(out);
      await syncPath(partial);
      await rename(partial, path);
      await syncPath(dirname(path));
      done = true;
      return result;
    } finally {
      if (!done) {
        out.destroy();
        await finished(out).catch(() => {}); // closed: no write of ours lands after the removal
        await rm(partial, { force: true });
      }
    }
  }

  /** Removes an archive; one already gone is fine. */
  async remove(targetPath: string, key: string): Promise<void> {
    const path = await this.resolve(targetPath, key);
    try {
      await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  /** The archive's bytes; ArchiveError "ArchiveMissing" when it does not exist. */
  async open(targetPath: string, key: string): Promise<Readable> {
    const path = await this.resolve(targetPath, key);
    try {
      const fh = await open(path, "r");
      return fh.createReadStream();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new ArchiveError("ArchiveMissing", `archive ${path} does not exist`);
      throw err;
    }
  }

  /**
   * Removes every `*.partial-*` file under every root (a crash's leftovers:
   * call it at agent start, when no backup runs). Never follows symlinks.
   * Answers how many it removed.
   */
  async sweepPartials(): Promise<number> {
    let removed = 0;
    const sweep = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        throw err;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await sweep(p);
        else if (e.isFile() && PARTIAL_RE.test(e.name)) {
          await unlink(p).then(
            () => removed++,
            (err: NodeJS.ErrnoException) => {
              if (err.code !== "ENOENT") throw err; // ENOENT: a root nested in another, swept twice
            },
          );
        }
      }
    };
    for (const root of this.roots) await sweep(root);
    return removed;
  }

  /** Free bytes (for an unprivileged user, as df shows) on the file system that holds, or will hold, `targetPath`. */
  async free(targetPath: string): Promise<number> {
    const { target } = this.allowedTarget(targetPath);
    let p = target;
    for (;;) {
      try {
        const s = await statfs(p);
        return s.bavail * s.bsize;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT" || dirname(p) === p) throw err;
        p = dirname(p);
      }
    }
  }

  /** The root holding `targetPath` (lexically), and the target resolved. */
  private allowedTarget(targetPath: string): { root: string; target: string } {
    const target = isAbsolute(targetPath) && !targetPath.includes("\0") ? resolve(targetPath) : undefined;
    const root = target === undefined ? undefined : this.roots.find((r) => inside(r, target));
    if (root === undefined || target === undefined) {
      const allowed = this.roots.length > 0 ? `it allows ${this.roots.join(", ")}` : "it allows none";
      throw new BackupDirError(
        "BackupDirNotAllowed",
        `backup target ${JSON.stringify(targetPath)} is not a backup directory of this agent (${allowed}); ` +
          `start the agent with --backup-dir <absolute path> to allow one`,
      );
    }
    return { root, target };
  }

  /** mkdir -p with DIR_MODE whatever the umask (a root this creates included). */
  private async makeDirs(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true, mode: DIR_MODE });
    if (first === undefined) return;
    for (let d = dir; ; d = dirname(d)) {
      await chmod(d, DIR_MODE);
      if (d === first) break;
    }
  }
}

function checkKey(key: string): string[] {
  const parts = key.split("/");
  const bad =
    key === "" ? "it is empty"
    : key.includes("\0") ? "it holds a NUL byte"
    : key.includes("\\") ? "it holds a backslash"
    : key.startsWith("/") ? "it is absolute"
    : parts.some((p) => p === "" || p === "." || p === "..") ? "it has an empty, '.' or '..' component"
    : parts.length > MAX_KEY_PARTS ? `it has more than ${MAX_KEY_PARTS} components`
    : key.includes(".partial-") ? "it names a partial file (.partial-)"
    : undefined;
  if (bad) throw new BackupDirError("BadKey", `refusing backup key ${JSON.stringify(key)}: ${bad}; a key is a relative path like srv_abc/bk_xyz.tar.gz`);
  return parts;
}

/** `p` is `root` or below it. */
function inside(root: string, p: string): boolean {
  const r = relative(root, p);
  return r === "" || (r !== ".." && !r.startsWith("../") && !isAbsolute(r));
}

/** realpath of the longest existing prefix of `p`, with the rest appended (a missing file or directory is fine). */
async function realpathOfExisting(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT" || dirname(p) === p) throw err;
    // A dangling symlink is ENOENT too: refuse to treat it as "missing" when it is a link.
    const isLink = await lstat(p).then(
      (st) => st.isSymbolicLink(),
      () => false,
    );
    if (isLink) throw new BackupDirError("BackupDirNotAllowed", `refusing backup path ${p}: it is a symlink to something that does not exist`);
    return join(await realpathOfExisting(dirname(p)), basename(p));
  }
}

/** fsync a file or directory (a directory: so a rename in it survives a crash). */
async function syncPath(p: string): Promise<void> {
  const fh = await open(p, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
