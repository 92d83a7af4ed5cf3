import { execFileSync } from "node:child_process";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { sanitizeCopiedTree } from "./copy-source.js";
import { DataRoot } from "./data-root.js";

const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "berth-copy-"));
  dirs.push(d);
  return d;
}

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

describe("sanitizeCopiedTree: a copy hands out no setuid/setgid bit and no special file", () => {
  it("clears setuid and setgid on files at any depth, keeps other bits and a directory's setgid", async () => {
    const d = await scratch();
    await mkdir(join(d, "bin", "deep"), { recursive: true });
    await writeFile(join(d, "sh"), "x");
    await chmod(join(d, "sh"), 0o4755);
    await writeFile(join(d, "bin", "deep", "tool"), "x");
    await chmod(join(d, "bin", "deep", "tool"), 0o6711);
    await writeFile(join(d, "plain"), "x");
    await chmod(join(d, "plain"), 0o640);
    await chmod(join(d, "bin"), 0o2775);

    const stripped = await sanitizeCopiedTree(d);

    expect(stripped.sort()).toEqual(["bin/deep/tool", "sh"]);
    expect(await modeOf(join(d, "sh"))).toBe(0o755);
    expect(await modeOf(join(d, "bin", "deep", "tool"))).toBe(0o711);
    expect(await modeOf(join(d, "plain"))).toBe(0o640);
    expect(await modeOf(join(d, "bin"))).toBe(0o2775);
    expect(await sanitizeCopiedTree(d)).toEqual([]);
  });

  it("refuses a FIFO", async () => {
    const d = await scratch();
    await mkdir(join(d, "a"));
    execFileSync("mkfifo", [join(d, "a", "pipe")]);
    await expect(sanitizeCopiedTree(d)).rejects.toThrow(/a\/pipe is a FIFO: berth never copies device nodes, FIFOs or sockets/);
  });

  it("refuses a socket", async () => {
    const d = await scratch();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(d, "sock"), resolve));
    try {
      await expect(sanitizeCopiedTree(d)).rejects.toThrow(/sock is a socket/);
    } finally {
      server.close();
    }
  });

  it.runIf(isRoot)("refuses block and character device nodes (as root)", async () => {
    const d = await scratch();
    execFileSync("mknod", [join(d, "disk"), "b", "7", "0"]);
    await expect(sanitizeCopiedTree(d)).rejects.toThrow(/disk is a block device/);
    await rm(join(d, "disk"));
    execFileSync("mknod", [join(d, "mem"), "c", "1", "1"]);
    await expect(sanitizeCopiedTree(d)).rejects.toThrow(/mem is a character device/);
  });
});

describe.runIf(isRoot)("DataRoot.copyIn (AdoptOrphan move_data) applies the rule (as root)", () => {
  it("copies a setuid-root binary without its bit and a file capability without the capability", async () => {
    const base = await scratch();
    const root = new DataRoot(join(base, "root"));
    await root.init();
    const src = join(base, "orphan-data");
    await mkdir(src);
    await copyFile("/bin/true", join(src, "sh"));
    await chmod(join(src, "sh"), 0o4755);
    await copyFile("/bin/true", join(src, "capped"));
    execFileSync("setcap", ["cap_setuid+ep", join(src, "capped")]);
    await writeFile(join(src, "world.dat"), "save");

    const stripped = await root.copyIn("srv_abcd2345", { type: "bind", path: src, readOnly: false }, 30_000);

    const target = join(base, "root", "srv_abcd2345");
    expect(stripped).toEqual(["sh"]);
    expect(await modeOf(join(target, "sh"))).toBe(0o755);
    expect(execFileSync("getcap", [join(target, "capped")]).toString().trim()).toBe("");
    expect((await stat(join(target, "world.dat"))).size).toBe(4);
    // The source is left as it was.
    expect(await modeOf(join(src, "sh"))).toBe(0o4755);
  });

  it("refuses a source holding a device node and leaves nothing behind", async () => {
    const base = await scratch();
    const root = new DataRoot(join(base, "root"));
    await root.init();
    const src = join(base, "orphan-data");
    await mkdir(join(src, "dev"), { recursive: true });
    execFileSync("mknod", [join(src, "dev", "sda"), "b", "8", "0"]);
    await expect(root.copyIn("srv_abcd2345", { type: "bind", path: src, readOnly: false }, 30_000)).rejects.toThrow(
      /refusing to copy .*orphan-data: dev\/sda is a block device/,
    );
    expect(await readdir(join(base, "root"))).toEqual([]);
  });
});
