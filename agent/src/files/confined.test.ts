import { mkdir, readdir, readFile, rename, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { expectCode, makeFixture, mkfifo, type Fixture } from "../../testing/files-fixture.js";
import { ConfinedRoot, NAME_MAX, PATH_MAX, parseUserPath } from "./confined.js";
import { FileOpError } from "./errors.js";

describe("parseUserPath", () => {
  it.each(["", "/", ".", "./", "//", "/./", "./././/"])("reads %j as the data directory itself", (p) => {
    expect(parseUserPath(p)).toEqual([]);
  });

  it.each([
    ["world/level.dat", ["world", "level.dat"]],
    ["/world/level.dat", ["world", "level.dat"]], // a leading "/" is the data directory, not the host's root
    ["//world//./level.dat/", ["world", "level.dat"]],
    ["/etc/passwd", ["etc", "passwd"]], // an absolute path names <data>/etc/passwd, never the host's
  ])("reads %j as %j", (p, parts) => {
    expect(parseUserPath(p)).toEqual(parts);
  });

  it.each([
    "..",
    "../",
    "/..",
    "./..",
    "..//",
    "../outside/secret",
    "a/..",
    "a/../..",
    "a/b/../../..",
    "/world/../../etc/passwd",
    "../../../../../../../../etc/passwd",
    "a/./../b",
    "a//..//..//b",
  ])("refuses %j: a '..' component", (p) => {
    try {
      parseUserPath(p);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(FileOpError);
      expect((err as FileOpError).code).toBe("invalid_path");
      expect((err as Error).message).toMatch(/"\.\." component/);
    }
  });

  it.each(["...", "..a", "a..", ". .", "%2e%2e", "%2e%2e%2f", "..\\..\\etc", "．．", " ..", ".. "])(
    "takes %j as a plain name (not a parent: nothing decodes it)",
    (p) => {
      expect(parseUserPath(p)).toEqual([p]);
    },
  );

  it("refuses NUL, an over-long path and an over-long component", () => {
    const code = (p: string) => {
      try {
        parseUserPath(p);
        return "accepted";
      } catch (err) {
        return (err as FileOpError).code;
      }
    };
    expect(code("a\0b")).toBe("invalid_path");
    expect(code("x".repeat(NAME_MAX))).toBe("accepted");
    expect(code("x".repeat(NAME_MAX + 1))).toBe("invalid_path");
    expect(code("é".repeat(128))).toBe("invalid_path"); // 256 bytes in UTF-8: limits are bytes
    expect(code("a/".repeat(PATH_MAX / 2))).toBe("accepted"); // exactly 4096 bytes
    expect(code("a/".repeat(PATH_MAX / 2) + "b")).toBe("invalid_path");
  });
});

describe("ConfinedRoot", () => {
  let fx: Fixture;
  let root: ConfinedRoot;
  beforeEach(async () => {
    fx = await makeFixture();
    root = new ConfinedRoot(fx.data);
    await mkdir(join(fx.data, "world", "region"), { recursive: true });
    await writeFile(join(fx.data, "world", "level.dat"), "level");
    await symlink(fx.outside, join(fx.data, "linkdir"));
    await symlink(join(fx.outside, "secret"), join(fx.data, "linkfile"));
    await mkfifo(join(fx.data, "fifo"));
  });
  afterEach(async () => {
    await fx.cleanup();
  });

  it("resolves paths to absolute paths inside the data directory", async () => {
    expect(await root.resolve("")).toBe(fx.data);
    expect(await root.resolve("/world/level.dat")).toBe(join(fx.data, "world", "level.dat"));
    expect(await root.resolve("world/new-file")).toBe(join(fx.data, "world", "new-file")); // need not exist
  });

  it.each(["linkdir", "linkdir/secret", "linkdir/dir/inner", "/linkdir/", "world/../linkdir"])("refuses %j: through or at a symlink", async (p) => {
    const err = await root.resolve(p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileOpError);
    expect(["symlink_refused", "invalid_path"]).toContain((err as FileOpError).code);
  });

  it("names the symlink component and says what to do", async () => {
    await expectCode(root.resolve("linkdir/dir/inner"), "symlink_refused", /^\/linkdir is a symlink; .*never follows symlinks.*delete the link/);
    await expectCode(root.resolve("linkfile"), "symlink_refused");
  });

  it("refuses a FIFO as a component or a target, a file as a component, and a missing parent", async () => {
    await expectCode(root.resolve("fifo"), "special_file_refused");
    await expectCode(root.resolve("fifo/x"), "special_file_refused");
    await expectCode(root.resolve("world/level.dat/x"), "not_a_directory", /\/world\/level.dat is a file/);
    await expectCode(root.resolve("nope/x"), "not_found", /\/nope does not exist/);
  });

  it("refuses a data directory that is itself a symlink", async () => {
    await symlink(fx.outside, join(fx.base, "linked-data"));
    await expectCode(new ConfinedRoot(join(fx.base, "linked-data")).openDir([]), "symlink_refused");
  });

  it("keeps working on the directory it opened when a container swaps it for a symlink pointing out", async () => {
    const dir = await root.openDir(["world"]);
    try {
      // What a hostile container can do between the agent's check and its use.
      await rename(join(fx.data, "world"), join(fx.data, "world-moved"));
      await symlink(fx.outside, join(fx.data, "world"));
      await writeFile(dir.at("planted"), "through the descriptor");
    } finally {
      await dir.close();
    }
    expect(await readFile(join(fx.data, "world-moved", "planted"), "utf8")).toBe("through the descriptor");
    expect(await readdir(fx.outside)).toEqual(["dir", "secret"]);
  });
});
