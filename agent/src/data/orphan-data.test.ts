import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copySourceRefusal } from "./copy-source.js";
import { DataPathError, DataRoot } from "./data-root.js";

describe("DataRoot: stray directories and adopted data", () => {
  let base: string;
  let root: DataRoot;
  let outside: string;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "berth-orphan-data-"));
    outside = join(base, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "precious"), "keep me");
    root = new DataRoot(join(base, "root"));
    await root.init();
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it("removes a stray directory by name, any plain name, and nothing else", async () => {
    await mkdir(join(root.root, "leftover", "deep"), { recursive: true });
    await symlink(outside, join(root.root, "leftover", "deep", "link"));
    await root.removeEntry("leftover");
    expect(existsSync(join(root.root, "leftover"))).toBe(false);
    // The link inside was removed as a link: what it pointed to is untouched.
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
    await root.removeEntry("leftover"); // already gone: fine
    await mkdir(join(root.root, "srv_abcd2345"));
    await root.removeEntry("srv_abcd2345");
    expect(existsSync(join(root.root, "srv_abcd2345"))).toBe(false);
  });

  it.each([["../outside"], ["a/b"], [".copy-srv_abcd2345"], ["."], [".."], ["lost+found"], [""]])("refuses to remove %j", async (name) => {
    await expect(root.removeEntry(name)).rejects.toBeInstanceOf(DataPathError);
    expect(existsSync(outside)).toBe(true);
  });

  it("refuses to remove a symlink or a file under the root (list never shows them)", async () => {
    await symlink(outside, join(root.root, "sneaky"));
    await expect(root.removeEntry("sneaky")).rejects.toThrow(/not a directory/);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
  });

  it("copies a container's data into <root>/<server id> with modes and links kept, leaving the source in place", async () => {
    await mkdir(join(outside, "sub"));
    await writeFile(join(outside, "sub", "f"), "data");
    await symlink("/etc/passwd", join(outside, "link"));
    await chmod(outside, 0o700);
    await root.copyIn("srv_abcd2345", { type: "bind", path: outside, readOnly: false }, 30_000);
    const target = join(root.root, "srv_abcd2345");
    expect(await readFile(join(target, "sub", "f"), "utf8")).toBe("data");
    expect(await readFile(join(target, "precious"), "utf8")).toBe("keep me");
    expect(await readlink(join(target, "link"))).toBe("/etc/passwd");
    expect((await stat(target)).mode & 0o777).toBe(0o700);
    expect(await readFile(join(outside, "precious"), "utf8")).toBe("keep me");
    // No work directory is left behind, and an existing target is never overwritten.
    expect(await root.list()).toEqual(["srv_abcd2345"]);
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: outside, readOnly: false }, 30_000)).rejects.toThrow(/already exists/);
  });

  it("refuses sources that are not one container's data", async () => {
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: "/etc", readOnly: false }, 30_000)).rejects.toThrow(/under \/etc/);
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: outside, readOnly: true }, 30_000)).rejects.toThrow(/read-only/);
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: base, readOnly: false }, 30_000)).rejects.toThrow(/data root or one of its parents/);
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: join(outside, "precious"), readOnly: false }, 30_000)).rejects.toThrow(/not a directory/);
    // A symlink to a refused place is judged by where it leads.
    await symlink("/proc", join(base, "proc-link"));
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: join(base, "proc-link"), readOnly: false }, 30_000)).rejects.toThrow(/under \/proc/);
    await expect(root.copyIn("../x", { type: "bind", path: outside, readOnly: false }, 30_000)).rejects.toBeInstanceOf(DataPathError);
    expect(await root.list()).toEqual([]);
  });
});

describe("copySourceRefusal", () => {
  const ok = (p: string, type = "bind") => copySourceRefusal({ type, realSource: p, readOnly: false }, "/var/lib/berth");
  it.each([
    ["/srv/minecraft/world"],
    ["/data"],
    ["/home/ana/project"],
    ["/opt/app/data"],
    ["/var/lib/docker/volumes/pgdata/_data"],
    ["/var/lib/docker/volumes/pgdata/_data/sub"],
    ["/var/lib/berth/srv_other"],
    ["/tmp/berth-test/x"],
  ])("copies %s", (p) => expect(ok(p)).toBeUndefined());

  it.each([
    ["/", /system or shared/],
    ["/home", /system or shared/],
    ["/var/lib", /system or shared/],
    ["/etc/nginx", /under \/etc/],
    ["/proc/1/root", /under \/proc/],
    ["/root/.ssh", /under \/root/],
    ["/var/run/docker.sock", /under \/var\/run/],
    ["/var/lib/docker/containers/abc", /Docker's own state/],
    ["/var/lib/docker", /Docker's own state/],
    ["/var/lib/berth", /data root or one of its parents/],
    ["/var", /system or shared/],
  ])("refuses %s", (p, why) => expect(ok(p)).toMatch(why));

  it("refuses tmpfs and read-only mounts", () => {
    expect(ok("/srv/x", "tmpfs")).toMatch(/tmpfs mount/);
    expect(copySourceRefusal({ type: "volume", realSource: "/srv/x", readOnly: true }, "/var/lib/berth")).toMatch(/read-only/);
  });
});
