import { execFile } from "node:child_process";
import { createWriteStream } from "node:fs";
import { chmod, chown, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import * as tar from "tar-stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { expectCode, makeFixture, openFilesUnder, type Fixture } from "../../testing/files-fixture.js";
import { zipOf } from "../../testing/zip-writer.js";
import { createArchive } from "../data/archive.js";
import { archiveFormatOf, extractFile } from "./file-archives.js";
import { ServerFiles } from "./server-files.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;

let fx: Fixture;
let before: string[];
let src: string;
beforeEach(async () => {
  fx = await makeFixture();
  await mkdir(join(fx.data, "uploads"));
  await symlink(fx.outside, join(fx.data, "linkdir"));
  await writeFile(join(fx.base, "outside.zip"), zipOf([{ name: "x", data: "x" }]));
  // Trees the tests pack with GNU tar (outside the data directory, so made before the snapshot).
  src = join(fx.base, "src");
  await mkdir(join(src, "world", "region"), { recursive: true });
  await writeFile(join(src, "world", "level.dat"), "level");
  await writeFile(join(src, "world", "region", "r.0.0.mca"), Buffer.alloc(100_000, 7));
  await chmod(join(src, "world", "level.dat"), 0o600);
  await mkdir(join(src, "a", "b"), { recursive: true });
  await writeFile(join(src, "a", "b", "f"), "deep");
  before = await fx.outsideSnapshot();
});
afterEach(async () => {
  expect(openFilesUnder(fx.base)).toEqual([]); // every file and directory the service opened is closed
  expect(await fx.outsideSnapshot()).toEqual(before);
  expect(await readdir(fx.work).catch(() => [])).toEqual([]); // no work left behind
  await fx.cleanup();
});

const names = async (dir: string) => (await readdir(dir)).sort();
const upload = (name: string, bytes: Buffer) => writeFile(join(fx.data, "uploads", name), bytes);

/** A tar (tar-stream: it writes any name it is given) of `entries`. */
async function tarOf(entries: Array<{ name: string; type?: "file" | "directory" | "symlink" | "link" | "fifo"; data?: string | Buffer; linkname?: string; mode?: number }>): Promise<Buffer> {
  const pack = tar.pack();
  const out: Buffer[] = [];
  pack.on("data", (c: Buffer) => out.push(c));
  const done = new Promise((resolve) => pack.on("end", resolve));
  for (const e of entries) {
    const data = Buffer.from(e.data ?? "");
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: e.name, type: e.type ?? "file", size: e.type && e.type !== "file" ? 0 : data.length, linkname: e.linkname, mode: e.mode ?? 0o644, mtime: new Date(1_600_000_000_000) }, e.type && e.type !== "file" ? undefined : data, (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  await done;
  return Buffer.concat(out);
}

describe("archiveFormatOf", () => {
  it("reads the format from the name", () => {
    expect(["a.tar.gz", "a.TGZ", "a.tar.zst", "a.tar", "a.Zip", "a.gz", "a"].map(archiveFormatOf)).toEqual(["tar.gz", "tar.gz", "tar.zst", "tar", "zip", undefined, undefined]);
  });
});

describe("extract a tar", () => {
  it("extracts a .tar.gz made by GNU tar into a new directory, with modes and mtimes", async () => {
    await run("tar", ["-czf", join(fx.data, "uploads", "world.tgz"), "-C", src, "world"]);
    const r = await extractFile(fx.files, "uploads/world.tgz", "restored", { maxBytes: MiB });
    expect(r).toEqual({ entries: 4, bytes: 100_005, placed: ["world"] });
    expect(await readFile(join(fx.data, "restored", "world", "level.dat"), "utf8")).toBe("level");
    expect((await stat(join(fx.data, "restored", "world", "level.dat"))).mode & 0o7777).toBe(0o600);
    expect((await readFile(join(fx.data, "restored", "world", "region", "r.0.0.mca"))).equals(Buffer.alloc(100_000, 7))).toBe(true);
  });

  it("extracts a .tar.zst in berth's backup format (its root entry applies to nothing placed)", async () => {
    await createArchive(src, createWriteStream(join(fx.data, "uploads", "backup.tar.zst")), { compression: "zstd" });
    const r = await extractFile(fx.files, "uploads/backup.tar.zst", "from-backup", { maxBytes: MiB });
    expect(r.placed).toEqual(["a", "world"]);
    expect(await readFile(join(fx.data, "from-backup", "world", "level.dat"), "utf8")).toBe("level");
    expect((await stat(join(fx.data, "from-backup"))).mode & 0o777).toBe(0o755);
  });

  it("extracts an uncompressed .tar whose directories are only implied, making them readable", async () => {
    await run("tar", ["-cf", join(fx.data, "uploads", "deep.tar"), "-C", src, "a/b/f"]);
    await extractFile(fx.files, "uploads/deep.tar", "/", { maxBytes: MiB });
    expect(await readFile(join(fx.data, "a", "b", "f"), "utf8")).toBe("deep");
    expect((await stat(join(fx.data, "a", "b"))).mode & 0o777).toBe(0o755);
  });

  it.each([
    ["../evil", "a '..' component"],
    ["/abs/evil", "an absolute name"],
    ["ok/../../evil", "'..' after a plain name"],
  ])("refuses a tar entry named %j (%s), extracting nothing", async (name) => {
    await upload("slip.tar.gz", gzipSync(await tarOf([{ name: "fine", data: "fine" }, { name, data: "evil" }])));
    await expectCode(extractFile(fx.files, "uploads/slip.tar.gz", "out", { maxBytes: MiB }), "unsafe_archive", /nothing was extracted/);
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]); // "out" made for it, and removed again
  });

  it("refuses symlink, hard link and FIFO entries", async () => {
    await upload("link.tar", await tarOf([{ name: "l", type: "symlink", linkname: "/etc" }, { name: "l/passwd", data: "x" }]));
    await expectCode(extractFile(fx.files, "uploads/link.tar", "out", { maxBytes: MiB }), "unsafe_archive", /symlink/);
    await upload("hard.tar", await tarOf([{ name: "h", type: "link", linkname: "/etc/passwd" }]));
    await expectCode(extractFile(fx.files, "uploads/hard.tar", "out", { maxBytes: MiB }), "unsafe_archive", /hard link/);
    await upload("fifo.tar", await tarOf([{ name: "p", type: "fifo" }]));
    await expectCode(extractFile(fx.files, "uploads/fifo.tar", "out", { maxBytes: MiB }), "unsafe_archive");
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
  });

  it("stops a gzip bomb at maxBytes, counting what is written", async () => {
    await upload("bomb.tar.gz", gzipSync(await tarOf([{ name: "zeros", data: Buffer.alloc(20 * MiB) }])));
    expect((await stat(join(fx.data, "uploads", "bomb.tar.gz"))).size).toBeLessThan(100_000);
    await expectCode(extractFile(fx.files, "uploads/bomb.tar.gz", "out", { maxBytes: MiB }), "too_large", /more than the 1048576 bytes allowed/);
    await upload("many.tar", await tarOf(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, data: "x" }))));
    await expectCode(extractFile(fx.files, "uploads/many.tar", "out", { maxBytes: MiB, maxEntries: 10 }), "too_large", /more than 10 entries/);
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
  });

  it("refuses something that is not an archive", async () => {
    await upload("junk.tar.gz", Buffer.from("this is not gzip"));
    await expectCode(extractFile(fx.files, "uploads/junk.tar.gz", "out", { maxBytes: MiB }), "unsafe_archive");
    await upload("notes.txt", Buffer.from("hi"));
    await expectCode(extractFile(fx.files, "uploads/notes.txt", "out", { maxBytes: MiB }), "invalid_argument", /\.tar\.gz, \.tgz/);
  });
});

describe("extract a zip", () => {
  it("extracts files and directories with their modes", async () => {
    await upload(
      "site.zip",
      zipOf([
        { name: "site/" },
        { name: "site/index.html", data: "<h1>hi</h1>", method: 8 },
        { name: "site/bin/run.sh", data: "#!/bin/sh\n", mode: 0o100755 },
        { name: "site/suid", data: "x", mode: 0o104755 },
      ]),
    );
    const r = await extractFile(fx.files, "uploads/site.zip", "www", { maxBytes: MiB });
    expect(r).toMatchObject({ entries: 4, bytes: 11 + 10 + 1, placed: ["site"] });
    expect(await readFile(join(fx.data, "www", "site", "index.html"), "utf8")).toBe("<h1>hi</h1>");
    expect((await stat(join(fx.data, "www", "site", "bin", "run.sh"))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(fx.data, "www", "site", "suid"))).mode & 0o7777).toBe(0o755); // setuid never extracted
    expect((await stat(join(fx.data, "www", "site", "bin"))).mode & 0o777).toBe(0o755); // implied by an entry
  });

  it.each([
    ["../evil", "a '..' component"],
    ["/tmp/evil", "an absolute name"],
    ["a/../../evil", "'..' after a plain name"],
    ["..\\evil", "a backslash spelling of '..'"],
    ["a/b/../../../evil", "a deep '..'"],
  ])("refuses a zip-slip entry %j (%s), extracting nothing", async (name) => {
    await upload("slip.zip", zipOf([{ name: "fine.txt", data: "fine" }, { name, data: "evil" }]));
    await expectCode(extractFile(fx.files, "uploads/slip.zip", "out", { maxBytes: MiB }), "unsafe_archive", /nothing was extracted/);
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
    expect(await names(join(fx.data, "uploads"))).toEqual(["slip.zip"]);
  });

  it("refuses a symlink entry, a FIFO entry and a name given twice", async () => {
    await upload("link.zip", zipOf([{ name: "l", data: "/etc", mode: 0o120777 }, { name: "l/passwd", data: "x" }]));
    await expectCode(extractFile(fx.files, "uploads/link.zip", "out", { maxBytes: MiB }), "unsafe_archive", /entry l is a symlink/);
    await upload("fifo.zip", zipOf([{ name: "p", mode: 0o10644 }]));
    await expectCode(extractFile(fx.files, "uploads/fifo.zip", "out", { maxBytes: MiB }), "unsafe_archive", /FIFO/);
    await upload("twice.zip", zipOf([{ name: "a", data: "1" }, { name: "a", data: "2" }]));
    await expectCode(extractFile(fx.files, "uploads/twice.zip", "out", { maxBytes: MiB }), "unsafe_archive", /twice/);
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
  });

  it("stops a zip bomb by the bytes written, whatever its headers claim", async () => {
    // Honest headers: 20 MiB of zeros in ~20 KB.
    await upload("bomb.zip", zipOf([{ name: "zeros", data: Buffer.alloc(20 * MiB), method: 8 }]));
    await expectCode(extractFile(fx.files, "uploads/bomb.zip", "out", { maxBytes: MiB }), "too_large");
    // Lying headers: they claim 10 bytes; the bytes written are what count.
    await upload("liar.zip", zipOf([{ name: "zeros", data: Buffer.alloc(20 * MiB), method: 8, claimedSize: 10 }]));
    const err = await extractFile(fx.files, "uploads/liar.zip", "out", { maxBytes: MiB }).then(
      () => ({ code: "extracted" }),
      (e: unknown) => e as { code: string },
    );
    expect(["too_large", "unsafe_archive"]).toContain(err.code);
    // Many entries.
    await upload("many.zip", zipOf(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, data: "x" }))));
    await expectCode(extractFile(fx.files, "uploads/many.zip", "out", { maxBytes: MiB, maxEntries: 10 }), "too_large", /more than 10 entries/);
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
  });

  it("refuses a file that is not a zip", async () => {
    await upload("junk.zip", Buffer.from("PK not really"));
    await expectCode(extractFile(fx.files, "uploads/junk.zip", "out", { maxBytes: MiB }), "unsafe_archive", /not a readable zip/);
  });
});

describe.skipIf(process.getuid?.() !== 0)("extract: ownership (as root)", () => {
  it("gives every extracted entry the destination's owner, not the archive's", async () => {
    await mkdir(join(fx.data, "owned"));
    await chown(join(fx.data, "owned"), 1234, 2345);
    await run("tar", ["--owner=0", "--group=0", "-czf", join(fx.data, "uploads", "w.tgz"), "-C", src, "world", "a/b/f"]);
    await upload("z.zip", zipOf([{ name: "zdir/zfile", data: "z" }]));
    await extractFile(fx.files, "uploads/w.tgz", "owned", { maxBytes: MiB });
    await extractFile(fx.files, "uploads/z.zip", "owned", { maxBytes: MiB });
    for (const p of ["world", "world/level.dat", "world/region/r.0.0.mca", "a", "a/b", "a/b/f", "zdir", "zdir/zfile"]) {
      expect(await lstat(join(fx.data, "owned", p)), p).toMatchObject({ uid: 1234, gid: 2345 });
    }
  });
});

describe("extract: confinement and limits", () => {
  it("never overwrites: a top-level entry that exists refuses the whole extraction", async () => {
    await mkdir(join(fx.data, "dest", "site"), { recursive: true });
    await writeFile(join(fx.data, "dest", "site", "keep"), "keep");
    await upload("site.zip", zipOf([{ name: "other.txt", data: "o" }, { name: "site/keep", data: "replaced" }]));
    await expectCode(extractFile(fx.files, "uploads/site.zip", "dest", { maxBytes: MiB }), "exists", /\/dest\/site/);
    expect(await names(join(fx.data, "dest"))).toEqual(["site"]);
    expect(await readFile(join(fx.data, "dest", "site", "keep"), "utf8")).toBe("keep");
  });

  it("refuses a destination or an archive reached through a symlink", async () => {
    await upload("a.zip", zipOf([{ name: "x", data: "x" }]));
    await expectCode(extractFile(fx.files, "uploads/a.zip", "linkdir", { maxBytes: MiB }), "symlink_refused");
    await expectCode(extractFile(fx.files, "uploads/a.zip", "linkdir/dir", { maxBytes: MiB }), "symlink_refused");
    await expectCode(extractFile(fx.files, "uploads/a.zip", "../outside", { maxBytes: MiB }), "invalid_path");
    await symlink(join(fx.base, "outside.zip"), join(fx.data, "uploads", "linked.zip"));
    await expectCode(extractFile(fx.files, "uploads/linked.zip", "out", { maxBytes: MiB }), "symlink_refused");
    await expectCode(extractFile(fx.files, "linkdir/x.zip", "out", { maxBytes: MiB }), "symlink_refused");
    expect(await names(fx.data)).toEqual(["linkdir", "uploads"]);
  });

  it("bounds an extraction by the free space less the reserve", async () => {
    const files = new ServerFiles({ root: fx.data, workDir: fx.work, reserveBytes: 1000, freeBytes: async () => 1500 });
    await upload("big.zip", zipOf([{ name: "big", data: Buffer.alloc(600) }]));
    await expectCode(extractFile(files, "uploads/big.zip", "out", { maxBytes: MiB }), "no_space", /free on the host's disk/);
    await upload("small.zip", zipOf([{ name: "small", data: Buffer.alloc(400) }]));
    await extractFile(files, "uploads/small.zip", "out", { maxBytes: MiB });
    expect((await lstat(join(fx.data, "out", "small"))).size).toBe(400);
  });
});
