/**
 * Making an archive (.tar.gz or .zip) of entries of a server's data
 * directory, written into the data directory (the file manager's
 * "compress"). The tree is walked through open directory descriptors like
 * every other operation (confined.ts), so no symlink is followed even if a
 * container swaps one in while the archive is made; symlinks, devices,
 * sockets and FIFOs are left out and reported (the archive is an export a
 * person reads the report of, unlike a copy, which is all or nothing). The
 * archive is written through ServerFiles.write: a temporary file renamed
 * into place, bounded by maxBytes and the free space less the reserve.
 */
import { once } from "node:events";
import { type Stats } from "node:fs";
import { readdir, type FileHandle } from "node:fs/promises";
import { PassThrough, type Readable, type Writable } from "node:stream";
import { createGzip } from "node:zlib";
import * as tar from "tar-stream";
import * as yazl from "yazl";
import { ConfinedDir, parseUserPath, showPath, specialRefused, symlinkRefused } from "./confined.js";
import { FileOpError } from "./errors.js";
import { openRegularFile, READ_CHUNK, UPLOAD_PREFIX, type FileEntry, type ServerFiles } from "./server-files.js";

export type CreateFormat = "tar.gz" | "zip";

export interface CreateArchiveOptions {
  format: CreateFormat;
  /** Most bytes of archive to write; more is "too_large" and nothing is written. */
  maxBytes: number;
  /** Most entries (default: the ServerFiles' maxEntries). */
  maxEntries?: number;
}

export interface CreateArchiveResult {
  entry: FileEntry;
  /** Files and directories archived. */
  entries: number;
  /** Symlinks, devices, sockets and FIFOs left out, by path (the first 100). */
  skipped: string[];
  skippedCount: number;
}

/** One entry to archive: a directory, or a regular file open for reading (closed by whoever takes it). */
type Item = { kind: "dir"; name: string; st: Stats } | { kind: "file"; name: string; st: Stats; fh: FileHandle };

const SETID_BITS = 0o6000;
/** ustar's largest size (11 octal digits). */
const USTAR_MAX_SIZE = 8 ** 11 - 1;
const USTAR_MAX_ID = 8 ** 6 - 1;
const MAX_SKIPPED_LISTED = 100;

/**
 * Archives `paths` (each a file or directory of the data directory; "/"
 * alone archives everything in it) into the new file `destArchive`, which
 * must not exist. Each path is archived under its last component, its tree
 * below it; two paths with the same last component are refused.
 */
export async function createArchiveFile(files: ServerFiles, paths: string[], destArchive: string, opts: CreateArchiveOptions): Promise<CreateArchiveResult> {
  const selected = paths.map(parseUserPath);
  if (selected.length === 0) throw new FileOpError("invalid_argument", "name at least one file or directory to archive");
  if (selected.some((p) => p.length === 0) && selected.length > 1) {
    throw new FileOpError("invalid_argument", `archive "/" alone (everything in the data directory), or entries within it, not both`);
  }
  const tops = selected.map((p) => p.at(-1) ?? "");
  const twice = tops.find((t, i) => tops.indexOf(t) !== i);
  if (twice !== undefined) throw new FileOpError("invalid_argument", `two paths end in ${JSON.stringify(twice)}; they would be the same entry of the archive`);
  const destParts = parseUserPath(destArchive);
  if (destParts.length === 0) throw new FileOpError("is_a_directory", "/ is the server's data directory; name the archive file to create");
  if ((await files.stat(destArchive).catch(() => undefined)) !== undefined) {
    throw new FileOpError("exists", `${showPath(destParts)} already exists; delete it first, or choose another name`);
  }

  const maxEntries = opts.maxEntries ?? files.maxEntries;
  const skipped: string[] = [];
  let skippedCount = 0;
  let entries = 0;
  const items = walkSelected(files, selected, (parts) => {
    if (skipped.length < MAX_SKIPPED_LISTED) skipped.push(showPath(parts));
    skippedCount++;
  });
  async function* counted(): AsyncGenerator<Item> {
    for await (const item of items) {
      if (++entries > maxEntries) {
        if (item.kind === "file") await item.fh.close();
        throw new FileOpError("too_large", `the archive would hold more than ${maxEntries} entries; archive fewer paths at once`);
      }
      yield item;
    }
  }

  const ac = new AbortController();
  const archive = lazily(opts.format === "zip" ? () => zipOf(counted(), ac.signal) : () => tarGzOf(counted(), ac.signal));
  let entry: FileEntry;
  try {
    entry = await files.write(destArchive, archive.output, { maxBytes: opts.maxBytes });
  } catch (err) {
    ac.abort();
    await archive.finished().catch(() => {});
    throw err;
  }
  await archive.finished();
  return { entry, entries, skipped, skippedCount };
}

interface Producer {
  /** The archive's bytes. */
  output: Readable;
  /** Settles when every entry was added (or adding failed): no file is open any more. */
  producing: Promise<void>;
}

/**
 * The archive's bytes, the producer started only when they are first read:
 * a write refused before it reads (the destination exists, is a symlink...)
 * never walks a thing.
 */
function lazily(start: () => Producer): { output: AsyncIterable<Buffer>; finished(): Promise<void> } {
  let producing: Promise<void> | undefined;
  async function* output(): AsyncGenerator<Buffer> {
    const p = start();
    producing = p.producing;
    p.output.on("error", () => {}); // seen by the loop below; without a listener it would be an uncaught exception
    producing.catch((err: unknown) => p.output.destroy(err as Error));
    for await (const chunk of p.output) yield chunk as Buffer;
  }
  return { output: output(), finished: () => producing ?? Promise.resolve() };
}

/** The selected entries, parents before children, each directory's names sorted; what is left out goes to `skip`. */
async function* walkSelected(files: ServerFiles, selected: string[][], skip: (parts: string[]) => void): AsyncGenerator<Item> {
  for (const parts of selected) {
    if (parts.length === 0) {
      const root = await files.confined.openRoot();
      try {
        yield* walkDir(root, "", skip);
      } finally {
        await root.close();
      }
      continue;
    }
    const parent = await files.confined.openDir(parts.slice(0, -1));
    try {
      yield* walkEntry(parent, parts.at(-1)!, "", skip, true);
    } finally {
      await parent.close();
    }
  }
}

async function* walkDir(dir: ConfinedDir, prefix: string, skip: (parts: string[]) => void): AsyncGenerator<Item> {
  for (const name of (await readdir(dir.path)).sort()) {
    if (name.startsWith(UPLOAD_PREFIX)) continue; // an upload in progress (this archive's own, among others)
    yield* walkEntry(dir, name, prefix, skip, false);
  }
}

async function* walkEntry(dir: ConfinedDir, name: string, prefix: string, skip: (parts: string[]) => void, selected: boolean): AsyncGenerator<Item> {
  const parts = [...dir.parts, name];
  const st = await dir.lstat(name);
  if (!st) {
    if (selected) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
    return; // removed while walking
  }
  if (selected && st.isSymbolicLink()) throw symlinkRefused(parts);
  if (selected && !st.isFile() && !st.isDirectory()) throw specialRefused(parts);
  const archived = `${prefix}${name}`;
  if (st.isFile()) {
    const opened = await openRegularFile(dir, name).catch((err: unknown) => {
      if (!selected && err instanceof FileOpError) return undefined; // changed while walking: left out
      throw err;
    });
    if (opened) yield { kind: "file", name: archived, st: opened.st, fh: opened.fh };
    else skip(parts);
  } else if (st.isDirectory()) {
    yield { kind: "dir", name: `${archived}/`, st };
    const sub = await dir.openDir(name).catch((err: unknown) => {
      if (!selected && err instanceof FileOpError) return undefined;
      throw err;
    });
    if (!sub) return;
    try {
      yield* walkDir(sub, `${archived}/`, skip);
    } finally {
      await sub.close();
    }
  } else skip(parts);
}

/** Exactly `size` bytes of the open file, from its start (cut if it grew, zeros if it shrank: the header said `size`). */
async function* fileBytes(fh: FileHandle, size: number): AsyncGenerator<Buffer> {
  let short = false;
  for (let pos = 0; pos < size; ) {
    const n = Math.min(READ_CHUNK, size - pos);
    const buf = Buffer.alloc(n);
    const { bytesRead } = short ? { bytesRead: 0 } : await fh.read(buf, 0, n, pos);
    if (bytesRead < n) short = true;
    pos += n;
    yield buf;
  }
}

/** Writes `chunks` into `sink`, waiting whenever it is full. */
async function writeInto(sink: Writable, chunks: AsyncIterable<Buffer>, signal: AbortSignal): Promise<void> {
  for await (const chunk of chunks) {
    if (!sink.write(chunk)) await once(sink, "drain", { signal });
  }
}

function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function tarGzOf(items: AsyncIterable<Item>, signal: AbortSignal): Producer {
  const pack = tar.pack();
  const gz = createGzip({ level: 6 });
  pack.pipe(gz);
  const producing = (async () => {
    for await (const item of items) {
      signal.throwIfAborted();
      const header = {
        name: item.name,
        type: item.kind === "dir" ? ("directory" as const) : ("file" as const),
        size: item.kind === "dir" ? 0 : item.st.size,
        mode: item.st.mode & (item.kind === "dir" ? 0o3777 : 0o7777 & ~SETID_BITS),
        mtime: new Date(Math.floor(item.st.mtimeMs / 1000) * 1000),
        // The same for owners (6 octal digits): one beyond that (a remapped user namespace's) is archived as 0.
        uid: item.st.uid <= USTAR_MAX_ID ? item.st.uid : 0,
        gid: item.st.gid <= USTAR_MAX_ID ? item.st.gid : 0,
      };
      if (item.kind === "dir") {
        await new Promise<void>((resolve, reject) => pack.entry(header, (err) => (err ? reject(err) : resolve())));
        continue;
      }
      if (item.st.size > USTAR_MAX_SIZE) {
        await item.fh.close();
        // tar-stream 2's pack writes the size in 11 octal digits whatever it is, with no pax size record (archive.ts writes its own headers for backups).
        throw new FileOpError("too_large", `/${item.name} is larger than 8 GiB, more than this .tar.gz can hold; make a .zip instead`);
      }
      try {
        let sink!: Writable;
        const done = new Promise<void>((resolve, reject) => {
          sink = pack.entry(header, (err) => (err ? reject(err) : resolve())) as unknown as Writable;
        });
        await writeInto(sink, fileBytes(item.fh, item.st.size), signal);
        sink.end();
        await untilAborted(done, signal); // once the archive is no longer read, pack never calls back
      } finally {
        await item.fh.close();
      }
    }
    pack.finalize();
  })();
  return { output: gz, producing };
}

function zipOf(items: AsyncIterable<Item>, signal: AbortSignal): Producer {
  const zip = new yazl.ZipFile();
  const output = zip.outputStream as unknown as Readable;
  const producing = (async () => {
    for await (const item of items) {
      signal.throwIfAborted();
      const mtime = new Date(item.st.mtimeMs);
      if (item.kind === "dir") {
        zip.addEmptyDirectory(item.name, { mtime, mode: 0o040000 | (item.st.mode & 0o1777) });
        continue;
      }
      try {
        // yazl reads entries in order: this one's bytes flow once the ones before it are written.
        const body = new PassThrough({ highWaterMark: READ_CHUNK });
        zip.addReadStream(body, item.name, { mtime, mode: 0o100000 | (item.st.mode & 0o1777), size: item.st.size });
        await writeInto(body, fileBytes(item.fh, item.st.size), signal);
        body.end();
        await once(body, "end", { signal });
      } finally {
        await item.fh.close();
      }
    }
    zip.end();
  })();
  return { output, producing };
}
