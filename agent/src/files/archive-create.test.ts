import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { expectCode, makeFixture, mkfifo, openFilesUnder, type Fixture } from "../../testing/files-fixture.js";
import { createArchiveFile } from "./archive-create.js";
import { extractFile } from "./file-archives.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;

let fx: Fixture;
let before: string[];
let big: Buffer;
beforeEach(async () => {
  fx = await makeFixture();
  await mkdir(join(fx.data, "world", "region"), { recursive: true });
  await writeFile(join(fx.data, "world", "level.dat"), "level");
  await chmod(join(fx.data, "world", "level.dat"), 0o600);
  big = randomBytes(700 * 1024); // more than one read chunk
  await writeFile(join(fx.data, "world", "region", "r.0.0.mca"), big);
  await writeFile(join(fx.data, "server.properties"), "motd=hi\n");
  await symlink(fx.outside, join(fx.data, "world", "linkdir"));
  await symlink(fx.outside, join(fx.data, "linkdir"));
  await mkfifo(join(fx.data, "world", "fifo"));
  before = await fx.outsideSnapshot();
});
afterEach(async () => {
  expect(openFilesUnder(fx.base)).toEqual([]);
  await fx.cleanup();
});

describe("createArchiveFile", () => {
  it("makes a .tar.gz GNU tar reads, leaving out symlinks and FIFOs and saying so", async () => {
    const r = await createArchiveFile(fx.files, ["world", "/server.properties"], "backup.tar.gz", { format: "tar.gz", maxBytes: 10 * MiB });
    expect(r).toMatchObject({ entries: 5, skipped: ["/world/fifo", "/world/linkdir"], skippedCount: 2, entry: { name: "backup.tar.gz", type: "file" } });
    const out = await mkdtemp(join(tmpdir(), "berth-unpacked-"));
    onTestFinished(() => rm(out, { recursive: true, force: true }));
    await run("tar", ["-xzf", join(fx.data, "backup.tar.gz"), "-C", out]);
    expect((await readdir(out)).sort()).toEqual(["server.properties", "world"]);
    expect((await readdir(join(out, "world"))).sort()).toEqual(["level.dat", "region"]);
    expect((await readFile(join(out, "world", "region", "r.0.0.mca"))).equals(big)).toBe(true);
    expect((await stat(join(out, "world", "level.dat"))).mode & 0o7777).toBe(0o600);
    expect(await fx.outsideSnapshot()).toEqual(before);
  });

  it("makes a .zip of the whole data directory that extraction reads back, without the archive in itself", async () => {
    const r = await createArchiveFile(fx.files, ["/"], "all.zip", { format: "zip", maxBytes: 10 * MiB });
    expect(r.skipped).toEqual(["/linkdir", "/world/fifo", "/world/linkdir"]);
    await extractFile(fx.files, "all.zip", "unzipped", { maxBytes: 10 * MiB });
    expect((await readdir(join(fx.data, "unzipped"))).sort()).toEqual(["server.properties", "world"]);
    expect((await readFile(join(fx.data, "unzipped", "world", "region", "r.0.0.mca"))).equals(big)).toBe(true);
    expect(await readFile(join(fx.data, "unzipped", "server.properties"), "utf8")).toBe("motd=hi\n");
    expect((await stat(join(fx.data, "unzipped", "world", "level.dat"))).mode & 0o7777).toBe(0o600);
    expect(await fx.outsideSnapshot()).toEqual(before);
  });

  it("refuses an archive larger than maxBytes, leaving nothing", async () => {
    await expectCode(createArchiveFile(fx.files, ["world"], "w.tar.gz", { format: "tar.gz", maxBytes: 100 * 1024 }), "too_large");
    await expectCode(createArchiveFile(fx.files, ["world"], "w.zip", { format: "zip", maxBytes: 100 * 1024 }), "too_large");
    await expectCode(createArchiveFile(fx.files, ["world"], "w.zip", { format: "zip", maxBytes: 10 * MiB, maxEntries: 2 }), "too_large", /more than 2 entries/);
    expect((await readdir(fx.data)).sort()).toEqual(["linkdir", "server.properties", "world"]);
    expect(await fx.outsideSnapshot()).toEqual(before);
  });

  it("refuses an existing archive, symlinks selected or on the way, two entries of one name", async () => {
    await expectCode(createArchiveFile(fx.files, ["world"], "server.properties", { format: "zip", maxBytes: MiB }), "exists");
    await expectCode(createArchiveFile(fx.files, ["linkdir"], "a.zip", { format: "zip", maxBytes: MiB }), "symlink_refused");
    await expectCode(createArchiveFile(fx.files, ["linkdir/secret"], "a.zip", { format: "zip", maxBytes: MiB }), "symlink_refused");
    await expectCode(createArchiveFile(fx.files, ["world"], "linkdir/a.zip", { format: "zip", maxBytes: MiB }), "symlink_refused");
    await expectCode(createArchiveFile(fx.files, ["world/fifo"], "a.zip", { format: "zip", maxBytes: MiB }), "special_file_refused");
    await expectCode(createArchiveFile(fx.files, ["world/level.dat", "level.dat"], "a.zip", { format: "zip", maxBytes: MiB }), "invalid_argument", /same entry/);
    await expectCode(createArchiveFile(fx.files, ["../outside"], "a.zip", { format: "zip", maxBytes: MiB }), "invalid_path");
    expect((await readdir(fx.data)).sort()).toEqual(["linkdir", "server.properties", "world"]);
    expect(await fx.outsideSnapshot()).toEqual(before);
  });
});
