import { mkdtemp, mkdir, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { giveToContainerRoot, remappedRoot } from "./userns.js";

describe("remappedRoot: the host uid of a container's root, from docker info", () => {
  it.each([
    ["no remapping", { SecurityOptions: ["name=seccomp,profile=default"], DockerRootDir: "/var/lib/docker" }, undefined],
    ["remapped to dockremap's range", { SecurityOptions: ["name=seccomp,profile=default", "name=userns"], DockerRootDir: "/var/lib/docker/100000.100000" }, { uid: 100000, gid: 100000 }],
    ["different uid and gid", { SecurityOptions: ["name=userns"], DockerRootDir: "/srv/docker/231072.296608" }, { uid: 231072, gid: 296608 }],
    ["an old engine without security options", { DockerRootDir: "/var/lib/docker" }, undefined],
  ])("%s", (_name, info, want) => {
    expect(remappedRoot(info)).toEqual(want);
  });

  it("refuses to guess when the engine remaps but its root dir names no identity", () => {
    expect(() => remappedRoot({ SecurityOptions: ["name=userns"], DockerRootDir: "/var/lib/docker" })).toThrow(/cannot tell which host uid/);
  });
});

describe.runIf(process.getuid?.() === 0)("giveToContainerRoot (as root)", () => {
  let dir: string;
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("hands a root-owned data directory over once, and leaves one an entrypoint chowned", async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-userns-"));
    const data = join(dir, "srv_abcd2345");
    await mkdir(data);
    expect(await giveToContainerRoot(data, { uid: 100000, gid: 100001 })).toBe(true);
    expect(await stat(data)).toMatchObject({ uid: 100000, gid: 100001 });
    // Already given (or chowned by the server to its own user): unchanged.
    expect(await giveToContainerRoot(data, { uid: 200000, gid: 200000 })).toBe(false);
    expect(await stat(data)).toMatchObject({ uid: 100000, gid: 100001 });
  });

  it("never follows a symlink", async () => {
    const link = join(dir, "link");
    await symlink("/etc", link);
    await expect(giveToContainerRoot(link, { uid: 100000, gid: 100000 })).rejects.toThrow(/not a directory/);
    expect((await stat("/etc")).uid).toBe(0);
  });
});
