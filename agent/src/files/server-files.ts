/**
 * File operations inside one server's data directory (issue 19's
 * FileService, agent side): list, stat, read, write, mkdir, rename, copy,
 * delete, chmod. Every path goes through confined.ts: no "..", no absolute
 * escape, no symlink followed, no device, socket or FIFO opened. Extraction
 * and archive creation are in file-archives.ts.
 *
 * Ownership: an entry the service creates (an upload, a directory, a copy's
 * root, an extracted tree) gets the owner of the directory it is created in
 * when the agent runs as root, so a container running as uid 1000 can still
 * write what an operator uploaded; a replaced file keeps its owner and mode.
 */
import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { link, lstat, mkdir, open, readdir, rename, rm, rmdir, statfs, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { ConfinedDir, ConfinedRoot, fileTypeOf, parseUserPath, showPath, specialRefused, symlinkRefused, type FileType } from "./confined.js";
import { asFileOpError, FileOpError } from "./errors.js";

/** One entry as list and stat report it. */
export interface FileEntry {
  /** The last component ("" for the data directory itself). */
  name: string;
  type: FileType;
  /** Bytes (a symlink: its target's length; a directory: what the filesystem says). */
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  mtimeMs: number;
}

export interface ListPage {
  entries: FileEntry[];
  /** Pass back as pageToken for the next page; absent on the last page. */
  nextPageToken?: string;
}

export interface ReadResult {
  /** The file as opened (its size bounds what is read). */
  entry: FileEntry;
  /** Bytes read from offset: at most READ_CHUNK per chunk. Closes the file when done or abandoned. */
  chunks: AsyncIterable<Buffer>;
  /** Closes the file if `chunks` is never iterated (idempotent). */
  close(): Promise<void>;
}

export interface WriteOptions {
  /** Most bytes accepted; more is "too_large" and nothing is replaced. */
  maxBytes: number;
  /** The mtime the client saw (stat/list): the write is refused ("conflict") unless the file still has it (whole milliseconds). */
  expectedMtimeMs?: number;
  /** Permission bits for the file (default: the replaced file's, or 0644); setuid/setgid refused. */
  mode?: number;
  /** The upload's size when the client said it: refused before a byte is written when free space would not hold it. */
  sizeHint?: number;
}

export interface ServerFilesOptions {
  /** The server's data directory (DataRoot.safePathFor). */
  root: string;
  /**
   * A directory private to the agent (not mounted into any container) on the
   * same filesystem as `root`, e.g. `<data root>/.berth-files`: copies and
   * extractions are built there and renamed into place, out of a container's
   * reach while they are written.
   */
  workDir: string;
  /** Free bytes the agent never hands to an upload, copy or extraction (default DEFAULT_RESERVE_BYTES). */
  reserveBytes?: number;
  /** Most entries one copy or extraction may make (default DEFAULT_MAX_ENTRIES). */
  maxEntries?: number;
  /** Free bytes on the filesystem holding `path` (default: statfs; a test seam). */
  freeBytes?: (path: string) => Promise<number>;
}

export const READ_CHUNK = 256 * 1024;
export const MAX_PAGE_SIZE = 1000;
export const DEFAULT_RESERVE_BYTES = 256 * 1024 * 1024;
export const DEFAULT_MAX_ENTRIES = 100_000;
/** Setuid and setgid: never set by the file service (a setuid binary in a data directory is a way to root). */
const SETID_BITS = 0o6000;
/** Hidden names of the service's own temporary files beside an upload's target. */
export const UPLOAD_PREFIX = ".berth-upload-";

const isRoot = process.getuid?.() === 0;
const FILE_READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export class ServerFiles {
  readonly confined: ConfinedRoot;
  readonly workDir: string;
  readonly reserveBytes: number;
  readonly maxEntries: number;
  private readonly freeBytesAt: (path: string) => Promise<number>;

  constructor(opts: ServerFilesOptions) {
    this.confined = new ConfinedRoot(opts.root);
    this.workDir = opts.workDir;
    this.reserveBytes = opts.reserveBytes ?? DEFAULT_RESERVE_BYTES;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.freeBytesAt = opts.freeBytes ?? statfsFree;
  }

  /**
   * The entries of the directory `dirPath`, sorted by name (plain string
   * order), at most `pageSize` (default and most MAX_PAGE_SIZE) after the
   * page token's name. Symlinks are listed as "symlink", never followed.
   */
  async list(dirPath: string, opts: { pageSize?: number; pageToken?: string } = {}): Promise<ListPage> {
    const pageSize = opts.pageSize === undefined || opts.pageSize <= 0 ? MAX_PAGE_SIZE : Math.min(Math.floor(opts.pageSize), MAX_PAGE_SIZE);
    const after = opts.pageToken ? decodePageToken(opts.pageToken) : undefined;
    const dir = await this.confined.openDir(parseUserPath(dirPath));
    try {
      const names = (await readdir(dir.path)).filter((n) => after === undefined || n > after).sort();
      const entries: FileEntry[] = [];
      let i = 0;
      for (; i < names.length && entries.length < pageSize; i++) {
        const st = await dir.lstat(names[i]!);
        if (st) entries.push(entryOf(names[i]!, st)); // else: removed since readdir
      }
      const more = i < names.length;
      return { entries, ...(more && entries.length > 0 ? { nextPageToken: encodePageToken(entries.at(-1)!.name) } : {}) };
    } finally {
      await dir.close();
    }
  }

  /** The entry at `path` (lstat: a symlink is reported as one). */
  async stat(path: string): Promise<FileEntry> {
    return this.confined.withParent(path, async (dir, name, parts) => {
      if (name === undefined) return entryOf("", await dir.fh.stat());
      const st = await dir.lstat(name);
      if (!st) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
      return entryOf(name, st);
    });
  }

  /**
   * Opens the regular file `path` for a streamed, optionally ranged read:
   * `length` bytes (default: to the end) from `offset`, never past the size
   * it had when opened.
   */
  async read(path: string, opts: { offset?: number; length?: number } = {}): Promise<ReadResult> {
    const offset = opts.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FileOpError("invalid_argument", `offset ${offset} must be a whole number ≥ 0`);
    if (opts.length !== undefined && (!Number.isSafeInteger(opts.length) || opts.length < 0)) {
      throw new FileOpError("invalid_argument", `length ${opts.length} must be a whole number ≥ 0`);
    }
    const { fh, st, parts } = await this.confined.withParent(path, async (dir, name, parts) => {
      if (name === undefined) throw new FileOpError("is_a_directory", `/ is the server's data directory; read a file in it`);
      return { ...(await openRegularFile(dir, name)), parts };
    });
    if (offset > st.size) {
      await fh.close();
      throw new FileOpError("invalid_argument", `offset ${offset} is past the end of ${showPath(parts)} (${st.size} bytes)`);
    }
    const end = opts.length === undefined ? st.size : Math.min(st.size, offset + opts.length);
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close().catch(() => {});
    };
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        for (let pos = offset; pos < end; ) {
          const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, end - pos));
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) return; // shrank since opened
          pos += bytesRead;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await close();
      }
    }
    return { entry: entryOf(parts.at(-1)!, st), chunks: chunks(), close };
  }

  /**
   * Replaces (or creates) the regular file `path` with the bytes of
   * `source`, atomically: they go to a hidden temporary file in the same
   * directory (O_EXCL | O_NOFOLLOW), which is fsync'ed and renamed over the
   * target. Refused before a byte is written when the target is a symlink,
   * a directory or a special file, when expectedMtimeMs does not match, or
   * when the free space less the reserve cannot hold sizeHint; refused
   * while writing when more than maxBytes arrive or the free space runs
   * out. On any failure the temporary file is removed and the old file is
   * untouched. The parent directory must exist.
   */
  async write(path: string, source: AsyncIterable<Buffer | Uint8Array>, opts: WriteOptions): Promise<FileEntry> {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) throw new FileOpError("invalid_argument", `maxBytes ${opts.maxBytes} must be a whole number ≥ 0`);
    if (opts.mode !== undefined) checkMode(opts.mode);
    return this.confined.withParent(path, async (dir, name, parts) => {
      if (name === undefined) throw new FileOpError("is_a_directory", `/ is the server's data directory; write a file in it`);
      const shown = showPath(parts);
      const current = await dir.lstat(name);
      if (current) refuseNonFile(current, parts);
      checkMtime(current, opts.expectedMtimeMs, shown);
      const budget = (await this.freeBytesAt(dir.path)) - this.reserveBytes;
      if (budget - (opts.sizeHint ?? 0) < 0) throw noSpace(shown, opts.sizeHint ?? 0, budget, this.reserveBytes);

      const tmp = `${UPLOAD_PREFIX}${randomBytes(8).toString("hex")}`;
      let fh: FileHandle | undefined = await open(dir.at(tmp), NEW_FILE_FLAGS, 0o600);
      try {
        let total = 0;
        for await (const chunk of source) {
          total += chunk.length;
          if (total > opts.maxBytes) throw new FileOpError("too_large", `${shown}: the upload is larger than the ${opts.maxBytes} bytes allowed per request; nothing was replaced`);
          if (total > budget) throw noSpace(shown, total, budget, this.reserveBytes);
          await writeAll(fh, chunk);
        }
        const owner = current ?? (await dir.fh.stat());
        await chownIfRoot(fh, owner.uid, owner.gid);
        await fh.chmod(opts.mode ?? (current ? current.mode & 0o7777 & ~SETID_BITS : 0o644));
        await fh.sync();
        await fh.close();
        fh = undefined;
        // Again, just before the rename: the container may have written it while the upload ran.
        const now = await dir.lstat(name);
        if (now) refuseNonFile(now, parts);
        checkMtime(now, opts.expectedMtimeMs, shown);
        await rename(dir.at(tmp), dir.at(name));
      } catch (err) {
        await fh?.close().catch(() => {});
        await unlink(dir.at(tmp)).catch(() => {});
        throw asFileOpError(err, shown);
      }
      await dir.fh.sync().catch(() => {}); // the rename itself, durable where the filesystem allows
      const st = await dir.lstat(name);
      if (!st) throw new FileOpError("not_found", `${shown} was removed right after it was written`);
      return entryOf(name, st);
    });
  }

  /**
   * Creates the directory `path` (mode 0755, owned like its parent); with
   * `parents`, missing parents too and no error when it exists already.
   */
  async mkdir(path: string, opts: { parents?: boolean } = {}): Promise<FileEntry> {
    const parts = parseUserPath(path);
    if (parts.length === 0) {
      if (opts.parents) return this.stat("");
      throw new FileOpError("exists", `/ is the server's data directory and exists`);
    }
    let dir = await this.confined.openRoot();
    try {
      for (let i = 0; i < parts.length; i++) {
        const name = parts[i]!;
        const last = i === parts.length - 1;
        if (last || opts.parents) {
          const created = await mkdirOwned(dir, name);
          if (!created && last && !opts.parents) throw new FileOpError("exists", `${dir.show(name)} already exists`);
        }
        const next = await dir.openDir(name);
        await dir.close();
        dir = next;
      }
      return entryOf(parts.at(-1)!, await dir.fh.stat());
    } catch (err) {
      throw asFileOpError(err, showPath(parts));
    } finally {
      await dir.close();
    }
  }

  /**
   * Moves `from` to `to` (a rename within the data directory). Refuses the
   * data directory itself, a symlink or special file as either end, a
   * directory moved into itself, and an existing `to` unless `overwrite`
   * (then a file replaces a file, a directory an empty directory).
   */
  async rename(from: string, to: string, opts: { overwrite?: boolean } = {}): Promise<FileEntry> {
    const fromParts = parseUserPath(from);
    const toParts = parseUserPath(to);
    if (fromParts.length === 0 || toParts.length === 0) {
      throw new FileOpError("root_refused", `the server's data directory itself cannot be moved or replaced; move the entries inside it`);
    }
    if (isUnder(toParts, fromParts)) {
      if (toParts.length === fromParts.length) return this.stat(to);
      throw new FileOpError("invalid_argument", `cannot move ${showPath(fromParts)} into itself (${showPath(toParts)})`);
    }
    const src = await this.confined.openDir(fromParts.slice(0, -1));
    try {
      const dst = await this.confined.openDir(toParts.slice(0, -1));
      try {
        const name = fromParts.at(-1)!;
        const toName = toParts.at(-1)!;
        const st = await src.lstat(name);
        if (!st) throw new FileOpError("not_found", `${showPath(fromParts)} does not exist`);
        if (st.isSymbolicLink()) throw symlinkRefused(fromParts);
        if (!st.isFile() && !st.isDirectory()) throw specialRefused(fromParts);
        const existing = await dst.lstat(toName);
        if (existing?.isSymbolicLink()) throw symlinkRefused(toParts);
        if (existing && !existing.isFile() && !existing.isDirectory()) throw specialRefused(toParts);
        if (existing && !opts.overwrite) throw new FileOpError("exists", `${showPath(toParts)} already exists; delete it first, or move with overwrite`);
        try {
          if (opts.overwrite) await rename(src.at(name), dst.at(toName));
          else await moveNoReplace(src.at(name), dst.at(toName), st.isDirectory());
        } catch (err) {
          throw asFileOpError(err, showPath(toParts));
        }
        const after = await dst.lstat(toName);
        if (!after) throw new FileOpError("not_found", `${showPath(toParts)} was removed right after it was moved`);
        return entryOf(toName, after);
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
  }

  /**
   * Copies the file or tree `from` to `to`, which must not exist: modes
   * (without setuid/setgid), owners (as root) and mtimes kept, hard links
   * copied as separate files. All or nothing: the copy is built in the
   * work directory and renamed into place at the end, so it is never seen
   * half done. A symlink, device, socket or FIFO anywhere in the tree
   * refuses the whole copy (see docs/console-and-files.md: a partial copy
   * that silently lacks entries is worse than a clear refusal, and a copied
   * link would be a new link nobody asked for). Bounded by the free space
   * less the reserve, and by maxEntries.
   */
  async copy(from: string, to: string): Promise<{ entry: FileEntry; entries: number; bytes: number }> {
    const fromParts = parseUserPath(from);
    const toParts = parseUserPath(to);
    if (toParts.length === 0) throw new FileOpError("exists", `/ is the server's data directory and exists`);
    if (isUnder(toParts, fromParts)) throw new FileOpError("invalid_argument", `cannot copy ${showPath(fromParts)} into itself (${showPath(toParts)})`);
    const dst = await this.confined.openDir(toParts.slice(0, -1));
    try {
      const toName = toParts.at(-1)!;
      if (await dst.lstat(toName)) throw new FileOpError("exists", `${showPath(toParts)} already exists; delete it first, or choose another name`);
      const budget = (await this.freeBytesAt(dst.path)) - this.reserveBytes;
      if (budget < 0) throw noSpace(showPath(toParts), 0, budget, this.reserveBytes);
      const work = await this.newWorkPath("copy");
      const counts = { entries: 0, bytes: 0 };
      try {
        const srcParent = await this.confined.openDir(fromParts.slice(0, -1));
        let isDir: boolean;
        try {
          isDir = await copyEntry(srcParent, fromParts.at(-1), work, { budget, maxEntries: this.maxEntries, reserve: this.reserveBytes }, counts);
        } finally {
          await srcParent.close();
        }
        await moveNoReplace(work, dst.at(toName), isDir);
      } catch (err) {
        await removeAbsolute(work);
        throw asFileOpError(err, showPath(toParts));
      }
      const st = await dst.lstat(toName);
      if (!st) throw new FileOpError("not_found", `${showPath(toParts)} was removed right after it was copied`);
      return { entry: entryOf(toName, st), ...counts };
    } finally {
      await dst.close();
    }
  }

  /**
   * Deletes `path`: a file, a symlink (the link itself, never its target), a
   * special file, or a directory (empty, or with `recursive` its whole tree,
   * removed through open directory descriptors so that no swapped-in
   * symlink is ever followed). The data directory itself is refused.
   */
  async delete(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    return this.confined.withParent(path, async (dir, name, parts) => {
      if (name === undefined) {
        throw new FileOpError("root_refused", `the server's data directory itself cannot be deleted here (that is PurgeServer's job); delete the entries inside it`);
      }
      const st = await dir.lstat(name);
      if (!st) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
      try {
        if (!st.isDirectory()) await unlink(dir.at(name));
        else if (opts.recursive) await removeTree(dir, name);
        else await rmdir(dir.at(name));
      } catch (err) {
        throw asFileOpError(err, showPath(parts));
      }
    });
  }

  /** Sets the permission bits of a file or directory (`mode` ≤ 0o7777, never setuid/setgid; a symlink or special file is refused). */
  async chmod(path: string, mode: number): Promise<FileEntry> {
    checkMode(mode);
    return this.confined.withParent(path, async (dir, name, parts) => {
      if (name === undefined) {
        await dir.fh.chmod(mode);
        return entryOf("", await dir.fh.stat());
      }
      const st = await dir.lstat(name);
      if (!st) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
      if (st.isSymbolicLink()) throw symlinkRefused(parts);
      if (!st.isFile() && !st.isDirectory()) throw specialRefused(parts);
      const fh = await open(dir.at(name), FILE_READ_FLAGS).catch((err: unknown) => {
        throw asFileOpError(err, showPath(parts));
      });
      try {
        const now = await fh.stat();
        if (now.ino !== st.ino || now.dev !== st.dev) throw new FileOpError("conflict", `${showPath(parts)} was replaced while being changed; try again`);
        await fh.chmod(mode);
        return entryOf(name, await fh.stat());
      } finally {
        await fh.close();
      }
    });
  }

  /** A fresh path in the work directory (created if missing, 0700), not yet existing. */
  async newWorkPath(kind: string): Promise<string> {
    await mkdir(this.workDir, { recursive: true, mode: 0o700 });
    return join(this.workDir, `${kind}-${randomBytes(8).toString("hex")}`);
  }

  /** Free bytes less the reserve on the filesystem of `dir` (negative: already inside the reserve). */
  async budgetAt(dir: ConfinedDir): Promise<number> {
    return (await this.freeBytesAt(dir.path)) - this.reserveBytes;
  }
}

// ---------------------------------------------------------------------------

export function entryOf(name: string, st: Stats): FileEntry {
  return { name, type: fileTypeOf(st), size: st.size, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs };
}

/** Opens the regular file `name` of `dir` for reading, checking the descriptor it got is that regular file. */
export async function openRegularFile(dir: ConfinedDir, name: string): Promise<{ fh: FileHandle; st: Stats }> {
  const parts = [...dir.parts, name];
  // lstat first: opening a device can have effects of its own, and a FIFO would wait.
  const before = await dir.lstat(name);
  if (!before) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
  refuseNonFile(before, parts);
  const fh = await open(dir.at(name), FILE_READ_FLAGS).catch((err: unknown) => {
    throw asFileOpError(err, showPath(parts));
  });
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    if (st.isDirectory()) throw new FileOpError("is_a_directory", `${showPath(parts)} is a directory`);
    throw specialRefused(parts);
  }
  return { fh, st };
}

/** Throws unless `st` is a regular file. */
function refuseNonFile(st: Stats, parts: readonly string[]): void {
  if (st.isFile()) return;
  if (st.isSymbolicLink()) throw symlinkRefused(parts);
  if (st.isDirectory()) throw new FileOpError("is_a_directory", `${showPath(parts)} is a directory`);
  throw specialRefused(parts);
}

function checkMtime(st: Stats | undefined, expected: number | undefined, shown: string): void {
  if (expected === undefined) return;
  if (!st) throw new FileOpError("conflict", `${shown} no longer exists (it was expected with mtime ${expected}); reload it before saving`);
  if (Math.floor(st.mtimeMs) !== Math.floor(expected)) {
    throw new FileOpError(
      "conflict",
      `${shown} changed since it was read (mtime ${Math.floor(st.mtimeMs)}, expected ${Math.floor(expected)}); reload it, or save without the check to overwrite`,
    );
  }
}

function checkMode(mode: number): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new FileOpError("invalid_argument", `mode ${mode} is not a permission mode (0 to 0o7777)`);
  if (mode & SETID_BITS) {
    throw new FileOpError("invalid_argument", `mode ${mode.toString(8)} sets setuid or setgid; the file service never does (a setuid binary in a data directory is a way to root)`);
  }
}

function noSpace(shown: string, bytes: number, budget: number, reserve: number): FileOpError {
  return new FileOpError(
    "no_space",
    `${shown}: ${bytes} bytes would not fit: the host's disk has ${Math.max(0, budget)} bytes free beyond the ${reserve} bytes the agent keeps in reserve; free some space first`,
  );
}

async function statfsFree(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

function isUnder(parts: readonly string[], ancestor: readonly string[]): boolean {
  return ancestor.length <= parts.length && ancestor.every((p, i) => parts[i] === p);
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

export async function chownIfRoot(fh: FileHandle, uid: number, gid: number): Promise<void> {
  if (isRoot) await fh.chown(uid, gid);
}

/** mkdir `name` in `dir` (0755, owned like `dir`); answers false when something exists there already. */
async function mkdirOwned(dir: ConfinedDir, name: string): Promise<boolean> {
  try {
    await mkdir(dir.at(name), { mode: 0o755 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
  if (isRoot) {
    const owner = await dir.fh.stat();
    const sub = await dir.openDir(name);
    try {
      await sub.fh.chown(owner.uid, owner.gid);
    } finally {
      await sub.close();
    }
  }
  return true;
}

/**
 * Moves `from` to `to` unless `to` exists. A file is hard-linked then
 * unlinked (link fails with EEXIST atomically; Node has no renameat2
 * RENAME_NOREPLACE); a directory is renamed, which fails over a non-empty
 * directory or a file, and could only replace an empty directory made in
 * the instant since the caller checked.
 */
export async function moveNoReplace(from: string, to: string, isDir: boolean): Promise<void> {
  try {
    await moveNoReplaceOn(from, to, isDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    throw new Error(`cannot move ${from} into the data directory: another filesystem (the agent's work directory must be on the data directory's filesystem)`);
  }
}

async function moveNoReplaceOn(from: string, to: string, isDir: boolean): Promise<void> {
  if (isDir) {
    const exists = await lstat(to).then(
      () => true,
      () => false,
    );
    if (exists) throw Object.assign(new Error(`${to} exists`), { code: "EEXIST" });
    await rename(from, to);
    return;
  }
  try {
    await link(from, to);
  } catch (err) {
    // A filesystem without hard links: check, then rename (the instant between is the only exposure).
    if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "EMLINK"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
    if (await lstat(to).then(() => true, () => false)) throw Object.assign(new Error(`${to} exists`), { code: "EEXIST" });
    await rename(from, to);
    return;
  }
  await unlink(from);
}

/** Removes an absolute path (a work directory entry, private to the agent) if it exists. */
export async function removeAbsolute(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true }).catch(() => {});
}

/**
 * Removes the directory `name` of `dir` and everything in it through open
 * directory descriptors: each subdirectory is opened with O_NOFOLLOW
 * through its parent's descriptor, so a symlink swapped in for a directory
 * mid-way is unlinked as a link, never entered.
 */
async function removeTree(dir: ConfinedDir, name: string): Promise<void> {
  let sub: ConfinedDir;
  try {
    sub = await dir.openDir(name);
  } catch (err) {
    if (err instanceof FileOpError && err.code === "not_found") return;
    if (err instanceof FileOpError) {
      await unlink(dir.at(name)); // no longer a directory: remove whatever it is now, as an entry
      return;
    }
    throw err;
  }
  try {
    for (const child of await readdir(sub.path)) {
      const st = await sub.lstat(child);
      if (!st) continue;
      if (st.isDirectory()) await removeTree(sub, child);
      else {
        await unlink(sub.at(child)).catch(async (err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === "EISDIR") await removeTree(sub, child);
          else if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        });
      }
    }
  } finally {
    await sub.close();
  }
  await rmdir(dir.at(name));
}

interface CopyLimits {
  budget: number;
  maxEntries: number;
  reserve: number;
}

/**
 * Copies the entry `name` of `srcDir` (the directory itself when undefined)
 * to the absolute work path `dest`; answers whether it was a directory.
 */
async function copyEntry(srcDir: ConfinedDir, name: string | undefined, dest: string, limits: CopyLimits, counts: { entries: number; bytes: number }): Promise<boolean> {
  const parts = name === undefined ? srcDir.parts : [...srcDir.parts, name];
  if (++counts.entries > limits.maxEntries) throw new FileOpError("too_large", `${showPath(parts)}: the copy has more than ${limits.maxEntries} entries`);
  let st: Stats;
  if (name === undefined) st = await srcDir.fh.stat();
  else {
    const found = await srcDir.lstat(name);
    if (!found) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
    st = found;
  }
  if (st.isSymbolicLink()) throw new FileOpError("symlink_refused", `${showPath(parts)} is a symlink; copies never hold symlinks: delete it or copy around it (nothing was copied)`);
  if (!st.isFile() && !st.isDirectory()) throw new FileOpError("special_file_refused", `${showPath(parts)} is a device, socket or FIFO; copies hold only files and directories (nothing was copied)`);

  if (st.isDirectory()) {
    const sub = name === undefined ? srcDir : await srcDir.openDir(name);
    try {
      await mkdir(dest, { mode: 0o700 });
      for (const child of (await readdir(sub.path)).sort()) await copyEntry(sub, child, join(dest, child), limits, counts);
      const out = await open(dest, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await finishCopy(out, st, st.mode & 0o7777 & ~0o4000);
      } finally {
        await out.close();
      }
    } finally {
      if (sub !== srcDir) await sub.close();
    }
    return true;
  }

  const { fh: input, st: opened } = await openRegularFile(srcDir, name!);
  try {
    const out = await open(dest, NEW_FILE_FLAGS, 0o600);
    try {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      for (let pos = 0; ; ) {
        const { bytesRead } = await input.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        counts.bytes += bytesRead;
        if (counts.bytes > limits.budget) {
          throw new FileOpError("no_space", `${showPath(parts)}: the copy does not fit in the host's free space beyond the ${limits.reserve} bytes the agent keeps in reserve`);
        }
        await writeAll(out, buf.subarray(0, bytesRead));
      }
      await finishCopy(out, opened, opened.mode & 0o7777 & ~SETID_BITS);
    } finally {
      await out.close();
    }
  } finally {
    await input.close();
  }
  return false;
}

/** Owner (as root), mode and times of a copied entry, from its source. */
async function finishCopy(out: FileHandle, st: Stats, mode: number): Promise<void> {
  await chownIfRoot(out, st.uid, st.gid);
  await out.chmod(mode);
  await out.utimes(st.atime, st.mtime);
}

/** An opaque page token: the last listed name. */
function encodePageToken(name: string): string {
  return Buffer.from(`n:${name}`).toString("base64url");
}

function decodePageToken(token: string): string {
  const s = Buffer.from(token, "base64url").toString();
  if (!s.startsWith("n:") || Buffer.from(s).toString("base64url") !== token) {
    throw new FileOpError("invalid_argument", `page token ${JSON.stringify(token.slice(0, 100))} was not issued by this listing; start again without it`);
  }
  return s.slice(2);
}
