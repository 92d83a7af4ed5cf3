import { execFile } from "node:child_process";
import { chmod, lstat, mkdir, readdir, realpath, rename, rm, stat, statfs } from "node:fs/promises";
import { isAbsolute, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { CopyRefusedError, copySourceRefusal, sanitizeCopiedTree } from "./copy-source.js";

/** A server id as the manager issues them; the only names allowed under the data root. */
const SERVER_ID_RE = /^srv_[a-z2-7]{4,32}$/;

/**
 * The data root is private to root: containers write into it (as root, unless
 * the engine remaps users), and a local user who could walk into it could run
 * a setuid binary a container left there.
 */
const ROOT_MODE = 0o700;

/** Hidden (berth's own, never taken for stray data): a restore's work, and the data restores replaced. */
const RESTORE_WORK_DIR = ".berth-restore";
const PREVIOUS_DIR = ".berth-previous";
const PREVIOUS_NAME_RE = /^srv_[a-z2-7]{4,32}\.cmd_[a-z2-7]{4,32}$/;

export class DataPathError extends Error {
  readonly reason = "DataPathRefused";
}

export interface DataCheck {
  serverId: string;
  exists: boolean;
  sizeBytes: number;
  modifyTimeMs: number;
  /** The size was not measured since the agent started (checkCached): sizeBytes is 0 and means nothing. */
  sizeUnknown?: boolean;
}

/** Stop counting after this many entries: size is a hint, not an audit. */
const MAX_WALK_ENTRIES = 100_000;

/**
 * Called by a walk as it goes, with how many entries it just read or
 * lstat'ed; the walk waits for the promise (DirSizes paces itself with it).
 */
export type WalkPace = (entries: number) => Promise<void>;

/** A directory's last measured size, and when it was measured. */
interface KnownSize {
  sizeBytes: number;
  measuredAt: number;
}

/**
 * The agent's data root: every server's data lives in `<root>/<server id>`,
 * and nothing outside the root is ever created, read or deleted. Paths are
 * checked both lexically and after resolving symlinks.
 */
export class DataRoot {
  readonly root: string;
  /** Last walked size per server id (check); what checkCached reports without walking. */
  private readonly sizes = new Map<string, KnownSize>();
  private readonly now: () => number;

  constructor(root: string, opts: { now?: () => number } = {}) {
    if (!isAbsolute(root)) throw new DataPathError(`data root "${root}" must be an absolute path`);
    this.root = resolve(root);
    this.now = opts.now ?? Date.now;
  }

  /**
   * Creates the root if missing and checks that it is its own real path: a
   * root reached through a symlink would make every bind mount follow
   * whatever that link points to, now or after someone changes it.
   */
  async init(): Promise<string[]> {
    const warnings: string[] = [];
    // mkdir answers the first directory it made (undefined: the root existed). Its mode
    // passes through the umask; a root berth makes must be exactly 0700.
    if (await mkdir(this.root, { recursive: true, mode: ROOT_MODE })) await chmod(this.root, ROOT_MODE);
    await this.checkRoot();
    const mode = (await stat(this.root)).mode & 0o777;
    if (mode & 0o077) {
      warnings.push(
        `data root ${this.root} is mode ${mode.toString(8)}: local users can reach what containers write there ` +
          `(a setuid binary in a data directory is a way to root); run chmod 700 ${this.root}`,
      );
    }
    return warnings;
  }

  /** `<root>/<serverId>`, refusing ids that are not plain server ids (so no `..`, `/` or absolute paths). */
  pathFor(serverId: string): string {
    if (!SERVER_ID_RE.test(serverId)) {
      throw new DataPathError(
        `refusing data path for ${JSON.stringify(serverId)}: not a server id (srv_ followed by 4 to 32 of a-z and 2-7); ` +
          `data directories are only ever <data root>/<server id>`,
      );
    }
    return join(this.root, serverId);
  }

  /**
   * Like pathFor, and also refuses when the root is no longer its own real
   * path, or the directory is a symlink or resolves outside the root.
   */
  async safePathFor(serverId: string): Promise<string> {
    const p = this.pathFor(serverId);
    await this.checkRoot();
    let st;
    try {
      st = await lstat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return p;
      throw err;
    }
    if (st.isSymbolicLink()) {
      throw new DataPathError(`refusing ${p}: it is a symlink; a server's data directory must be a real directory under the data root`);
    }
    const real = await realpath(p);
    if (!real.startsWith(this.root + sep)) throw new DataPathError(`refusing ${p}: it resolves to ${real}, outside the data root ${this.root}`);
    return p;
  }

  /** The root must exist and resolve to itself (no symlink anywhere in it). */
  private async checkRoot(): Promise<void> {
    let real: string;
    try {
      real = await realpath(this.root);
    } catch (err) {
      throw new DataPathError(`data root ${this.root} is not accessible: ${(err as Error).message}`);
    }
    if (real !== this.root) {
      throw new DataPathError(
        `refusing data root ${this.root}: it resolves to ${real} through a symlink; ` +
          `configure the real path (--data-root ${real}) so bind mounts cannot be redirected`,
      );
    }
  }

  /** Creates the directory if missing; returns its path. */
  async ensure(serverId: string): Promise<string> {
    const p = await this.safePathFor(serverId);
    await mkdir(p, { recursive: true, mode: 0o755 });
    return p;
  }

  /**
   * A fresh check: walks the directory for its size (commands, and the
   * background sizer with `pace`) and remembers the size for checkCached.
   */
  async check(serverId: string, pace?: WalkPace): Promise<DataCheck> {
    const st = await this.statDir(serverId);
    if (!st) {
      this.sizes.delete(serverId);
      return { serverId, exists: false, sizeBytes: 0, modifyTimeMs: 0 };
    }
    const sizeBytes = await dirSize(st.path, pace);
    this.sizes.set(serverId, { sizeBytes, measuredAt: this.now() });
    return { serverId, exists: true, sizeBytes, modifyTimeMs: st.mtimeMs };
  }

  /**
   * The inventory's check: whether the directory exists and its mtime (one
   * stat after safePathFor's checks), with the size of the last check instead
   * of a walk. A directory no check has measured yet (a new one, or any
   * after the agent started) says so (`sizeUnknown`): the manager keeps the
   * size it knew, and the sizer measures never-measured directories first.
   */
  async checkCached(serverId: string): Promise<DataCheck> {
    const st = await this.statDir(serverId);
    if (!st) {
      this.sizes.delete(serverId);
      return { serverId, exists: false, sizeBytes: 0, modifyTimeMs: 0 };
    }
    const known = this.sizes.get(serverId);
    return { serverId, exists: true, sizeBytes: known?.sizeBytes ?? 0, modifyTimeMs: st.mtimeMs, ...(known ? {} : { sizeUnknown: true }) };
  }

  /** When check last measured the directory; undefined if never (since it last went missing). */
  measuredAt(serverId: string): number | undefined {
    return this.sizes.get(serverId)?.measuredAt;
  }

  /** Forgets the sizes of directories not in `present` (bounded by what the root holds). */
  forgetSizesExcept(present: ReadonlySet<string>): void {
    for (const id of this.sizes.keys()) if (!present.has(id)) this.sizes.delete(id);
  }

  /** The directory's path and mtime, or undefined when it is missing or not a directory. */
  private async statDir(serverId: string): Promise<{ path: string; mtimeMs: number } | undefined> {
    const p = await this.safePathFor(serverId);
    try {
      const st = await stat(p);
      return st.isDirectory() ? { path: p, mtimeMs: st.mtimeMs } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /**
   * Deletes `<root>/<serverId>` and nothing else: symlinks inside it are
   * removed as links, never followed (fs.rm works on lstat).
   */
  async remove(serverId: string): Promise<void> {
    const p = await this.safePathFor(serverId);
    await rm(p, { recursive: true, force: true });
  }

  /**
   * Deletes `<root>/<name>`, a directory directly under the root that no
   * server owns (OrphanService): any plain name, not only server ids, but
   * one path component, a real directory (not a symlink), never hidden
   * (berth's own work directories) and never lost+found.
   */
  async removeEntry(name: string): Promise<void> {
    if (!name || name.includes("/") || name.includes("\0") || name.startsWith(".") || name === "lost+found") {
      throw new DataPathError(`refusing to remove ${JSON.stringify(name)}: only a plain directory name directly under the data root, not hidden, not lost+found`);
    }
    await this.checkRoot();
    const p = join(this.root, name);
    let st;
    try {
      st = await lstat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    if (!st.isDirectory()) throw new DataPathError(`refusing to remove ${p}: not a directory`);
    await rm(p, { recursive: true, force: true });
  }

  /**
   * Copies the directory `source` (a container's mount, outside the root)
   * into `<root>/<serverId>`, preserving owners, modes, times and symlinks
   * (`cp -a`, which never follows links), through a hidden work directory
   * renamed into place at the end: a half-done copy never looks like server
   * data. The source is left untouched. Refuses sources copySourceRefusal
   * names, a target that exists, and a copy larger than the free space.
   * Hands out no privilege: extended attributes (file capabilities among
   * them) are not copied, setuid/setgid bits are cleared, and a source with a
   * device node, FIFO or socket is refused (sanitizeCopiedTree). Answers the
   * files whose setuid/setgid bits were cleared.
   */
  async copyIn(serverId: string, source: { type: string; path: string; readOnly: boolean }, timeoutMs: number): Promise<string[]> {
    const target = await this.safePathFor(serverId);
    if (await exists(target)) throw new DataPathError(`${target} already exists; refusing to copy over it`);
    let real: string;
    try {
      real = await realpath(source.path);
    } catch (err) {
      throw new DataPathError(`cannot copy ${source.path}: ${(err as Error).message}`);
    }
    const refusal = copySourceRefusal({ type: source.type, realSource: real, readOnly: source.readOnly }, this.root);
    if (refusal) throw new DataPathError(`refusing to copy ${source.path}: ${refusal}`);
    if (!(await stat(real)).isDirectory()) throw new DataPathError(`refusing to copy ${source.path}: not a directory`);
    const size = await dirSize(real);
    const { freeBytes } = await this.diskSpace();
    if (freeBytes > 0 && size > freeBytes) throw new DataPathError(`${source.path} holds ${size} bytes; the data root has ${freeBytes} free`);
    const work = join(this.root, `.copy-${serverId}`);
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { mode: 0o755 });
    try {
      // "<dir>/." copies the contents and the directory's own owner and mode.
      await promisify(execFile)("cp", ["-a", "--no-preserve=xattr", "--", `${real}/.`, `${work}/`], { timeout: timeoutMs, maxBuffer: 1024 * 1024 });
      const stripped = await sanitizeCopiedTree(work);
      await rename(work, target);
      return stripped;
    } catch (err) {
      await rm(work, { recursive: true, force: true }).catch(() => {});
      if (err instanceof CopyRefusedError) throw new DataPathError(`refusing to copy ${source.path}: ${err.message}`);
      const e = err as { stderr?: string; message?: string; killed?: boolean };
      throw new DataPathError(`copying ${source.path} into ${target} failed: ${e.killed ? "timed out" : (e.stderr || e.message || String(err)).trim()}`);
    }
  }

  /**
   * Replaces `<root>/<serverId>` with what `unpack` writes into a fresh
   * hidden work directory (a restore): only once it finished are the current
   * data moved to `<root>/.berth-previous/<keepName>` (the safety copy) and
   * the work directory renamed into place, two renames on one filesystem. A
   * failed unpack leaves the current data untouched and removes the work
   * directory. Answers whether there were data to keep.
   */
  async restoreFrom(serverId: string, keepName: string, unpack: (dest: string) => Promise<void>): Promise<{ kept: boolean }> {
    const target = await this.safePathFor(serverId);
    const previous = this.previousPath(keepName);
    if (!keepName.startsWith(`${serverId}.`)) throw new DataPathError(`refusing safety copy name ${JSON.stringify(keepName)}: not one of ${serverId}'s`);
    const work = join(this.root, RESTORE_WORK_DIR, keepName);
    await mkdir(join(this.root, RESTORE_WORK_DIR), { recursive: true, mode: ROOT_MODE });
    await rm(work, { recursive: true, force: true });
    try {
      await unpack(work);
    } catch (err) {
      await rm(work, { recursive: true, force: true }).catch(() => {});
      throw err;
    }
    const kept = await exists(target);
    if (kept) {
      await mkdir(join(this.root, PREVIOUS_DIR), { recursive: true, mode: ROOT_MODE });
      if (await exists(previous)) throw new DataPathError(`${previous} exists already; refusing to replace a safety copy`);
      await rename(target, previous);
    }
    await rename(work, target);
    this.sizes.delete(serverId);
    return { kept };
  }

  /** A path for a temporary file in the data root's restore work directory (created); the caller removes the file. */
  async workFile(name: string): Promise<string> {
    if (!PREVIOUS_NAME_RE.test(name.replace(/\.download$/, ""))) throw new DataPathError(`refusing work file name ${JSON.stringify(name)}`);
    await this.checkRoot();
    await mkdir(join(this.root, RESTORE_WORK_DIR), { recursive: true, mode: ROOT_MODE });
    return join(this.root, RESTORE_WORK_DIR, name);
  }

  /** Removes a restore's safety copy `<root>/.berth-previous/<name>` (idempotent). */
  async discardPrevious(name: string): Promise<void> {
    const p = this.previousPath(name);
    await this.checkRoot();
    await rm(p, { recursive: true, force: true });
  }

  /** Where a restore keeps the data it replaced: `<root>/.berth-previous/<server id>.<command id>`. */
  previousPath(name: string): string {
    if (!PREVIOUS_NAME_RE.test(name)) throw new DataPathError(`refusing safety copy name ${JSON.stringify(name)}: not <server id>.<command id>`);
    return join(this.root, PREVIOUS_DIR, name);
  }

  /** Removes restore work directories left by an agent that stopped mid-restore (no restore runs at start). */
  async sweepRestoreWork(): Promise<void> {
    await rm(join(this.root, RESTORE_WORK_DIR), { recursive: true, force: true });
  }

  /** Names of the directories directly under the root. */
  async list(): Promise<string[]> {
    try {
      const entries = await readdir(this.root, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  }

  async diskSpace(): Promise<{ freeBytes: number; totalBytes: number }> {
    try {
      const s = await statfs(this.root);
      return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
    } catch {
      return { freeBytes: 0, totalBytes: 0 };
    }
  }

  isServerId(name: string): boolean {
    return SERVER_ID_RE.test(name);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Bytes in the regular files under `dir` (up to MAX_WALK_ENTRIES entries), paced by `pace` if given. */
async function dirSize(dir: string, pace?: WalkPace): Promise<number> {
  let total = 0;
  let seen = 0;
  const stack = [dir];
  while (stack.length > 0 && seen < MAX_WALK_ENTRIES) {
    const d = stack.pop()!;
    if (pace) await pace(1);
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (++seen > MAX_WALK_ENTRIES) break;
      if (pace) await pace(1);
      const p = join(d, e.name);
      // Never follow symlinks: a link inside the data dir must not make us read outside it.
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) {
        try {
          total += (await lstat(p)).size;
        } catch {
          /* vanished while walking */
        }
      }
    }
  }
  return total;
}
