import { randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, readdir, readFile, readlink, rename, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { chunksOf, collect, expectCode, makeFixture, mkfifo, openFilesUnder, type Fixture } from "../../testing/files-fixture.js";
import { READ_CHUNK, ServerFiles } from "./server-files.js";

let fx: Fixture;
let before: string[];
beforeEach(async () => {
  fx = await makeFixture();
  await mkdir(join(fx.data, "world", "region"), { recursive: true });
  await writeFile(join(fx.data, "world", "level.dat"), "level v1");
  await writeFile(join(fx.data, "server.properties"), "motd=hi\n");
  // What a hostile container plants in its own data directory.
  await symlink(fx.outside, join(fx.data, "linkdir"));
  await symlink(join(fx.outside, "secret"), join(fx.data, "linkfile"));
  await symlink("../../outside", join(fx.data, "world", "rel-link"));
  await mkfifo(join(fx.data, "fifo"));
  before = await fx.outsideSnapshot();
});
afterEach(async () => {
  expect(openFilesUnder(fx.base)).toEqual([]); // every file and directory the service opened is closed
  // Whatever each test did, nothing outside the data directory changed.
  expect(await fx.outsideSnapshot()).toEqual(before);
  await fx.cleanup();
});

const names = async (dir: string) => (await readdir(dir)).sort();

describe("list", () => {
  it("lists entries sorted by name with their type, size, mode and mtime; symlinks listed, not followed", async () => {
    const page = await fx.files.list("/");
    expect(page.nextPageToken).toBeUndefined();
    expect(page.entries.map((e) => [e.name, e.type])).toEqual([
      ["fifo", "other"],
      ["linkdir", "symlink"],
      ["linkfile", "symlink"],
      ["server.properties", "file"],
      ["world", "dir"],
    ]);
    const props = page.entries.find((e) => e.name === "server.properties")!;
    const st = await stat(join(fx.data, "server.properties"));
    expect(props).toEqual({ name: "server.properties", type: "file", size: 8, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
    // The symlink's own size (its target's length), not the outside file's.
    expect(page.entries.find((e) => e.name === "linkfile")!.size).toBe(join(fx.outside, "secret").length);
  });

  it("pages with an opaque token, and refuses a token it never issued", async () => {
    for (const n of ["c", "a", "e", "b", "d"]) await writeFile(join(fx.data, "world", "region", n), n);
    const first = await fx.files.list("world/region", { pageSize: 2 });
    expect(first.entries.map((e) => e.name)).toEqual(["a", "b"]);
    const second = await fx.files.list("world/region", { pageSize: 2, pageToken: first.nextPageToken! });
    expect(second.entries.map((e) => e.name)).toEqual(["c", "d"]);
    const third = await fx.files.list("world/region", { pageSize: 2, pageToken: second.nextPageToken! });
    expect(third.entries.map((e) => e.name)).toEqual(["e"]);
    expect(third.nextPageToken).toBeUndefined();
    await expectCode(fx.files.list("world/region", { pageToken: "not-a-token" }), "invalid_argument", /not issued/);
  });

  it("caps a page at 1000 entries", async () => {
    await Promise.all(Array.from({ length: 1001 }, (_, i) => writeFile(join(fx.data, "world", "region", `f${String(i).padStart(4, "0")}`), "")));
    const page = await fx.files.list("world/region", { pageSize: 5000 });
    expect(page.entries).toHaveLength(1000);
    expect(page.nextPageToken).toBeDefined();
    expect((await fx.files.list("world/region", { pageToken: page.nextPageToken! })).entries.map((e) => e.name)).toEqual(["f1000"]);
  });

  it("refuses to list through a symlink, a file or a FIFO", async () => {
    await expectCode(fx.files.list("linkdir"), "symlink_refused");
    await expectCode(fx.files.list("linkdir/dir"), "symlink_refused");
    await expectCode(fx.files.list("world/rel-link"), "symlink_refused");
    await expectCode(fx.files.list("server.properties"), "not_a_directory");
    await expectCode(fx.files.list("fifo"), "special_file_refused");
    await expectCode(fx.files.list("nope"), "not_found");
    await expectCode(fx.files.list("../outside"), "invalid_path");
  });
});

describe("stat", () => {
  it("stats the data directory, a file, and a symlink as a symlink", async () => {
    expect(await fx.files.stat("/")).toMatchObject({ name: "", type: "dir" });
    expect(await fx.files.stat("/world/level.dat")).toMatchObject({ name: "level.dat", type: "file", size: 8 });
    expect(await fx.files.stat("linkdir")).toMatchObject({ name: "linkdir", type: "symlink" });
    await expectCode(fx.files.stat("linkdir/secret"), "symlink_refused");
    await expectCode(fx.files.stat("world/missing"), "not_found");
  });
});

describe("read", () => {
  it("streams a file in chunks of at most 256 KiB, whole or a range", async () => {
    const content = randomBytes(600 * 1024);
    await writeFile(join(fx.data, "world", "big.bin"), content);
    const whole = await fx.files.read("world/big.bin");
    expect(whole.entry).toMatchObject({ name: "big.bin", size: content.length });
    const chunks = await collect(whole.chunks);
    expect(chunks.every((c) => c.length <= READ_CHUNK)).toBe(true);
    expect(chunks.length).toBe(3);
    expect(Buffer.concat(chunks).equals(content)).toBe(true);

    const range = await fx.files.read("world/big.bin", { offset: 1000, length: 300_000 });
    expect(Buffer.concat(await collect(range.chunks)).equals(content.subarray(1000, 301_000))).toBe(true);
    const tail = await fx.files.read("world/big.bin", { offset: content.length - 10, length: 1000 });
    expect(Buffer.concat(await collect(tail.chunks)).equals(content.subarray(-10))).toBe(true);
    const atEnd = await fx.files.read("world/big.bin", { offset: content.length });
    expect(await collect(atEnd.chunks)).toEqual([]);
    await expectCode(fx.files.read("world/big.bin", { offset: content.length + 1 }), "invalid_argument", /past the end/);
    await expectCode(fx.files.read("world/big.bin", { offset: -1 }), "invalid_argument");
  });

  it("closes the file when a read is abandoned part way, or closed without being read", async () => {
    await writeFile(join(fx.data, "world", "big.bin"), Buffer.alloc(3 * READ_CHUNK));
    const r = await fx.files.read("world/big.bin");
    expect(openFilesUnder(fx.base)).toEqual([join(fx.data, "world", "big.bin")]);
    for await (const chunk of r.chunks) {
      expect(chunk.length).toBe(READ_CHUNK);
      break;
    }
    expect(openFilesUnder(fx.base)).toEqual([]);
    await (await fx.files.read("world/big.bin")).close();
    expect(openFilesUnder(fx.base)).toEqual([]);
  });

  it("refuses a symlink, a symlinked directory, a directory, a FIFO (without waiting for a writer) and the data directory", async () => {
    await expectCode(fx.files.read("linkfile"), "symlink_refused");
    await expectCode(fx.files.read("linkdir/secret"), "symlink_refused");
    await expectCode(fx.files.read("world/rel-link/secret"), "symlink_refused");
    await expectCode(fx.files.read("world"), "is_a_directory");
    await expectCode(fx.files.read("fifo"), "special_file_refused");
    await expectCode(fx.files.read(""), "is_a_directory");
    await expectCode(fx.files.read("/../outside/secret"), "invalid_path");
  });

  it("an absolute path reads inside the data directory, never the host's", async () => {
    await mkdir(join(fx.data, "etc"));
    await writeFile(join(fx.data, "etc", "passwd"), "the server's own");
    const r = await fx.files.read("/etc/passwd");
    expect(Buffer.concat(await collect(r.chunks)).toString()).toBe("the server's own");
  });
});

describe("write", () => {
  const file = () => join(fx.data, "world", "level.dat");

  it("creates a file, and replaces one atomically keeping its mode", async () => {
    await chmod(file(), 0o640);
    const e = await fx.files.write("world/level.dat", chunksOf(["level ", "v2"]), { maxBytes: 100 });
    expect(e).toMatchObject({ name: "level.dat", type: "file", size: 8, mode: 0o640 });
    expect(await readFile(file(), "utf8")).toBe("level v2");
    const n = await fx.files.write("/world/new.txt", chunksOf(["new"]), { maxBytes: 100 });
    expect(n).toMatchObject({ size: 3, mode: 0o644 });
    await fx.files.write("world/new.txt", chunksOf(["x"]), { maxBytes: 100, mode: 0o600 });
    expect((await stat(join(fx.data, "world", "new.txt"))).mode & 0o777).toBe(0o600);
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "new.txt", "region", "rel-link"]); // no temp file left
  });

  it("refuses an upload larger than maxBytes: nothing replaced, no temp file left", async () => {
    await expectCode(fx.files.write("world/level.dat", chunksOf(["0123456789", "0123456789"]), { maxBytes: 15 }), "too_large", /larger than the 15 bytes/);
    expect(await readFile(file(), "utf8")).toBe("level v1");
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "region", "rel-link"]);
  });

  it("leaves the old file intact when the upload fails half way", async () => {
    const failing = chunksOf(["half"], async () => {
      throw new Error("client went away");
    });
    await expect(fx.files.write("world/level.dat", failing, { maxBytes: 100 })).rejects.toThrow("client went away");
    expect(await readFile(file(), "utf8")).toBe("level v1");
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "region", "rel-link"]);
  });

  it("refuses when the file's mtime is not the one the client saw, before or during the upload", async () => {
    const seen = (await fx.files.stat("world/level.dat")).mtimeMs;
    await utimes(file(), new Date(), new Date(seen + 5000));
    await expectCode(fx.files.write("world/level.dat", chunksOf(["mine"]), { maxBytes: 100, expectedMtimeMs: seen }), "conflict", /changed since it was read/);
    expect(await readFile(file(), "utf8")).toBe("level v1");

    const current = (await fx.files.stat("world/level.dat")).mtimeMs;
    const racing = chunksOf(["mine"], async () => {
      await writeFile(file(), "the server saved meanwhile");
      await utimes(file(), new Date(), new Date(current + 9000));
    });
    await expectCode(fx.files.write("world/level.dat", racing, { maxBytes: 100, expectedMtimeMs: current }), "conflict");
    expect(await readFile(file(), "utf8")).toBe("the server saved meanwhile");

    const now = (await fx.files.stat("world/level.dat")).mtimeMs;
    await fx.files.write("world/level.dat", chunksOf(["mine"]), { maxBytes: 100, expectedMtimeMs: now });
    expect(await readFile(file(), "utf8")).toBe("mine");
    await expectCode(fx.files.write("world/gone.dat", chunksOf(["x"]), { maxBytes: 100, expectedMtimeMs: now }), "conflict", /no longer exists/);
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "region", "rel-link"]);
  });

  it("refuses before writing when the free space less the reserve cannot hold the declared size, and stops when it runs out", async () => {
    const files = new ServerFiles({
      root: fx.data,
      workDir: fx.work,
      reserveBytes: 1000,
      freeBytes: async () => 1010,
    });
    await expectCode(files.write("world/level.dat", chunksOf(["x"]), { maxBytes: 1e9, sizeHint: 11 }), "no_space", /10 bytes free beyond the 1000 bytes/);
    await expectCode(files.write("world/level.dat", chunksOf(["0123456789", "0"]), { maxBytes: 1e9 }), "no_space");
    expect(await readFile(file(), "utf8")).toBe("level v1");
    await files.write("world/level.dat", chunksOf(["0123456789"]), { maxBytes: 1e9, sizeHint: 10 });
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "region", "rel-link"]);
  });

  it("refuses setuid/setgid modes", async () => {
    await expectCode(fx.files.write("world/x", chunksOf(["x"]), { maxBytes: 10, mode: 0o4755 }), "invalid_argument", /setuid or setgid/);
    await expectCode(fx.files.write("world/x", chunksOf(["x"]), { maxBytes: 10, mode: 0o2755 }), "invalid_argument");
    expect(await names(join(fx.data, "world"))).toEqual(["level.dat", "region", "rel-link"]);
  });

  it("never writes through or onto a symlink, a directory, a FIFO or a missing parent", async () => {
    const w = (p: string) => fx.files.write(p, chunksOf(["pwned"]), { maxBytes: 100 });
    await expectCode(w("linkfile"), "symlink_refused");
    await expectCode(w("linkdir/secret"), "symlink_refused");
    await expectCode(w("linkdir/new-outside"), "symlink_refused");
    await expectCode(w("world/rel-link/secret"), "symlink_refused");
    await expectCode(w("world"), "is_a_directory");
    await expectCode(w("/"), "is_a_directory");
    await expectCode(w("fifo"), "special_file_refused");
    await expectCode(w("missing/file"), "not_found");
    await expectCode(w("../outside/secret"), "invalid_path");
    await expectCode(w("world/../../outside/secret"), "invalid_path");
    expect(await readlink(join(fx.data, "linkfile"))).toBe(join(fx.outside, "secret"));
  });

  it("a container swapping the target directory for a symlink mid-upload writes nothing outside", async () => {
    const swapping = chunksOf(["a", "b"], async (i) => {
      if (i !== 0) return;
      await rename(join(fx.data, "world"), join(fx.data, "world-moved"));
      await symlink(fx.outside, join(fx.data, "world"));
    });
    await fx.files.write("world/secret", swapping, { maxBytes: 100 });
    // The upload landed in the directory that was checked (now moved), not through the link.
    expect(await readFile(join(fx.data, "world-moved", "secret"), "utf8")).toBe("ab");
  });
});

describe.skipIf(process.getuid?.() !== 0)("ownership (as root)", () => {
  it("gives new uploads and directories their directory's owner, and keeps a replaced file's", async () => {
    await mkdir(join(fx.data, "owned"));
    await chown(join(fx.data, "owned"), 1234, 2345);
    await fx.files.write("owned/new.txt", chunksOf(["x"]), { maxBytes: 10 });
    await fx.files.mkdir("owned/sub/deeper", { parents: true });
    for (const p of ["new.txt", "sub", "sub/deeper"]) expect(await lstat(join(fx.data, "owned", p))).toMatchObject({ uid: 1234, gid: 2345 });
    await chown(join(fx.data, "owned", "new.txt"), 4321, 5432);
    await fx.files.write("owned/new.txt", chunksOf(["y"]), { maxBytes: 10 });
    expect(await lstat(join(fx.data, "owned", "new.txt"))).toMatchObject({ uid: 4321, gid: 5432 });
  });
});

describe("mkdir", () => {
  it("creates a directory, refuses an existing one, and with parents creates the chain", async () => {
    expect(await fx.files.mkdir("world/backups")).toMatchObject({ name: "backups", type: "dir", mode: 0o755 });
    await expectCode(fx.files.mkdir("world/backups"), "exists");
    await expectCode(fx.files.mkdir("a/b/c"), "not_found");
    expect(await fx.files.mkdir("a/b/c", { parents: true })).toMatchObject({ name: "c", type: "dir" });
    expect(await fx.files.mkdir("a/b/c", { parents: true })).toMatchObject({ name: "c" });
    expect((await lstat(join(fx.data, "a", "b", "c"))).isDirectory()).toBe(true);
    await expectCode(fx.files.mkdir("/"), "exists");
  });

  it("never creates through a symlink or a file", async () => {
    await expectCode(fx.files.mkdir("linkdir/new", { parents: true }), "symlink_refused");
    await expectCode(fx.files.mkdir("linkdir/new"), "symlink_refused");
    await expectCode(fx.files.mkdir("world/rel-link/x/y", { parents: true }), "symlink_refused");
    await expectCode(fx.files.mkdir("server.properties/x", { parents: true }), "not_a_directory");
    await expectCode(fx.files.mkdir("linkdir"), "exists");
  });
});

describe("rename", () => {
  it("moves files and directories, refusing an existing target unless overwrite", async () => {
    expect(await fx.files.rename("server.properties", "world/server.properties")).toMatchObject({ name: "server.properties", type: "file" });
    expect(await readFile(join(fx.data, "world", "server.properties"), "utf8")).toBe("motd=hi\n");
    await writeFile(join(fx.data, "other"), "other");
    await expectCode(fx.files.rename("other", "world/level.dat"), "exists");
    expect(await readFile(join(fx.data, "world", "level.dat"), "utf8")).toBe("level v1");
    await fx.files.rename("other", "world/level.dat", { overwrite: true });
    expect(await readFile(join(fx.data, "world", "level.dat"), "utf8")).toBe("other");
    await fx.files.rename("world/region", "region2");
    expect((await lstat(join(fx.data, "region2"))).isDirectory()).toBe(true);
    await expectCode(fx.files.rename("missing", "x"), "not_found");
  });

  it("refuses the data directory, a directory into itself, and symlinks or FIFOs at either end", async () => {
    await expectCode(fx.files.rename("/", "x"), "root_refused");
    await expectCode(fx.files.rename("world", "."), "root_refused");
    await expectCode(fx.files.rename("world", "world/region/world"), "invalid_argument", /into itself/);
    await expectCode(fx.files.rename("linkdir", "moved-link"), "symlink_refused");
    await expectCode(fx.files.rename("server.properties", "linkfile", { overwrite: true }), "symlink_refused");
    await expectCode(fx.files.rename("server.properties", "linkdir/stolen"), "symlink_refused");
    await expectCode(fx.files.rename("linkdir/secret", "stolen"), "symlink_refused");
    await expectCode(fx.files.rename("world/rel-link/secret", "stolen"), "symlink_refused");
    await expectCode(fx.files.rename("fifo", "fifo2"), "special_file_refused");
    await expectCode(fx.files.rename("server.properties", "../outside/x"), "invalid_path");
    expect(await readFile(join(fx.data, "server.properties"), "utf8")).toBe("motd=hi\n");
  });
});

describe("copy", () => {
  it("copies a file and a tree with modes and mtimes, all at once", async () => {
    await fx.files.copy("server.properties", "server.properties.bak");
    expect(await readFile(join(fx.data, "server.properties.bak"), "utf8")).toBe("motd=hi\n");
    await mkdir(join(fx.data, "tree", "sub"), { recursive: true });
    await writeFile(join(fx.data, "tree", "sub", "f"), "deep");
    await chmod(join(fx.data, "tree", "sub", "f"), 0o751);
    await utimes(join(fx.data, "tree", "sub", "f"), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const r = await fx.files.copy("tree", "tree-copy");
    expect(r).toMatchObject({ entry: { name: "tree-copy", type: "dir" }, entries: 3, bytes: 4 });
    const copied = await stat(join(fx.data, "tree-copy", "sub", "f"));
    expect(await readFile(join(fx.data, "tree-copy", "sub", "f"), "utf8")).toBe("deep");
    expect(copied.mode & 0o7777).toBe(0o751);
    expect(copied.mtimeMs).toBe(1_000_000_000_000);
    expect(await readdir(fx.work)).toEqual([]);
  });

  it("clears setuid/setgid on copied files", async () => {
    await writeFile(join(fx.data, "suid"), "x");
    await chmod(join(fx.data, "suid"), 0o4755);
    await fx.files.copy("suid", "suid-copy");
    expect((await stat(join(fx.data, "suid-copy"))).mode & 0o7777).toBe(0o755);
  });

  it("refuses a tree holding a symlink or a FIFO, leaving no partial copy", async () => {
    // world holds rel-link: the whole copy is refused, naming it.
    await expectCode(fx.files.copy("world", "world-copy"), "symlink_refused", /\/world\/rel-link is a symlink; copies never hold symlinks/);
    await mkdir(join(fx.data, "pipes"));
    await writeFile(join(fx.data, "pipes", "a"), "a");
    await mkfifo(join(fx.data, "pipes", "b"));
    await expectCode(fx.files.copy("pipes", "pipes-copy"), "special_file_refused");
    await expectCode(fx.files.copy("linkdir", "x"), "symlink_refused");
    await expectCode(fx.files.copy("linkdir/secret", "x"), "symlink_refused");
    expect(await names(fx.data)).toEqual(["fifo", "linkdir", "linkfile", "pipes", "server.properties", "world"]);
    expect(await readdir(fx.work)).toEqual([]);
  });

  it("refuses an existing target, a copy into itself, and the data directory into itself", async () => {
    await expectCode(fx.files.copy("server.properties", "world/level.dat"), "exists");
    await expectCode(fx.files.copy("world", "world/region/again"), "invalid_argument");
    await expectCode(fx.files.copy("/", "everything"), "invalid_argument");
    await expectCode(fx.files.copy("server.properties", "linkdir/x"), "symlink_refused");
  });

  it("refuses a copy of more entries than maxEntries, leaving nothing", async () => {
    const files = new ServerFiles({ root: fx.data, workDir: fx.work, maxEntries: 2 });
    await writeFile(join(fx.data, "world", "region", "a"), "a");
    await writeFile(join(fx.data, "world", "region", "b"), "b");
    await expectCode(files.copy("world/region", "region-copy"), "too_large", /more than 2 entries/);
    expect(await names(fx.data)).not.toContain("region-copy");
    expect(await readdir(fx.work)).toEqual([]);
  });

  it("refuses a copy larger than the free space less the reserve", async () => {
    const files = new ServerFiles({ root: fx.data, workDir: fx.work, reserveBytes: 100, freeBytes: async () => 105 });
    await expectCode(files.copy("server.properties", "big-copy"), "no_space");
    expect(await names(fx.data)).not.toContain("big-copy");
    expect(await readdir(fx.work)).toEqual([]);
  });
});

describe("delete", () => {
  it("deletes a file, an empty directory, and a tree only when recursive", async () => {
    await fx.files.delete("server.properties");
    await fx.files.mkdir("empty");
    await fx.files.delete("empty");
    await expectCode(fx.files.delete("world"), "not_empty");
    await fx.files.delete("world", { recursive: true });
    expect(await names(fx.data)).toEqual(["fifo", "linkdir", "linkfile"]);
    await expectCode(fx.files.delete("world"), "not_found");
  });

  it("deletes a symlink as a link, never its target, even inside a recursive delete", async () => {
    await fx.files.delete("linkdir");
    await fx.files.delete("linkfile");
    await symlink(join(fx.outside, "dir"), join(fx.data, "world", "region", "deep-link"));
    await fx.files.delete("world", { recursive: true }); // holds rel-link and deep-link, both pointing out
    expect(await names(fx.data)).toEqual(["fifo", "server.properties"]);
  });

  it.each(["", "/", ".", "./", "//.//"])("refuses to delete the data directory (%j): PurgeServer's job", async (p) => {
    await expectCode(fx.files.delete(p, { recursive: true }), "root_refused", /PurgeServer/);
    expect(await names(fx.data)).toContain("world");
  });

  it("refuses to delete through a symlink or with '..'", async () => {
    await expectCode(fx.files.delete("linkdir/secret"), "symlink_refused");
    await expectCode(fx.files.delete("linkdir/dir", { recursive: true }), "symlink_refused");
    await expectCode(fx.files.delete("world/rel-link/secret"), "symlink_refused");
    await expectCode(fx.files.delete("..", { recursive: true }), "invalid_path");
    await expectCode(fx.files.delete("world/../..", { recursive: true }), "invalid_path");
  });
});

describe("chmod", () => {
  it("sets the mode of a file and a directory, refusing setuid/setgid", async () => {
    expect(await fx.files.chmod("server.properties", 0o600)).toMatchObject({ mode: 0o600 });
    expect((await stat(join(fx.data, "server.properties"))).mode & 0o7777).toBe(0o600);
    expect(await fx.files.chmod("world", 0o1750)).toMatchObject({ mode: 0o1750 });
    await expectCode(fx.files.chmod("server.properties", 0o4755), "invalid_argument", /setuid or setgid/);
    await expectCode(fx.files.chmod("server.properties", 0o6000), "invalid_argument");
    await expectCode(fx.files.chmod("server.properties", 0o10000), "invalid_argument");
    expect((await stat(join(fx.data, "server.properties"))).mode & 0o7777).toBe(0o600);
  });

  it("never changes a symlink's target, or a FIFO", async () => {
    await expectCode(fx.files.chmod("linkfile", 0o777), "symlink_refused");
    await expectCode(fx.files.chmod("linkdir", 0o777), "symlink_refused");
    await expectCode(fx.files.chmod("linkdir/secret", 0o777), "symlink_refused");
    await expectCode(fx.files.chmod("fifo", 0o777), "special_file_refused");
  });
});
