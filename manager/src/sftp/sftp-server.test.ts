/**
 * The SFTP endpoint against a real OpenSSH `sftp` client (batch mode) and the
 * ssh2 client. Its file API here is a plain directory (SftpFiles over node:fs):
 * these tests are about the protocol, the login and the bounds; the file API's
 * confinement has its own tests, and test/sftp.test.ts runs the endpoint over
 * berth's real file API and Docker.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureBinary } from "../../../test/harness/docker-engine.js";
import { sftpBatch as runSftp } from "../../../test/harness/sftp-client.js";
import { dataPath, parseSftpUser, type SftpEntry, type SftpFiles } from "./sftp-files.js";
import { loadOrCreateHostKey, longname, SftpServer } from "./sftp-server.js";

const log = pino({ level: "silent" });
const TOKEN = "berth_operator_secret";
const VIEWER = "berth_viewer_secret";

/** SftpFiles over a plain directory, recording what it was asked to change. */
function dirFiles(root: string, writable: boolean, changes: string[]): SftpFiles {
  const at = (p: string) => join(root, p);
  const entry = async (p: string, name: string): Promise<SftpEntry> => {
    const s = await lstat(at(p)).catch(notFound(p));
    return { name, type: s.isDirectory() ? "dir" : s.isFile() ? "file" : s.isSymbolicLink() ? "symlink" : "other", size: s.size, mode: s.mode & 0o7777, mtimeMs: s.mtimeMs };
  };
  return {
    label: "test",
    writable,
    stat: (p) => entry(p, p.split("/").pop() ?? ""),
    async list(p, token) {
      const names = (await readdir(at(p)).catch(notFound(p))).sort();
      const from = token ? Number(token) : 0;
      const page = names.slice(from, from + 150);
      return { entries: await Promise.all(page.map((n) => entry(join(p, n), n))), nextPageToken: from + 150 < names.length ? String(from + 150) : "" };
    },
    async *read(p, offset, signal) {
      for await (const chunk of createReadStream(at(p), { start: offset, highWaterMark: 64 * 1024, signal })) yield chunk as Buffer;
    },
    async write(p, data, signal) {
      const parts: Buffer[] = [];
      for await (const d of data) {
        if (signal.aborted) throw new ConnectError("aborted", Code.Canceled);
        parts.push(Buffer.from(d));
      }
      if (signal.aborted) throw new ConnectError("aborted", Code.Canceled);
      const tmp = `${at(p)}.upload`;
      await writeFile(tmp, Buffer.concat(parts));
      await rename(tmp, at(p));
      changes.push(`write ${p}`);
    },
    mkdir: async (p) => void (await mkdir(at(p)), changes.push(`mkdir ${p}`)),
    remove: async (p) => void (await unlink(at(p)).catch(notFound(p)), changes.push(`remove ${p}`)),
    rmdir: async (p) => void (await rmdir(at(p)).catch(notFound(p)), changes.push(`rmdir ${p}`)),
    rename: async (a, b) => void (await rename(at(a), at(b)).catch(notFound(a)), changes.push(`rename ${a} ${b}`)),
    chmod: async (p, mode) => void (await chmod(at(p), mode).catch(notFound(p)), changes.push(`chmod ${p} ${mode.toString(8)}`)),
  };
}

const notFound = (p: string) => (err: NodeJS.ErrnoException) => {
  throw err.code === "ENOENT" ? new ConnectError(`/${p} does not exist`, Code.NotFound) : err;
};

let dir: string;
let root: string;
let server: SftpServer;
let port: number;
let sshKeygen: string;
const changes: string[] = [];
const logins: string[] = [];

beforeAll(async () => {
  // The real client: Debian's openssh-client (apt-installed when missing, as root).
  sshKeygen = await ensureBinary("ssh-keygen", "openssh-client");
  dir = await mkdtemp(join(tmpdir(), "berth-sftp-"));
  root = join(dir, "data");
  await mkdir(root);
  const { key } = await loadOrCreateHostKey(join(dir, "host_key"));
  server = new SftpServer({
    hostKey: key,
    log,
    failedLoginDelayMs: 0,
    maxConnections: 4,
    login: async (user, password) => {
      logins.push(user);
      const { server: name, project } = parseSftpUser(user);
      if (password !== TOKEN && password !== VIEWER) throw new ConnectError("unknown token", Code.Unauthenticated);
      if (name !== "mc" || project !== "prod") throw new ConnectError(`server "${name}" not found in project "${project}"`, Code.NotFound);
      return dirFiles(root, password === TOKEN, changes);
    },
  });
  port = (await server.listen(0, "127.0.0.1")).port;
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** OpenSSH's sftp in batch mode as `user`, in the test dir. */
const sftpBatch = (user: string, password: string, commands: string[]) => runSftp({ port, user, password, commands, cwd: dir });

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("the SFTP endpoint with OpenSSH's sftp client", { timeout: 60_000 }, () => {
  it("an operator's login uploads, downloads, lists and changes files in the server's data directory only", async () => {
    const big = randomBytes(5 * 1024 * 1024 + 123);
    await writeFile(join(dir, "world.bin"), big);
    await writeFile(join(root, "server.properties"), "motd=hello\n");
    const r = await sftpBatch("mc.prod", TOKEN, [
      "pwd",
      "put world.bin",
      "mkdir plugins",
      "rename world.bin plugins/world.bin",
      "chmod 600 plugins/world.bin",
      "get server.properties got.properties",
      "get plugins/world.bin got.bin",
      "ls -l plugins",
      "cd ..",
      "cd ..",
      "pwd",
      "rm server.properties",
    ]);
    expect(r.out).toContain("Remote working directory: /");
    expect(r.code, r.out).toBe(0);
    expect(sha(await readFile(join(dir, "got.bin")))).toBe(sha(big));
    expect(await readFile(join(dir, "got.properties"), "utf8")).toBe("motd=hello\n");
    expect(sha(await readFile(join(root, "plugins", "world.bin")))).toBe(sha(big));
    expect((await stat(join(root, "plugins", "world.bin"))).mode & 0o777).toBe(0o600);
    await expect(stat(join(root, "server.properties"))).rejects.toThrow(/ENOENT/);
    // `cd ..` at the top stays at the top: the client never saw anything above the data directory.
    expect(r.out.match(/Remote working directory: \/\n/g)).toHaveLength(2);
    expect(r.out).toMatch(new RegExp(`-rw-------\\s+1 berth\\s+berth\\s+${big.length} .* world\\.bin`));
    expect(changes).toEqual(expect.arrayContaining(["write world.bin", "mkdir plugins", "rename world.bin plugins/world.bin", "chmod plugins/world.bin 600", "remove server.properties"]));
  });

  it("paths above the top resolve inside it; a missing file is 'No such file'", async () => {
    await writeFile(join(dir, "outside.txt"), "secret");
    const r = await sftpBatch("mc.prod", TOKEN, ["get ../outside.txt nope.txt"]);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/not found|No such file/i);
  });

  it("a viewer's login reads but changes nothing", async () => {
    await writeFile(join(root, "readme.txt"), "read me");
    await writeFile(join(dir, "upload.txt"), "x");
    const read = await sftpBatch("mc.prod", VIEWER, ["get readme.txt viewer-got.txt"]);
    expect(read.code, read.out).toBe(0);
    expect(await readFile(join(dir, "viewer-got.txt"), "utf8")).toBe("read me");
    const before = changes.length;
    for (const cmd of ["put upload.txt", "mkdir x", "rm readme.txt", "rename readme.txt r2.txt", "chmod 600 readme.txt"]) {
      const r = await sftpBatch("mc.prod", VIEWER, [cmd]);
      expect(r.code, cmd).not.toBe(0);
      expect(r.out, cmd).toMatch(/Permission denied/i);
    }
    expect(changes.length).toBe(before);
    expect(await readFile(join(root, "readme.txt"), "utf8")).toBe("read me");
  });

  it("a wrong token or a server the token cannot see is refused at login", async () => {
    const bad = await sftpBatch("mc.prod", "wrong", ["pwd"]);
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/Permission denied/i);
    const other = await sftpBatch("other.prod", TOKEN, ["pwd"]);
    expect(other.code).not.toBe(0);
    expect(logins).toEqual(expect.arrayContaining(["mc.prod", "other.prod"]));
  });
});

/** An ssh2 client's SFTP session as `user`. */
async function ssh2Sftp(user = "mc.prod", password = TOKEN): Promise<{ sftp: ssh2.SFTPWrapper; end: () => void }> {
  const client = new ssh2.Client();
  return new Promise((resolve, reject) => {
    client
      .on("ready", () => client.sftp((err, sftp) => (err ? reject(err) : resolve({ sftp, end: () => client.end() }))))
      .on("error", reject)
      .on("close", () => reject(new Error("the connection closed before the SFTP session opened")))
      .connect({ host: "127.0.0.1", port, username: user, password });
  });
}

const call = <T>(f: (cb: (err: (Error & { code?: number }) | null | undefined, v?: T) => void) => void) =>
  new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v as T))));

describe("the SFTP endpoint's rules, with the ssh2 client", { timeout: 30_000 }, () => {
  it("an upload is taken in order only; one written out of order is refused and replaces nothing", async () => {
    await writeFile(join(root, "keep.txt"), "original");
    const { sftp, end } = await ssh2Sftp();
    try {
      const h = await call<Buffer>((cb) => sftp.open("keep.txt", "w", cb));
      const err = await call((cb) => sftp.write(h, Buffer.from("later"), 0, 5, 10, cb)).catch((e: Error & { code?: number }) => e);
      expect((err as { code?: number }).code).toBe(ssh2.utils.sftp.STATUS_CODE.OP_UNSUPPORTED);
      expect(String((err as Error).message)).toMatch(/in order/);
      await call((cb) => sftp.close(h, cb)).catch(() => undefined);
      expect(await readFile(join(root, "keep.txt"), "utf8")).toBe("original");
    } finally {
      end();
    }
  });

  it("a connection that ends in the middle of an upload leaves the file as it was", async () => {
    await writeFile(join(root, "half.txt"), "whole");
    const { sftp, end } = await ssh2Sftp();
    const h = await call<Buffer>((cb) => sftp.open("half.txt", "w", cb));
    await call((cb) => sftp.write(h, Buffer.from("partial"), 0, 7, 0, cb));
    end();
    await new Promise((r) => setTimeout(r, 300));
    expect(await readFile(join(root, "half.txt"), "utf8")).toBe("whole");
  });

  it("resuming into an existing file and appending are refused with what to do", async () => {
    const { sftp, end } = await ssh2Sftp();
    try {
      const resume = await call((cb) => sftp.open("keep.txt", "r+", cb)).catch((e: Error) => e);
      expect(String(resume)).toMatch(/not supported/);
      const append = await call((cb) => sftp.open("keep.txt", "a", cb)).catch((e: Error) => e);
      expect(String(append)).toMatch(/appending/);
    } finally {
      end();
    }
  });

  it("a directory of more than a page is listed whole", async () => {
    await mkdir(join(root, "many"));
    await Promise.all(Array.from({ length: 420 }, (_, i) => writeFile(join(root, "many", `f${String(i).padStart(3, "0")}`), "")));
    const { sftp, end } = await ssh2Sftp();
    try {
      const list = await call<ssh2.FileEntryWithStats[]>((cb) => sftp.readdir("many", cb));
      expect(list.map((e) => e.filename).sort()).toEqual(Array.from({ length: 420 }, (_, i) => `f${String(i).padStart(3, "0")}`));
    } finally {
      end();
    }
  });

  it("more connections than allowed are closed at once", async () => {
    const open = await Promise.all(Array.from({ length: 4 }, () => ssh2Sftp()));
    try {
      await expect(ssh2Sftp()).rejects.toThrow();
    } finally {
      for (const o of open) o.end();
    }
  });
});

describe("SFTP paths, names and keys", () => {
  it("resolves every path inside the data directory", () => {
    expect(dataPath("/")).toBe("");
    expect(dataPath(".")).toBe("");
    expect(dataPath("/../../etc/passwd")).toBe("etc/passwd");
    expect(dataPath("a/./b/../c")).toBe("a/c");
    expect(() => dataPath("a\0b")).toThrow(/NUL/);
  });

  it("splits a login at its last dot", () => {
    expect(parseSftpUser("mc.prod")).toEqual({ server: "mc", project: "prod" });
    expect(parseSftpUser("srv_123.default")).toEqual({ server: "srv_123", project: "default" });
    expect(parseSftpUser("mc")).toEqual({ server: "mc", project: "default" });
  });

  it("keeps its host key: the same key and fingerprint on the next start, mode 0600", async () => {
    const path = join(dir, "keys", "again");
    const a = await loadOrCreateHostKey(path);
    const b = await loadOrCreateHostKey(path);
    expect(b).toEqual(a);
    expect(a.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const pub = await new Promise<string>((resolve, reject) => execFile(sshKeygen, ["-l", "-f", path], (err, out) => (err ? reject(err) : resolve(out))));
    expect(pub).toContain(a.fingerprint);
  });

  it("writes `ls -l` lines", () => {
    expect(longname({ name: "a.txt", type: "file", size: 12, mode: 0o644, mtimeMs: Date.UTC(2026, 11, 6, 9, 5) })).toBe("-rw-r--r--    1 berth    berth          12 Dec  6 09:05 a.txt");
    expect(longname({ name: "d", type: "dir", size: 4096, mode: 0o755, mtimeMs: 0 }).startsWith("drwxr-xr-x")).toBe(true);
  });
});
