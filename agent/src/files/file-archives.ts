/**
 * Archives inside a server's data directory: extracting an uploaded
 * .tar.gz/.tgz/.tar.zst/.tar or .zip into a directory, confined and bounded.
 *
 * An extraction is built in the agent's private work directory (out of any
 * container's reach, so no container can swap a directory being filled for
 * a symlink), bounded by bytes and entries counted as they are written
 * (never trusting a header: a zip bomb or gzip bomb stops at the bound),
 * and only when it finished are its top-level entries moved into the
 * destination, none of which may exist there already. A failed or refused
 * extraction leaves nothing in the data directory (a destination it created
 * is removed again).
 *
 * Tars go through data/archive.ts's hostile-safe extractArchive (absolute
 * names, "..", NUL, an entry below a file, a name twice, hard links,
 * devices and FIFOs refused); the file manager also refuses symlinks and
 * gives every entry the destination's owner. Zips are read with yauzl,
 * which refuses absolute and ".." names itself; on top of that: symlink and
 * special entries (by their Unix mode), encrypted entries, a name twice.
 */
import { constants } from "node:fs";
import { chmod, chown, lchown, lstat, mkdir, open, readdir, utimes, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import * as yauzl from "yauzl";
import { ARCHIVE_READ_CHUNK, ArchiveError, extractArchive, safeEntryPath } from "../data/archive.js";
import { parseUserPath, showPath } from "./confined.js";
import { asFileOpError, FileOpError } from "./errors.js";
import { moveNoReplace, openRegularFile, removeAbsolute, type ServerFiles } from "./server-files.js";

export type ArchiveFormat = "tar.gz" | "tar.zst" | "tar" | "zip";

/** The archive format a file name says (".tar.gz", ".tgz", ".tar.zst", ".tar", ".zip"; any case), or undefined. */
export function archiveFormatOf(name: string): ArchiveFormat | undefined {
  const n = name.toLowerCase();
  if (n.endsWith(".tar.gz") || n.endsWith(".tgz")) return "tar.gz";
  if (n.endsWith(".tar.zst")) return "tar.zst";
  if (n.endsWith(".tar")) return "tar";
  if (n.endsWith(".zip")) return "zip";
  return undefined;
}

export interface ExtractOptions {
  /** Most bytes of files to write (counted as written); more is "too_large". */
  maxBytes: number;
  /** Most entries to create (default: the ServerFiles' maxEntries); more is "too_large". */
  maxEntries?: number;
}

export interface ExtractResult {
  /** Files, directories created. */
  entries: number;
  /** Bytes of files written. */
  bytes: number;
  /** The top-level names placed into the destination, sorted. */
  placed: string[];
}

const isRoot = process.getuid?.() === 0;

/**
 * Extracts the archive file `archivePath` into the directory `destDir`
 * (created with its parents if missing), both in `files`' data directory.
 * Refuses ("exists") when a top-level entry of the archive exists in
 * `destDir` already: extraction never overwrites.
 */
export async function extractFile(files: ServerFiles, archivePath: string, destDir: string, opts: ExtractOptions): Promise<ExtractResult> {
  if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) throw new FileOpError("invalid_argument", `maxBytes ${opts.maxBytes} must be a whole number ≥ 0`);
  const maxEntries = opts.maxEntries ?? files.maxEntries;
  const archiveParts = parseUserPath(archivePath);
  const destParts = parseUserPath(destDir);
  const format = archiveFormatOf(archiveParts.at(-1) ?? "");
  if (!format) throw new FileOpError("invalid_argument", `${showPath(archiveParts)}: extract reads .tar.gz, .tgz, .tar.zst, .tar and .zip files (by their name)`);

  const { fh } = await files.confined.withParent(archivePath, async (dir, name) => {
    if (name === undefined) throw new FileOpError("is_a_directory", `/ is the server's data directory, not an archive`);
    return openRegularFile(dir, name);
  });
  let createdDest = false;
  let work: string | undefined;
  try {
    work = await files.newWorkPath("extract");
    createdDest = !(await existsDir(files, destParts));
    await files.mkdir(destDir, { parents: true });
    const dest = await files.confined.openDir(destParts);
    try {
      const owner = await dest.fh.stat();
      const budget = await files.budgetAt(dest);
      if (budget <= 0) throw new FileOpError("no_space", `the host's disk has no free space beyond the ${files.reserveBytes} bytes the agent keeps in reserve; free some space first`);
      const limit = Math.min(opts.maxBytes, budget);
      const tooLarge = () =>
        limit < opts.maxBytes
          ? new FileOpError("no_space", `${showPath(archiveParts)} unpacks to more than the ${limit} bytes free on the host's disk beyond the agent's reserve; nothing was extracted`)
          : new FileOpError("too_large", `${showPath(archiveParts)} unpacks to more than the ${opts.maxBytes} bytes allowed; nothing was extracted`);

      let result: { entries: number; bytes: number };
      try {
        if (format === "zip") result = await extractZip(fh, work, { maxBytes: limit, maxEntries, owner });
        else {
          const r = await extractArchive(fh.createReadStream({ highWaterMark: ARCHIVE_READ_CHUNK, autoClose: false, start: 0 }), work, {
            maxBytes: limit,
            maxEntries,
            refuseSymlinks: true,
            owner: { uid: owner.uid, gid: owner.gid },
            allowUncompressed: format === "tar",
          });
          result = { entries: r.files, bytes: r.rawBytes };
        }
      } catch (err) {
        // TooLarge is about bytes (maxBytes: the caller's bound or the free space) or about entries.
        if (err instanceof ArchiveError && err.reason === "TooLarge" && /bytes/.test(err.message)) throw tooLarge();
        if (err instanceof ArchiveError && err.reason === "TooLarge") throw new FileOpError("too_large", `${showPath(archiveParts)}: ${err.message}; nothing was extracted`);
        if (err instanceof ArchiveError) throw new FileOpError("unsafe_archive", `${showPath(archiveParts)}: ${err.message}; nothing was extracted`);
        throw err;
      }

      // Directories only implied by deeper entries were made by the agent: they too get the destination's owner.
      if (isRoot) await chownTree(work, owner.uid, owner.gid);
      const names = (await readdir(work)).sort();
      const clashes: string[] = [];
      for (const n of names) if (await dest.lstat(n)) clashes.push(n);
      if (clashes.length > 0) {
        throw new FileOpError(
          "exists",
          `${showPath(archiveParts)} would overwrite ${clashes.slice(0, 5).map((n) => dest.show(n)).join(", ")}${clashes.length > 5 ? ` and ${clashes.length - 5} more` : ""}; extract into another (or a new) directory, or delete those first`,
        );
      }
      const placed: string[] = [];
      for (const n of names) {
        try {
          await moveNoReplace(join(work, n), dest.at(n), (await lstat(join(work, n))).isDirectory());
        } catch (err) {
          const e = asFileOpError(err, dest.show(n));
          if (placed.length === 0) throw e;
          throw new FileOpError(
            e instanceof FileOpError ? e.code : "exists",
            `extraction stopped part way: ${placed.map((p) => dest.show(p)).join(", ")} placed, ${dest.show(n)} failed (${(e as Error).message}); the rest was not extracted`,
          );
        }
        placed.push(n);
      }
      createdDest = false;
      return { ...result, placed };
    } finally {
      await dest.close();
    }
  } catch (err) {
    if (createdDest) await files.delete(destDir).catch(() => {}); // only if still empty
    throw asFileOpError(err, showPath(destParts));
  } finally {
    if (work) await removeAbsolute(work);
    await fh.close().catch(() => {});
  }
}

/** lchown of everything under `dir`, which is private to the agent (a fresh extraction: no container can reach it). */
async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    await lchown(p, uid, gid);
    if (e.isDirectory()) await chownTree(p, uid, gid);
  }
}

async function existsDir(files: ServerFiles, parts: string[]): Promise<boolean> {
  try {
    await (await files.confined.openDir(parts)).close();
    return true;
  } catch (err) {
    if (err instanceof FileOpError && err.code === "not_found") return false;
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Zip
// ---------------------------------------------------------------------------

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** "Version made by"'s high byte for Unix: only then do the external attributes hold a mode. */
const MADE_BY_UNIX = 3;

/**
 * Extracts the zip open as `fd` into `dest` (created; private to the agent).
 * Bytes and entries are counted as extracted; yauzl also checks each entry's
 * bytes against its header (a lying header is an error either way).
 */
async function extractZip(archive: FileHandle, dest: string, opts: { maxBytes: number; maxEntries: number; owner: { uid: number; gid: number } }): Promise<{ entries: number; bytes: number }> {
  await mkdir(dest, { mode: 0o700 });
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.fromRandomAccessReaderPromise(new FileHandleReader(archive), (await archive.stat()).size, {
      lazyEntries: true,
      autoClose: false,
      validateEntrySizes: true,
      strictFileNames: false,
      decodeStrings: true,
    });
  } catch (err) {
    throw unsafeZip(`not a readable zip: ${(err as Error).message}`);
  }
  const dirs: Array<{ path: string; mode: number; mtime: Date }> = [];
  let entries = 0;
  let bytes = 0;
  try {
    const it = zip.eachEntry();
    for (;;) {
      let next: IteratorResult<yauzl.Entry>;
      try {
        next = await it.next();
      } catch (err) {
        throw unsafeZip((err as Error).message); // yauzl's own refusals: absolute or ".." names, a damaged directory
      }
      if (next.done) break;
      const entry = next.value;
      if (++entries > opts.maxEntries) throw new ArchiveError("TooLarge", `refusing to extract: the archive holds more than ${opts.maxEntries} entries`);
      const rel = safeEntryPath(entry.fileName);
      if (rel === "") continue; // "./" or "/": the destination itself
      const unixMode = entry.versionMadeBy >> 8 === MADE_BY_UNIX ? entry.externalFileAttributes >>> 16 : 0;
      const kind = unixMode & S_IFMT;
      const isDir = entry.fileName.endsWith("/") || kind === S_IFDIR;
      if (kind === S_IFLNK) throw unsafeZip(`entry ${rel} is a symlink; symlinks are not extracted here`);
      if (kind !== 0 && kind !== S_IFDIR && kind !== S_IFREG) throw unsafeZip(`entry ${rel} is a device, FIFO or socket`);
      if (entry.isEncrypted()) throw unsafeZip(`entry ${rel} is encrypted; extract it on your own machine`);
      const path = join(dest, rel);
      const mtime = entry.getLastModDate();
      try {
        await mkdir(dirname(path), { recursive: true, mode: 0o755 });
        if (isDir) {
          await mkdir(path, { mode: 0o700 });
          dirs.push({ path, mode: unixMode ? unixMode & 0o1777 : 0o755, mtime });
          continue;
        }
        if (entry.uncompressedSize > opts.maxBytes - bytes) throw tooLargeZip(opts.maxBytes); // early, from the header; the count below is what bounds
        const out = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        try {
          let stream;
          try {
            stream = await zip.openReadStreamPromise(entry);
          } catch (err) {
            throw unsafeZip(`entry ${rel}: ${(err as Error).message}`);
          }
          try {
            for await (const chunk of stream) {
              bytes += (chunk as Buffer).length;
              if (bytes > opts.maxBytes) throw tooLargeZip(opts.maxBytes);
              await out.write(chunk as Buffer);
            }
          } catch (err) {
            stream.destroy();
            if (err instanceof ArchiveError) throw err;
            if ((err as NodeJS.ErrnoException).code) throw err; // the disk's
            throw unsafeZip(`entry ${rel}: ${(err as Error).message}`); // the zip's (a lying size, a damaged stream)
          }
          if (isRoot) await out.chown(opts.owner.uid, opts.owner.gid);
          await out.chmod(unixMode ? unixMode & 0o1777 : 0o644);
          await out.utimes(mtime, mtime);
        } finally {
          await out.close();
        }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST" || code === "ENOTDIR") throw unsafeZip(`entry ${rel} appears twice, or below a file entry`);
        throw err;
      }
    }
    for (const d of dirs.reverse()) {
      if (isRoot) await chown(d.path, opts.owner.uid, opts.owner.gid);
      await chmod(d.path, d.mode);
      await utimes(d.path, d.mtime, d.mtime);
    }
    return { entries, bytes };
  } finally {
    zip.close();
  }
}

/**
 * yauzl's reader over a FileHandle the caller keeps: yauzl's own fd reader
 * closes the descriptor it was given when the zip is closed (whatever
 * autoClose says), and a descriptor closed behind its FileHandle's back
 * gets its number reused and then closed again.
 */
class FileHandleReader extends yauzl.RandomAccessReader {
  constructor(private readonly fh: FileHandle) {
    super();
  }

  override _readStreamForRange(start: number, end: number): Readable {
    const fh = this.fh;
    let pos = start;
    return new Readable({
      highWaterMark: 64 * 1024,
      read(size) {
        const n = Math.min(size, end - pos);
        if (n <= 0) {
          this.push(null);
          return;
        }
        const buf = Buffer.allocUnsafe(n);
        fh.read(buf, 0, n, pos).then(
          ({ bytesRead }) => {
            if (bytesRead === 0) {
              this.destroy(new Error("the zip ends before an entry's data does"));
              return;
            }
            pos += bytesRead;
            this.push(buf.subarray(0, bytesRead));
          },
          (err: unknown) => this.destroy(err as Error),
        );
      },
    });
  }
}

function unsafeZip(message: string): ArchiveError {
  return new ArchiveError("UnsafeArchive", `refusing to extract: ${message}`);
}

function tooLargeZip(maxBytes: number): ArchiveError {
  return new ArchiveError("TooLarge", `refusing to extract: the archive unpacks to more than ${maxBytes} bytes of files`);
}
