import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createArchive, verifyArchive } from "./archive.js";
import { BackupDirs } from "./backup-dir.js";

describe("BackupDirs", () => {
  let base: string;
  /** The configured root; created by the first write. */
  let root: string;
  /** A directory outside every root holding something precious. */
  let outside: string;
  let dirs: BackupDirs;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "berth-backupdir-"));
    root = join(base, "backups");
    outside = join(base, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "precious"), "keep me");
    dirs = new BackupDirs([root, join(base, "second")]);
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  /** Every entry under `dir`, relative, sorted; symlinks are listed, not followed. */
  async function tree(dir: string, rel = ""): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? join(rel, e.name) : e.name;
      out.push(p);
      if (e.isDirectory()) out.push(...(await tree(dir, p)));
    }
    return out.sort();
  }

  it("resolves keys under a root, or a directory under a root", async () => {
    expect(await dirs.resolve(root, "srv_abc/bk_xyz.tar.gz")).toBe(join(root, "srv_abc", "bk_xyz.tar.gz"));
    expect(await dirs.resolve(join(root, "nightly") + "/", "bk.tar.gz")).toBe(join(root, "nightly", "bk.tar.gz"));
    expect(await dirs.resolve(join(base, "second"), "a/b/c/d")).toBe(join(base, "second", "a", "b", "c", "d"));
  });

  it.each([
    ["outside every root", () => outside],
    ["a parent of a root", () => base],
    ["a root's name as a prefix", () => `${root}-evil`],
    ["escaping with ..", () => join(root, "..", "outside")],
    ["a relative path", () => "backups"],
    ["the file system root", () => "/"],
  ])("refuses a target %s (BackupDirNotAllowed, naming --backup-dir)", async (_what, target) => {
    const err = await dirs.resolve(target(), "k.tar.gz").catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "BackupDirNotAllowed" });
    expect((err as Error).message).toContain(root);
    expect((err as Error).message).toContain("--backup-dir");
  });

  it.each([
    ["..", "a parent"],
    ["srv/../../outside/x", ".. in the middle"],
    ["/etc/passwd", "absolute"],
    ["a\\b", "a backslash"],
    ["a\0b", "NUL"],
    ["a/b/c/d/e", "five components"],
    ["", "empty"],
    ["a//b", "an empty component"],
    ["./a", "a . component"],
    ["srv/bk.tar.gz.partial-abc", "a partial file's name"],
  ])("refuses the key %j (%s) as BadKey", async (key) => {
    await expect(dirs.resolve(root, key)).rejects.toMatchObject({ reason: "BadKey" });
  });

  it("refuses a symlink inside a root that leads outside it, for writes and removals", async () => {
    await mkdir(root);
    await symlink(outside, join(root, "escape"));
    await symlink(join(outside, "precious"), join(root, "precious.tar.gz"));
    await expect(dirs.resolve(join(root, "escape"), "x.tar.gz")).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
    await expect(dirs.resolve(root, "escape/x.tar.gz")).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
    await expect(dirs.writeAtomic(root, "escape/x.tar.gz", async (out) => out.end("x"))).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
    await expect(dirs.remove(root, "precious.tar.gz")).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
    await symlink(join(outside, "missing"), join(root, "dangling.tar.gz"));
    await expect(dirs.writeAtomic(root, "dangling.tar.gz", async (out) => out.end("x"))).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
    expect(await tree(outside)).toEqual(["precious"]);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("writeAtomic leaves only the final archive (0600, in 0700 directories it created), and open reads it back", async () => {
    const src = join(base, "src");
    await mkdir(src);
    await writeFile(join(src, "world.dat"), "data");

    const stats = await dirs.writeAtomic(root, "srv_abc/bk_1.tar.gz", (out) => createArchive(src, out));

    expect(await tree(root)).toEqual(["srv_abc", join("srv_abc", "bk_1.tar.gz")]);
    const path = join(root, "srv_abc", "bk_1.tar.gz");
    await verifyArchive(path, stats.sha256);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(root)).mode & 0o777).toBe(0o700);
    expect((await stat(join(root, "srv_abc"))).mode & 0o777).toBe(0o700);
    const read = await dirs.open(root, "srv_abc/bk_1.tar.gz");
    const copy = join(base, "copy.tar.gz");
    await pipeline(read, createWriteStream(copy));
    await verifyArchive(copy, stats.sha256);
  });

  it("writeAtomic replaces an older archive of the same key only when the new one is complete", async () => {
    await dirs.writeAtomic(root, "k", async (out) => void out.end("old"));
    await expect(
      dirs.writeAtomic(root, "k", async (out) => {
        out.write("half of the new");
        throw new Error("disk on fire");
      }),
    ).rejects.toThrow("disk on fire");
    expect(await text(createReadStream(join(root, "k")))).toBe("old");
    await dirs.writeAtomic(root, "k", async (out) => void out.end("new"));
    expect(await text(createReadStream(join(root, "k")))).toBe("new");
    expect(await tree(root)).toEqual(["k"]);
  });

  it("an aborted archive leaves no partial file", async () => {
    const src = join(base, "src");
    await mkdir(src);
    await writeFile(join(src, "big"), Buffer.alloc(8 * 1024 * 1024, 7));
    const ac = new AbortController();
    await expect(
      dirs.writeAtomic(root, "srv_abc/bk.tar.gz", (out) => createArchive(src, out, { signal: ac.signal, onProgress: () => ac.abort() })),
    ).rejects.toMatchObject({ reason: "Aborted" });
    expect(await tree(root)).toEqual(["srv_abc"]);
  });

  it("remove deletes an archive and is idempotent; open of a missing one is ArchiveMissing", async () => {
    await dirs.writeAtomic(root, "srv_abc/bk.tar.gz", async (out) => void out.end("x"));
    await dirs.remove(root, "srv_abc/bk.tar.gz");
    await dirs.remove(root, "srv_abc/bk.tar.gz");
    expect(await tree(root)).toEqual(["srv_abc"]);
    await expect(dirs.open(root, "srv_abc/bk.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
  });

  it("sweepPartials removes leftover partial files under every root and nothing else", async () => {
    await mkdir(join(root, "srv_abc"), { recursive: true });
    await mkdir(join(base, "second", "deep", "er"), { recursive: true });
    await writeFile(join(root, "srv_abc", "bk.tar.gz"), "done");
    await writeFile(join(root, "srv_abc", "bk2.tar.gz.partial-0123abcd"), "crashed");
    await writeFile(join(base, "second", "deep", "er", "x.partial-ff"), "crashed");
    await writeFile(join(outside, "y.partial-ff"), "not ours");
    await symlink(outside, join(root, "link"));

    expect(await dirs.sweepPartials()).toBe(2);

    expect(await tree(root)).toEqual(["link", "srv_abc", join("srv_abc", "bk.tar.gz")]);
    expect(await tree(join(base, "second"))).toEqual(["deep", join("deep", "er")]);
    expect(await tree(outside)).toEqual(["precious", "y.partial-ff"]);
    expect(await new BackupDirs([join(base, "never-created")]).sweepPartials()).toBe(0);
  });

  it("free answers the free bytes of a target's file system, even before the target exists; refuses other paths", async () => {
    expect(await dirs.free(join(root, "not", "yet"))).toBeGreaterThan(0);
    await expect(dirs.free(outside)).rejects.toMatchObject({ reason: "BackupDirNotAllowed" });
  });
});
