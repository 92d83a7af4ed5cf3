import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DataPathError, DataRoot } from "./data-root.js";

describe("DataRoot confinement", () => {
  let base: string;
  let root: DataRoot;
  /** A directory outside the data root holding something precious. */
  let outside: string;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "berth-dataroot-"));
    outside = join(base, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "precious"), "keep me");
    root = new DataRoot(join(base, "root"));
    await root.init();
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it("creates the root 0700 whatever the umask, and warns about an existing root others can enter", async () => {
    const old = process.umask(0);
    try {
      const fresh = new DataRoot(join(base, "fresh", "root"));
      expect(await fresh.init()).toEqual([]);
      expect((await stat(join(base, "fresh", "root"))).mode & 0o777).toBe(0o700);
      await chmod(join(base, "fresh", "root"), 0o755);
      const warnings = await fresh.init();
      expect(warnings.join("\n")).toMatch(/mode 755: local users can reach .* chmod 700/);
    } finally {
      process.umask(old);
    }
  });

  it("creates, checks and removes <root>/<server id>", async () => {
    const p = await root.ensure("srv_abcd2345");
    expect(p).toBe(join(base, "root", "srv_abcd2345"));
    await writeFile(join(p, "world.dat"), "12345");
    const c = await root.check("srv_abcd2345");
    expect(c).toMatchObject({ exists: true, sizeBytes: 5 });
    expect(c.modifyTimeMs).toBeGreaterThan(0);
    await root.remove("srv_abcd2345");
    expect(await root.check("srv_abcd2345")).toMatchObject({ exists: false, sizeBytes: 0 });
  });

  it.each([
    ["..", "parent directory"],
    ["../outside", "relative escape"],
    ["srv_abcd/../../outside", "escape hidden behind a valid prefix"],
    ["/etc", "absolute path"],
    ["/tmp", "absolute path to an existing directory"],
    ["", "empty id"],
    ["data", "a name that is not a server id"],
    ["SRV_ABCD2345", "wrong case"],
    ["srv_abcd2345/", "trailing slash"],
    ["srv_abcd\0", "NUL byte"],
  ])("refuses %j (%s) for every operation, naming the rule", async (id) => {
    expect(() => root.pathFor(id)).toThrow(DataPathError);
    expect(() => root.pathFor(id)).toThrow(/not a server id/);
    await expect(root.ensure(id)).rejects.toThrow(DataPathError);
    await expect(root.check(id)).rejects.toThrow(DataPathError);
    await expect(root.remove(id)).rejects.toThrow(DataPathError);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("refuses a data directory that is a symlink pointing out, and removes nothing", async () => {
    await symlink(outside, join(root.root, "srv_linkedout"));
    for (const op of [() => root.ensure("srv_linkedout"), () => root.check("srv_linkedout"), () => root.remove("srv_linkedout")]) {
      await expect(op()).rejects.toThrow(/srv_linkedout: it is a symlink/);
    }
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("refuses a data directory that is a symlink even when it points inside the root", async () => {
    await mkdir(join(root.root, "srv_realone"));
    await symlink(join(root.root, "srv_realone"), join(root.root, "srv_alias"));
    await expect(root.check("srv_alias")).rejects.toThrow(DataPathError);
  });

  it("removing a data directory deletes symlinks inside it as links, never their targets", async () => {
    const p = await root.ensure("srv_withlinks");
    await symlink(outside, join(p, "escape-dir"));
    await symlink(join(outside, "precious"), join(p, "escape-file"));
    // The size walk does not follow them either.
    expect((await root.check("srv_withlinks")).sizeBytes).toBe(0);
    await root.remove("srv_withlinks");
    expect(existsSync(p)).toBe(false);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("remove deletes only <root>/<server id>: siblings and the root survive", async () => {
    await root.ensure("srv_victimaa");
    await root.ensure("srv_neighbor");
    await writeFile(join(root.root, "srv_neighbor", "f"), "x");
    await mkdir(join(root.root, "lost+found"));
    await root.remove("srv_victimaa");
    expect(existsSync(join(root.root, "srv_victimaa"))).toBe(false);
    expect(existsSync(join(root.root, "srv_neighbor", "f"))).toBe(true);
    expect(existsSync(join(root.root, "lost+found"))).toBe(true);
    expect(existsSync(root.root)).toBe(true);
    // Removing what is not there is fine (idempotent).
    await root.remove("srv_victimaa");
  });

  it("refuses a data root reached through a symlinked component, suggesting the real path", async () => {
    await mkdir(join(base, "real", "berth"), { recursive: true });
    await symlink(join(base, "real"), join(base, "link"));
    const viaLink = new DataRoot(join(base, "link", "berth"));
    await expect(viaLink.init()).rejects.toThrow(DataPathError);
    await expect(viaLink.init()).rejects.toThrow(`--data-root ${join(base, "real", "berth")}`);
    await expect(viaLink.ensure("srv_abcd2345")).rejects.toThrow(/through a symlink/);
    expect(existsSync(join(base, "real", "berth", "srv_abcd2345"))).toBe(false);
  });

  it("refuses to work once the root has been swapped for a symlink after start", async () => {
    await root.ensure("srv_before");
    await rm(root.root, { recursive: true });
    await symlink(outside, root.root);
    await expect(root.ensure("srv_after")).rejects.toThrow(/through a symlink/);
    await expect(root.remove("srv_before")).rejects.toThrow(DataPathError);
    expect(existsSync(join(outside, "srv_after"))).toBe(false);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("refuses a relative data root", () => {
    expect(() => new DataRoot("var/lib/berth")).toThrow(/must be an absolute path/);
  });

  it("lists only directories and tells server ids apart", async () => {
    await root.ensure("srv_listedaa");
    await mkdir(join(root.root, "notes"));
    await writeFile(join(root.root, "file"), "");
    expect((await root.list()).sort()).toEqual(["notes", "srv_listedaa"]);
    expect(root.isServerId("srv_listedaa")).toBe(true);
    expect(root.isServerId("notes")).toBe(false);
  });
});
