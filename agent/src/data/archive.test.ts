import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, truncateSync, appendFileSync } from "node:fs";
import { chmod, chown, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";
import * as tar from "tar-stream";
import { compress } from "@bokuweb/zstd-wasm";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureBinary } from "../../../test/harness/docker-engine.js";
import { compileIgnore, compressionForKey, createArchive, extractArchive, openArchive, verifyArchive, type ArchiveCompression, type ArchiveProgress, type CreateArchiveOptions } from "./archive.js";
import { FRAME_INPUT_BYTES, MAX_FRAME_CONTENT, ZstdFormatError, ZstdFrameSplitter, compressFrames, decompressFrame, zstdReady } from "./zstd-stream.js";

const isRoot = process.getuid?.() === 0;
// GNU tar's --zstd runs the zstd CLI: an operator restoring by hand needs nothing but these two.
beforeAll(async () => {
  await ensureBinary("zstd", "zstd");
}, 300_000);
const run = promisify(execFile);
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "berth-archive-"));
  dirs.push(d);
  return d;
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface Row {
  path: string;
  type: "dir" | "file" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  sha256?: string;
  link?: string;
}

/** Everything a restore must bring back, per entry: relative path, type, mode, owner, mtime (s), size, content hash, link text. */
async function listing(root: string): Promise<Row[]> {
  const rows: Row[] = [];
  const visit = async (abs: string, rel: string): Promise<void> => {
    const st = await lstat(abs);
    const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : "file";
    rows.push({
      path: rel || ".",
      type,
      mode: type === "symlink" ? 0 : st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: Math.floor(st.mtimeMs / 1000),
      size: type === "file" ? st.size : 0,
      ...(type === "file" ? { sha256: sha256(await readFile(abs)) } : {}),
      ...(type === "symlink" ? { link: await readlink(abs) } : {}),
    });
    if (type === "dir") for (const name of (await readdir(abs)).sort()) await visit(join(abs, name), rel ? `${rel}/${name}` : name);
  };
  await visit(root, "");
  return rows;
}

async function archiveTo(dir: string, file: string, opts: CreateArchiveOptions = {}) {
  return createArchive(dir, createWriteStream(file), opts);
}

const T1 = new Date("2021-03-04T05:06:07Z");
const T2 = new Date("2019-11-12T13:14:15Z");

/** A tree with every kind of entry berth archives, times and modes set by hand. */
async function sampleTree(base: string): Promise<string> {
  const src = join(base, "src");
  await mkdir(join(src, "a", "b", "c"), { recursive: true });
  await mkdir(join(src, "empty-dir"));
  await writeFile(join(src, "a", "b", "c", "deep.txt"), "deep\n".repeat(1000));
  await writeFile(join(src, "empty-file"), "");
  await writeFile(join(src, "big.bin"), randomBytes(5 * 1024 * 1024));
  await chmod(join(src, "big.bin"), 0o600);
  await writeFile(join(src, "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(src, "run.sh"), 0o755);
  await writeFile(join(src, "ünïcode näme with a long tail " + "x".repeat(120)), "pax path");
  await symlink("a/b/c/deep.txt", join(src, "link-rel"));
  await symlink("/nonexistent/absolute/target", join(src, "link-abs"));
  if (isRoot) await chown(join(src, "run.sh"), 1234, 5678);
  await chmod(join(src, "a"), 0o750);
  for (const f of ["a/b/c/deep.txt", "empty-file", "big.bin", "run.sh"]) await utimes(join(src, f), T1, T1);
  await lutimes(join(src, "link-rel"), T2, T2);
  await lutimes(join(src, "link-abs"), T2, T2);
  for (const d of ["a/b/c", "a/b", "a", "empty-dir", "."]) await utimes(join(src, d), T2, T2);
  await chmod(src, 0o710);
  return src;
}

describe("createArchive / verifyArchive / extractArchive round trip", () => {
  it("restores the same tree (paths, types, modes, owners, mtimes, contents, link text), and GNU tar reads the archive", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const before = await listing(src);
    const file = join(base, "bk.tar.zst");
    const progress: ArchiveProgress[] = [];

    const stats = await archiveTo(src, file, { onProgress: (p) => progress.push(p) });

    const bytes = await readFile(file);
    expect(stats).toMatchObject({ sha256: sha256(bytes), archiveBytes: bytes.length, files: before.length - 1, skipped: 0, ignored: 0, changed: 0 });
    const fileBytes = before.reduce((n, r) => n + r.size, 0);
    expect(stats.rawBytes).toBe(fileBytes);
    expect(progress.at(-1)).toEqual({ bytesDone: fileBytes, bytesTotal: fileBytes, files: before.length - 1 });
    await verifyArchive(file, stats.sha256);

    const dest = join(base, "restored");
    expect(await extractArchive(createReadStream(file), dest)).toEqual({ files: stats.files, rawBytes: stats.rawBytes });
    expect(await listing(dest)).toEqual(before);

    expect((await readFile(file)).subarray(0, 4).toString("hex")).toBe("28b52ffd");
    const { stdout } = await run("tar", ["--zstd", "-tf", file]);
    expect(stdout.split("\n").filter(Boolean).sort()).toEqual(
      before.map((r) => (r.path === "." ? "./" : r.type === "dir" ? `${r.path}/` : r.path)).sort(),
    );
    const byTar = join(base, "by-tar");
    await mkdir(byTar);
    await run("tar", ["--zstd", "-xpf", file, "-C", byTar]);
    expect(await listing(byTar)).toEqual(before);
  });

  it("archives the same tree to the same bytes", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const a = await archiveTo(src, join(base, "a.tar.gz"));
    const b = await archiveTo(src, join(base, "b.tar.gz"));
    expect(b.sha256).toBe(a.sha256);
  });

  it("hands out no setuid/setgid bit on a file, in the archive or the restore; a directory keeps setgid", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(join(src, "shared"), { recursive: true });
    await chmod(join(src, "shared"), 0o2775);
    await writeFile(join(src, "sh"), "x");
    await chmod(join(src, "sh"), 0o6755);
    const file = join(base, "bk.tar.gz");

    const stats = await archiveTo(src, file);
    expect(stats.setidCleared).toBe(1);
    const { stdout } = await run("tar", ["--zstd", "-tvf", file]);
    expect(stdout).toMatch(/^-rwxr-xr-x .* sh$/m);
    const dest = join(base, "restored");
    await extractArchive(createReadStream(file), dest);
    expect((await lstat(join(dest, "sh"))).mode & 0o7777).toBe(0o755);
    expect((await lstat(join(dest, "shared"))).mode & 0o7777).toBe(0o2775);
  });

  it("skips sockets and FIFOs and counts them", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(src);
    await writeFile(join(src, "keep"), "x");
    await run("mkfifo", [join(src, "pipe")]);
    const file = join(base, "bk.tar.gz");
    const stats = await archiveTo(src, file);
    expect(stats).toMatchObject({ files: 1, skipped: 1 });
    const dest = join(base, "restored");
    await extractArchive(createReadStream(file), dest);
    expect(await readdir(dest)).toEqual(["keep"]);
  });

  it.each([
    ["shrinks", (p: string) => truncateSync(p, 1000)],
    ["grows", (p: string) => appendFileSync(p, randomBytes(1024 * 1024))],
  ])("a file that %s while it is read is archived at its size when opened, counted as changed, and the tar stays valid", async (_what, change) => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(src);
    const size = 4 * 1024 * 1024;
    const content = randomBytes(size);
    await writeFile(join(src, "live.db"), content);
    const file = join(base, "bk.tar.gz");
    let changed = false;
    const stats = await archiveTo(src, file, {
      onProgress: () => {
        if (!changed) change(join(src, "live.db"));
        changed = true;
      },
    });
    expect(stats.changed).toBe(1);
    const dest = join(base, "restored");
    await extractArchive(createReadStream(file), dest);
    const restored = await readFile(join(dest, "live.db"));
    expect(restored.length).toBe(size);
    await run("tar", ["--zstd", "-tf", file]);
  });
});

describe("ignore patterns", () => {
  it.each<[string[], string, boolean, boolean]>([
    [["*.log"], "a.log", false, true],
    [["*.log"], "x/y/a.log", false, true],
    [["*.log"], "a.log.txt", false, false],
    [["cache/"], "cache", true, true],
    [["cache/"], "cache", false, false],
    [["cache/"], "x/cache", true, true],
    [["/cache"], "cache", true, true],
    [["/cache"], "x/cache", true, false],
    [["logs/*.gz"], "logs/a.gz", false, true],
    [["logs/*.gz"], "x/logs/a.gz", false, false],
    [["logs/*.gz"], "logs/sub/a.gz", false, false],
    [["**/tmp"], "tmp", true, true],
    [["**/tmp"], "a/b/tmp", true, true],
    [["a/**"], "a/x", false, true],
    [["a/**"], "a/x/y", false, true],
    [["a/**"], "a", true, false],
    [["a/**/b"], "a/b", false, true],
    [["a/**/b"], "a/x/y/b", false, true],
    [["a/**/b"], "c/a/b", false, false],
    [["file?.txt"], "file1.txt", false, true],
    [["file?.txt"], "file10.txt", false, false],
    [["*.log", "!keep.log"], "keep.log", false, false],
    [["*.log", "!keep.log"], "other.log", false, true],
    [["!keep.log", "*.log"], "keep.log", false, true],
    [["# comment", ""], "# comment", false, false],
    [["a.b"], "aXb", false, false],
    [["[x]"], "[x]", false, true],
    [["*"], "anything/at/all", false, true],
  ])("%j on %s (dir: %s) -> ignored %s", (patterns, path, isDir, expected) => {
    expect(compileIgnore(patterns)(path, isDir)).toBe(expected);
  });

  it("leaves ignored files and directories out of the archive; nothing inside an ignored directory comes back", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(join(src, "cache"), { recursive: true });
    await mkdir(join(src, "data"));
    await writeFile(join(src, "cache", "keep.log"), "x");
    await writeFile(join(src, "cache", "blob"), "x");
    await writeFile(join(src, "a.log"), "x");
    await writeFile(join(src, "keep.log"), "x");
    await writeFile(join(src, "data", "world.dat"), "x");
    await writeFile(join(src, "data", "debug.log"), "x");
    const file = join(base, "bk.tar.gz");

    const stats = await archiveTo(src, file, { ignore: ["*.log", "!keep.log", "/cache/"] });

    expect(stats.ignored).toBe(3);
    const dest = join(base, "restored");
    await extractArchive(createReadStream(file), dest);
    expect((await listing(dest)).map((r) => r.path)).toEqual([".", "data", "data/world.dat", "keep.log"]);
  });
});

describe("verifyArchive", () => {
  it("rejects an archive with one flipped byte (ChecksumMismatch, both hashes named) and a missing one (ArchiveMissing)", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const file = join(base, "bk.tar.gz");
    const stats = await archiveTo(src, file);
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(file, bytes);
    const err = await verifyArchive(file, stats.sha256).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "ChecksumMismatch" });
    expect((err as Error).message).toContain(stats.sha256);
    expect((err as Error).message).toContain(sha256(bytes));
    await expect(verifyArchive(join(base, "gone.tar.gz"), stats.sha256)).rejects.toMatchObject({ reason: "ArchiveMissing" });
  });
});

describe("extractArchive with the recorded sha256 (a restore: checked on the way through)", () => {
  it("extracts when it matches; another valid archive under that sha256 is ChecksumMismatch and leaves nothing", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const file = join(base, "bk.tar.zst");
    const stats = await archiveTo(src, file);
    const dest = join(base, "ok");
    await extractArchive(await openArchive(file), dest, { sha256: stats.sha256, bytesTotal: stats.rawBytes });
    expect(await listing(dest)).toEqual(await listing(src));

    // A well-formed archive of other data, the same size, put in its place: only the hash can tell.
    await writeFile(join(src, "run.sh"), "#!/bin/sh\necho HI\n");
    const other = join(base, "other.tar.zst");
    const otherStats = await archiveTo(src, other);
    const replaced = join(base, "replaced");
    const err = await extractArchive(await openArchive(other), replaced, { sha256: stats.sha256, bytesTotal: stats.rawBytes }).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "ChecksumMismatch" });
    expect((err as Error).message).toContain(stats.sha256);
    expect((err as Error).message).toContain(otherStats.sha256);
    await expect(lstat(replaced)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("stops as soon as the archive unpacks to more file bytes than were recorded (ChecksumMismatch), and leaves nothing", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(src);
    for (let i = 0; i < 8; i++) await writeFile(join(src, `f${i}`), randomBytes(1024 * 1024));
    const file = join(base, "bk.tar.zst");
    const stats = await archiveTo(src, file);
    const dest = join(base, "dest");
    const written: number[] = [];
    const err = await extractArchive(await openArchive(file), dest, { sha256: stats.sha256, bytesTotal: 2 * 1024 * 1024, onProgress: (p) => written.push(p.bytesDone) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "ChecksumMismatch", message: expect.stringContaining("more than the 2097152 bytes") });
    expect(Math.max(0, ...written)).toBeLessThanOrEqual(2 * 1024 * 1024);
    await expect(lstat(dest)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("openArchive: a missing archive is ArchiveMissing", async () => {
    const base = await scratch();
    await expect(openArchive(join(base, "gone.tar.zst"))).rejects.toMatchObject({ reason: "ArchiveMissing" });
  });
});

describe("abort", () => {
  it("stops creating an archive when the signal fires and rejects with Aborted", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(src);
    const size = 32 * 1024 * 1024;
    await writeFile(join(src, "huge.bin"), randomBytes(size));
    const ac = new AbortController();
    let written = 0;
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb();
      },
    });
    await expect(createArchive(src, out, { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ reason: "Aborted" });
    expect(written).toBeLessThan(size / 2);
  });

  it("removes the partial destination when extraction is aborted", async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(src);
    await writeFile(join(src, "a"), randomBytes(1024 * 1024));
    await writeFile(join(src, "b"), randomBytes(4 * 1024 * 1024));
    const file = join(base, "bk.tar.gz");
    await archiveTo(src, file);
    const ac = new AbortController();
    const dest = join(base, "restored");
    await expect(extractArchive(createReadStream(file), dest, { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ reason: "Aborted" });
    await expect(lstat(dest)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("extractArchive refuses what it must not do", () => {
  it("never extracts into an existing directory, and leaves it alone", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const file = join(base, "bk.tar.gz");
    await archiveTo(src, file);
    const dest = join(base, "existing");
    await mkdir(dest);
    await writeFile(join(dest, "precious"), "keep me");
    await expect(extractArchive(createReadStream(file), dest)).rejects.toMatchObject({ reason: "DestinationExists" });
    expect(await readFile(join(dest, "precious"), "utf8")).toBe("keep me");
  });

  it.each<[ArchiveCompression, number]>([
    ["gzip", 1000],
    ["zstd", 1000],
    ["zstd", 3], // inside the last block's header
    ["zstd", 1], // the last byte of the last frame
  ])("removes the partial destination when a %s archive is cut short (%i bytes missing)", async (compression, cut) => {
    const base = await scratch();
    const src = await sampleTree(base);
    const file = join(base, "bk");
    await archiveTo(src, file, { compression });
    const bytes = await readFile(file);
    const dest = join(base, "restored");
    const err = await extractArchive(Readable.from([bytes.subarray(0, bytes.length - cut)]), dest).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    if (compression === "zstd") expect(err).toMatchObject({ reason: "UnsafeArchive", message: expect.stringMatching(/truncated|damaged/) });
    await expect(lstat(dest)).rejects.toMatchObject({ code: "ENOENT" });
  });

  /** A tar of these entries, built by hand, compressed with gzip or zstd. */
  async function hostile(entries: Array<{ header: tar.Headers; body?: string }>, compression: ArchiveCompression): Promise<Buffer> {
    await zstdReady();
    const pack = tar.pack();
    for (const e of entries) pack.entry(e.header, e.body ?? "");
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of compression === "gzip" ? pack.pipe(createGzip()) : compressFrames(pack, 1)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  const ok = { header: { name: "ok.txt", type: "file" as const }, body: "fine" };
  type Entries = (outside: string) => Array<{ header: tar.Headers; body?: string }>;
  const cases: Array<[string, Entries]> = [
    ["a ../ name", () => [ok, { header: { name: "../x", type: "file" }, body: "escaped" }]],
    ["a .. hidden in the middle", () => [ok, { header: { name: "a/../../x", type: "file" }, body: "escaped" }]],
    ["an absolute name", (outside) => [ok, { header: { name: join(outside, "x"), type: "file" }, body: "escaped" }]],
    [
      "a file through a symlink entry",
      (outside) => [ok, { header: { name: "l", type: "symlink", linkname: outside } }, { header: { name: "l/file", type: "file" }, body: "escaped" }],
    ],
    [
      "a symlink entry over a path an earlier entry went through",
      (outside) => [ok, { header: { name: "l/inner", type: "symlink", linkname: "x" } }, { header: { name: "l", type: "symlink", linkname: outside } }],
    ],
    ["a hard link to outside", (outside) => [ok, { header: { name: "h", type: "link", linkname: join(outside, "precious") } }]],
    ["a character device", () => [ok, { header: { name: "null", type: "character-device", devmajor: 1, devminor: 3 } }]],
    ["a FIFO", () => [ok, { header: { name: "pipe", type: "fifo" } }]],
    ["a name given twice", () => [ok, { header: { name: "ok.txt", type: "file" }, body: "replaced" }]],
  ];
  it.each(cases.flatMap(([what, entries]) => (["gzip", "zstd"] as const).map((c): [string, Entries, ArchiveCompression] => [`${what} (${c})`, entries, c])))("refuses %s (UnsafeArchive), removes dest, writes nothing outside", async (_what, entries, compression) => {
    const base = await scratch();
    const outside = join(base, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "precious"), "keep me");
    const dest = join(base, "sub", "dest");
    await mkdir(join(base, "sub"));
    // dest's parent gets a new mtime from making and removing dest: the rest must not change.
    const outsideDest = async () => (await listing(base)).map((r) => (r.path === "sub" ? { ...r, mtime: 0 } : r));
    const before = await outsideDest();

    await expect(extractArchive(Readable.from([await hostile(entries(outside), compression)]), dest)).rejects.toMatchObject({ reason: "UnsafeArchive" });

    await expect(lstat(dest)).rejects.toMatchObject({ code: "ENOENT" });
    expect(await outsideDest()).toEqual(before);
  });
});

describe("compression: zstd for new archives, gzip still read", () => {
  it("compressFrames (worker threads) keeps the order of pieces that finish out of order", async () => {
    await zstdReady();
    // Large random pieces take longer than small or repetitive ones: later pieces finish first.
    const sizes = [3 * 1024 * 1024, 10, 4 * 1024 * 1024, 1, 200_000, 0, 2 * 1024 * 1024, 17, 4 * 1024 * 1024, 5];
    const pieces = sizes.map((n, i) => (i % 2 ? Buffer.alloc(n, i) : randomBytes(n)));
    const expected = Buffer.concat(pieces);
    async function* source(): AsyncGenerator<Buffer> {
      for (const p of pieces) yield Buffer.from(p); // a copy: pieces that own their buffer are handed over
    }
    const frames: Buffer[] = [];
    for await (const f of compressFrames(source(), 1)) frames.push(f);
    expect(frames).toHaveLength(pieces.length);
    expect(Buffer.concat(frames.map((f) => decompressFrame(f))).equals(expected)).toBe(true);
  });

  /** `data` cut into pieces of `size` bytes. */
  const pieces = (data: Buffer, size: number) => Array.from({ length: Math.ceil(data.length / size) }, (_, i) => data.subarray(i * size, (i + 1) * size));
  const frameCount = (data: Buffer) => new ZstdFrameSplitter().push(data).length;

  it("chooses zstd for a .tar.zst key and gzip for any other (backups made before zstd)", () => {
    expect(compressionForKey("srv_a/bk_1.tar.zst")).toBe("zstd");
    expect(compressionForKey("srv_a/bk_1.tar.gz")).toBe("gzip");
    expect(compressionForKey("srv_a/bk_1")).toBe("gzip");
  });

  it("still extracts a gzip archive (what every backup before zstd is), detected by its first bytes", async () => {
    const base = await scratch();
    const src = await sampleTree(base);
    const before = await listing(src);
    const file = join(base, "old.tar.gz");
    await archiveTo(src, file, { compression: "gzip" });
    expect((await readFile(file)).subarray(0, 2).toString("hex")).toBe("1f8b");
    await run("tar", ["tzf", file]);
    const dest = join(base, "restored");
    await extractArchive(createReadStream(file), dest);
    expect(await listing(dest)).toEqual(before);
  });

  it("writes one frame per FRAME_INPUT_BYTES of tar, which the zstd CLI reads as one stream; extraction reads it however it is chunked", { timeout: 60_000 }, async () => {
    const base = await scratch();
    const src = join(base, "src");
    await mkdir(join(src, "logs"), { recursive: true });
    // ~2.5 frames of text: compresses to little, so the archive can be fed one byte at a time.
    let text = "";
    for (let i = 0; text.length < 2.5 * FRAME_INPUT_BYTES; i++) text += `a line of the server log, level=info region=${i % 97}\n`;
    await writeFile(join(src, "logs", "latest.log"), text);
    await writeFile(join(src, "small.txt"), "small\n");
    const before = await listing(src);
    const file = join(base, "bk.tar.zst");
    await archiveTo(src, file);
    const bytes = await readFile(file);
    expect(frameCount(bytes)).toBe(3);
    const { stdout } = await run("sh", ["-c", `zstd -dc "${file}" | tar -tf -`]);
    expect(stdout.split("\n").filter(Boolean).sort()).toEqual(["./", "logs/", "logs/latest.log", "small.txt"]);

    for (const size of [1, 7, 4093, 65_537]) {
      const dest = join(base, `restored-${size}`);
      await extractArchive(Readable.from(pieces(bytes, size)), dest);
      expect(await listing(dest)).toEqual(before);
    }
  });

  /** Frames of each block type (raw, RLE, compressed), a skippable frame, and the zstd CLI's frame (with a checksum). */
  async function mixedStream(base: string): Promise<{ stream: Buffer; plain: Buffer; ends: Set<number> }> {
    await zstdReady(); // once per process: a second init() leaves the module writing zeros
    const random = randomBytes(300);
    const zeros = Buffer.alloc(2000);
    const words = Buffer.from("the world saves its regions every five minutes; ".repeat(30));
    const viaCli = Buffer.from("made by the zstd command line tool\n".repeat(20));
    await writeFile(join(base, "cli.txt"), viaCli);
    const cli = (await run("zstd", ["-q", "-c", "--check", join(base, "cli.txt")], { encoding: "buffer" })).stdout;
    const skippable = Buffer.concat([Buffer.from([0x53, 0x2a, 0x4d, 0x18, 5, 0, 0, 0]), Buffer.from("hello")]);
    const z = (b: Buffer) => Buffer.from(compress(b, 1));
    const frames = [z(random), skippable, z(zeros), z(words), cli, skippable];
    let at = 0;
    return { stream: Buffer.concat(frames), plain: Buffer.concat([random, zeros, words, viaCli]), ends: new Set(frames.map((f) => (at += f.length))) };
  }

  it("splits frames correctly wherever the stream is cut: every two-piece split and one byte at a time", async () => {
    const { stream, plain, ends } = await mixedStream(await scratch());
    const read = (chunks: Buffer[]) => {
      const s = new ZstdFrameSplitter();
      const out = chunks.flatMap((c) => s.push(c)).map(decompressFrame);
      s.end();
      return Buffer.concat(out);
    };
    expect(read([stream]).equals(plain)).toBe(true);
    expect(read(pieces(stream, 1)).equals(plain)).toBe(true);
    for (let k = 0; k <= stream.length; k++) {
      if (!read([stream.subarray(0, k), stream.subarray(k)]).equals(plain)) throw new Error(`wrong output when split at ${k} of ${stream.length}`);
    }
    // Cut anywhere but between frames, the stream is truncated: end() refuses.
    for (let k = 1; k < stream.length; k++) {
      const s = new ZstdFrameSplitter();
      s.push(stream.subarray(0, k));
      if (ends.has(k)) s.end();
      else expect(() => s.end(), `cut at ${k}`).toThrow(ZstdFormatError);
    }
  });

  it.each<[string, () => Buffer]>([
    ["bytes that are neither gzip nor zstd", () => Buffer.from("PK\x03\x04 a zip file, not a backup")],
    ["garbage after the zstd magic", () => Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(4096)])],
    ["a frame with the reserved header bit", () => Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x08, 0x00, 0x01, 0x00, 0x00])],
    ["a reserved block type", () => Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x07, 0x00, 0x00, 1, 2, 3])],
    ["a valid frame, then garbage", () => Buffer.concat([Buffer.from(compress(Buffer.from("x".repeat(1000)), 1)), Buffer.from("garbage!")])],
    [
      "a frame declaring 1 TiB of content",
      // Frame_Content_Size_flag 3 (8 bytes), a window descriptor, 2^40, then one last raw block of 1 byte.
      () => Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x00]), Buffer.from([0, 0, 0, 0, 0, 1, 0, 0]), Buffer.from([0x09, 0x00, 0x00, 0x41])]),
    ],
    [
      "a frame without a declared size whose RLE blocks expand past MAX_FRAME_CONTENT",
      // No content size, a window descriptor, then 128 KiB RLE blocks (4 bytes each) never marked last.
      () => {
        const header = ((128 * 1024) << 3) | (1 << 1); // Block_Size 128 KiB, Block_Type 1 (RLE), not Last_Block
        const block = Buffer.from([header & 0xff, (header >> 8) & 0xff, header >> 16, 0x41]);
        return Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00]), ...Array.from({ length: MAX_FRAME_CONTENT / (128 * 1024) + 2 }, () => block)]);
      },
    ],
  ])("refuses %s (UnsafeArchive) and removes dest", async (_what, make) => {
    await zstdReady();
    const base = await scratch();
    const dest = join(base, "dest");
    await expect(extractArchive(Readable.from(pieces(make(), 1000)), dest)).rejects.toMatchObject({ reason: "UnsafeArchive" });
    await expect(lstat(dest)).rejects.toMatchObject({ code: "ENOENT" });
  });
});
