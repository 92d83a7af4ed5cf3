/**
 * FileService end to end (issue 19): a manager, an agent and a real Docker
 * engine; a server's data directory is worked on through the API whether
 * its container runs or not. A multi-chunk upload and its download match
 * byte for byte; every operation and archive round trip works; escapes
 * (`..`, absolute paths, symlinks planted from inside the container or on
 * the host) are refused with nothing read or written outside; the data
 * directory itself cannot be deleted; a viewer reads but never writes; the
 * ledger has every change with its actor and path; an offline host answers
 * Unavailable.
 */
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, readFile, readdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import * as tar from "tar-stream";
import * as yazl from "yazl";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { ArchiveFormat, FileService, FileType } from "@berth/proto/berth/v1/file_pb.js";
import { Phase, type Server, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const CHUNK = 1024 * 1024;
/** The test manager's --file-max-upload-bytes: the 20 MB upload fits, the bomb's 30 MiB does not. */
const CAP = 24 * 1024 * 1024;

/** A .tar.gz of `entries` (tar-stream writes any name it is given, `../` too). */
async function tarGz(entries: { name: string; data: Buffer }[]): Promise<Buffer> {
  const pack = tar.pack();
  const out: Buffer[] = [];
  pack.on("data", (c: Buffer) => out.push(c));
  const done = new Promise((resolve) => pack.on("end", resolve));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => pack.entry({ name: e.name, size: e.data.length, mode: 0o644 }, e.data, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await done;
  return gzipSync(Buffer.concat(out));
}
/**
 * A .zip of `entries`, deflated. yazl refuses a name with "..", so a name may
 * be written as a same-length stand-in and patched in the bytes afterwards
 * (`patch`): the name is in the local header and the central directory, and no
 * checksum covers it.
 */
async function zipOf(entries: { name: string; data: Buffer }[], patch?: [string, string]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const e of entries) zip.addBuffer(e.data, e.name);
  zip.end();
  const out: Buffer[] = [];
  for await (const c of zip.outputStream as AsyncIterable<Buffer>) out.push(c);
  let bytes = Buffer.concat(out);
  if (patch) {
    const [from, to] = patch.map((x) => Buffer.from(x));
    expect(to.length).toBe(from.length);
    for (let i = bytes.indexOf(from); i >= 0; i = bytes.indexOf(from, i + 1)) to.copy(bytes, i);
    bytes = Buffer.from(bytes);
  }
  return bytes;
}
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The gRPC code a call ends with ("OK" when it succeeds); a stream is read to its end. */
async function codeOf(p: Promise<unknown> | AsyncIterable<unknown>): Promise<string> {
  try {
    if (Symbol.asyncIterator in (p as object)) for await (const _ of p as AsyncIterable<unknown>) void _;
    else await p;
    return "OK";
  } catch (err) {
    return Code[ConnectError.from(err).code];
  }
}

describe("files", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let files: Client<typeof FileService>;
  let s: Server;
  let data: string;
  const ids: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("files");
    manager = await startManager({ dir, args: ["--file-max-upload-bytes", String(CAP)] });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
    files = createClient(FileService, manager.transport(manager.adminToken));
    const { server } = await manager.servers.createServer({ spec: { name: `files-${uid()}`, image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"], dataMountPath: "/data" } as ServerSpec });
    s = server!;
    ids.push(s.id);
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    data = join(agent.dataRoot, s.id);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  async function upload(path: string, content: Uint8Array, client = files): Promise<bigint> {
    let uploadId = "";
    let offset = 0;
    let size = 0n;
    do {
      const part = content.subarray(offset, offset + CHUNK);
      const last = offset + part.length >= content.length;
      const r = await client.writeFile({ server: s.id, path, uploadId, offset: BigInt(offset), data: part, last, ...(offset === 0 ? { size: BigInt(content.length) } : {}) });
      uploadId = r.uploadId;
      offset = Number(r.nextOffset);
      if (last) size = r.entry!.size;
    } while (offset < content.length);
    return size;
  }

  async function download(path: string, range: { offset?: bigint; length?: bigint } = {}, client = files): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    for await (const r of client.readFile({ server: s.id, path, ...range })) parts.push(r.data);
    return Buffer.concat(parts);
  }

  it("uploads a 20 MB file in 1 MiB chunks and downloads the same bytes, whole and ranged", async () => {
    const content = randomBytes(20 * 1024 * 1024 + 4321);
    expect(await upload("world.bin", content)).toBe(BigInt(content.length));
    expect(sha256(await readFile(join(data, "world.bin")))).toBe(sha256(content));
    expect(sha256(await download("world.bin"))).toBe(sha256(content));
    expect((await download("world.bin", { offset: 5_000_000n, length: 1000n })).equals(content.subarray(5_000_000, 5_001_000))).toBe(true);
    // No temporary file is left beside it.
    expect((await readdir(data)).filter((n) => n.startsWith(".berth-upload-"))).toEqual([]);

    // A chunk that does not follow names the offset expected.
    const first = await files.writeFile({ server: s.id, path: "resume.txt", data: new TextEncoder().encode("abc") });
    const wrong = await files.writeFile({ server: s.id, path: "resume.txt", uploadId: first.uploadId, offset: 1n, data: new TextEncoder().encode("x") }).catch((e: unknown) => ConnectError.from(e));
    expect(wrong).toBeInstanceOf(ConnectError);
    expect([Code[(wrong as ConnectError).code], (wrong as ConnectError).rawMessage]).toEqual(["FailedPrecondition", expect.stringContaining("expects offset 3")]);
  }, 180_000);

  it("lists, stats, makes directories, moves, copies, changes modes and deletes", async () => {
    await files.makeDirectory({ server: s.id, path: "cfg/sub", parents: true });
    await upload("cfg/server.properties", new TextEncoder().encode("motd=hello\n"));
    const st = await files.statFile({ server: s.id, path: "cfg/server.properties" });
    expect(st.entry).toMatchObject({ name: "server.properties", type: FileType.FILE, size: 11n, mode: 0o644 });
    await files.copyFile({ server: s.id, fromPath: "cfg", toPath: "cfg-copy" });
    await files.moveFile({ server: s.id, fromPath: "cfg-copy/server.properties", toPath: "moved.properties" });
    expect((await files.changeFileMode({ server: s.id, path: "moved.properties", mode: 0o600 })).entry?.mode).toBe(0o600);
    expect(((await lstat(join(data, "moved.properties"))).mode & 0o777).toString(8)).toBe("600");
    const root = await files.listFiles({ server: s.id, path: "/" });
    expect(root.entries.map((e) => e.name)).toEqual(expect.arrayContaining(["cfg", "cfg-copy", "moved.properties", "world.bin"]));
    expect(Code[ConnectError.from(await files.deleteFile({ server: s.id, path: "cfg-copy" }).catch((e: unknown) => e)).code]).toBe("FailedPrecondition");
    await files.deleteFile({ server: s.id, path: "cfg-copy", recursive: true });
    await files.deleteFile({ server: s.id, path: "moved.properties" });
    expect((await files.listFiles({ server: s.id, path: "/" })).entries.map((e) => e.name)).not.toEqual(expect.arrayContaining(["cfg-copy"]));
    // Pages.
    for (let i = 0; i < 5; i++) await files.makeDirectory({ server: s.id, path: `many/d${i}`, parents: true });
    const p1 = await files.listFiles({ server: s.id, path: "many", pageSize: 3 });
    const p2 = await files.listFiles({ server: s.id, path: "many", pageSize: 3, pageToken: p1.nextPageToken });
    expect([...p1.entries, ...p2.entries].map((e) => e.name)).toEqual(["d0", "d1", "d2", "d3", "d4"]);
    expect(p2.nextPageToken).toBe("");
  }, 60_000);

  it("creates and extracts .tar.gz and .zip archives: the round trip gives the same files", async () => {
    await files.makeDirectory({ server: s.id, path: "pack/inner", parents: true });
    const a = randomBytes(300_000);
    await upload("pack/a.bin", a);
    await upload("pack/inner/b.txt", new TextEncoder().encode("bee\n"));
    for (const [format, name] of [
      [ArchiveFormat.TAR_GZ, "pack.tar.gz"],
      [ArchiveFormat.ZIP, "pack.zip"],
    ] as const) {
      const made = await files.createArchive({ server: s.id, paths: ["pack"], archivePath: name, format });
      expect(made.entries).toBe(4n);
      const out = `out-${name.replace(/\./g, "-")}`;
      const ex = await files.extractArchive({ server: s.id, archivePath: name, destinationPath: out });
      expect(ex.placed).toEqual(["pack"]);
      expect(sha256(await download(`${out}/pack/a.bin`))).toBe(sha256(a));
      expect((await download(`${out}/pack/inner/b.txt`)).toString()).toBe("bee\n");
      // Extraction never overwrites.
      expect(await codeOf(files.extractArchive({ server: s.id, archivePath: name, destinationPath: out }))).toBe("AlreadyExists");
    }
  }, 120_000);

  it("refuses zip-slip archives and stops gzip and zip bombs at the size cap (.tar.gz and .zip), leaving nothing; refuses an upload over the cap", async () => {
    await upload("slip.tar.gz", await tarGz([{ name: "fine.txt", data: Buffer.from("fine") }, { name: "../../../escaped.txt", data: Buffer.from("evil") }]));
    expect(await codeOf(files.extractArchive({ server: s.id, archivePath: "slip.tar.gz", destinationPath: "slip" }))).toBe("InvalidArgument");
    // 30 MiB of zeros in a few KiB.
    const bomb = await tarGz([{ name: "zeros", data: Buffer.alloc(30 * 1024 * 1024) }]);
    expect(bomb.length).toBeLessThan(1024 * 1024);
    await upload("bomb.tar.gz", bomb);
    expect(await codeOf(files.extractArchive({ server: s.id, archivePath: "bomb.tar.gz", destinationPath: "bomb" }))).toBe("ResourceExhausted");
    // The same in a .zip: a "../" entry, and 30 MiB of zeros deflated to a few KiB.
    await upload("slip.zip", await zipOf([{ name: "fine.txt", data: Buffer.from("fine") }, { name: "zz/zz/zz/escaped.txt", data: Buffer.from("evil") }], ["zz/zz/zz/", "../../../"]));
    expect(await codeOf(files.extractArchive({ server: s.id, archivePath: "slip.zip", destinationPath: "zslip" }))).toBe("InvalidArgument");
    const zipBomb = await zipOf([{ name: "zeros", data: Buffer.alloc(30 * 1024 * 1024) }]);
    expect(zipBomb.length).toBeLessThan(1024 * 1024);
    await upload("bomb.zip", zipBomb);
    expect(await codeOf(files.extractArchive({ server: s.id, archivePath: "bomb.zip", destinationPath: "zbomb" }))).toBe("ResourceExhausted");
    const names = await readdir(data);
    expect(names.filter((n) => ["slip", "bomb", "zslip", "zbomb", "fine.txt", "zeros"].includes(n))).toEqual([]);
    expect(await readdir(agent.dataRoot)).not.toContain("escaped.txt");
    expect(await readdir(dir)).not.toContain("escaped.txt");
    // Over the manager's cap: refused before a byte reaches the host.
    expect(await codeOf(files.writeFile({ server: s.id, path: "huge.bin", size: BigInt(CAP + 1), data: new Uint8Array([1]) }))).toBe("ResourceExhausted");
    expect(names).not.toContain("huge.bin");
  }, 60_000);

  it("refuses escapes with precise codes and reads or writes nothing outside the data directory", async () => {
    const outside = join(dir, "outside");
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, "secret"), "outside secret");
    // Planted from inside the container, and directly on the host.
    const exec = async (cmd: string) => {
      for await (const r of manager.servers.execCommand({ id: s.id, argv: ["sh", "-c", cmd] })) if (r.exited) expect(r.exitCode).toBe(0);
    };
    await exec("ln -s / /data/rootlink && ln -s /etc/passwd /data/pw && ln -s ../../.. /data/up");
    await symlink(outside, join(data, "hostlink"));
    await symlink(join(outside, "secret"), join(data, "hostsecret"));

    expect(await codeOf(files.statFile({ server: s.id, path: "../x" }))).toBe("InvalidArgument");
    expect(await codeOf(files.listFiles({ server: s.id, path: "cfg/../.." }))).toBe("InvalidArgument");
    // A leading "/" is the data directory, never the host's root.
    expect(await codeOf(download("/etc/passwd"))).toBe("NotFound");
    for (const link of ["rootlink", "up", "hostlink"]) {
      expect(await codeOf(files.listFiles({ server: s.id, path: link }))).toBe("PermissionDenied");
      expect(await codeOf(files.writeFile({ server: s.id, path: `${link}/planted`, data: new Uint8Array([1]), last: true }))).toBe("PermissionDenied");
    }
    for (const link of ["pw", "hostsecret"]) {
      expect(await codeOf(download(link))).toBe("PermissionDenied");
      expect(await codeOf(files.writeFile({ server: s.id, path: link, data: new Uint8Array([1]), last: true }))).toBe("PermissionDenied");
      expect(await codeOf(files.changeFileMode({ server: s.id, path: link, mode: 0o777 }))).toBe("PermissionDenied");
      expect(await codeOf(files.copyFile({ server: s.id, fromPath: link, toPath: `${link}-copy` }))).toBe("PermissionDenied");
    }
    expect(await codeOf(files.createArchive({ server: s.id, paths: ["rootlink"], archivePath: "root.zip", format: ArchiveFormat.ZIP }))).toBe("PermissionDenied");
    // The data directory itself: PurgeServer's job.
    for (const path of ["/", "", "."]) expect(await codeOf(files.deleteFile({ server: s.id, path, recursive: true }))).toBe(path === "" ? "InvalidArgument" : "PermissionDenied");
    expect(await codeOf(files.moveFile({ server: s.id, fromPath: "/", toPath: "elsewhere" }))).toBe("PermissionDenied");
    // Deleting a planted link removes the link, never its target.
    await files.deleteFile({ server: s.id, path: "hostlink" });
    expect(await readdir(outside)).toEqual(["secret"]);
    expect(await readFile(join(outside, "secret"), "utf8")).toBe("outside secret");
    expect((await lstat(data)).isDirectory()).toBe(true);
  }, 60_000);

  it("lets a viewer read but not write, and works on a stopped server", async () => {
    const viewer = (await manager.access.createToken({ name: `v-${uid()}`, role: Role.VIEWER, project: "default" })).secret;
    const asViewer = createClient(FileService, manager.transport(viewer));
    expect((await asViewer.statFile({ server: s.id, path: "cfg/server.properties" })).entry?.size).toBe(11n);
    expect((await download("cfg/server.properties", {}, asViewer)).toString()).toBe("motd=hello\n");
    expect(await codeOf(asViewer.writeFile({ server: s.id, path: "v.txt", data: new Uint8Array([1]), last: true }))).toBe("PermissionDenied");
    expect(await codeOf(asViewer.deleteFile({ server: s.id, path: "cfg", recursive: true }))).toBe("PermissionDenied");
    expect(await codeOf(asViewer.makeDirectory({ server: s.id, path: "v" }))).toBe("PermissionDenied");
    expect((await lstat(join(data, "cfg"))).isDirectory()).toBe(true);

    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await waitForPhase(manager, s.id, Phase.STOPPED, 60_000);
    await upload("while-stopped.txt", new TextEncoder().encode("offline edit\n"));
    expect((await download("while-stopped.txt")).toString()).toBe("offline edit\n");
  }, 90_000);

  it("records every change in the ledger with its actor and path", async () => {
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const { events: got } = await events.listEvents({ serverId: s.id, typePrefix: "file.", pageSize: 500 });
    const seen = got.map((e) => `${e.type} ${(JSON.parse(e.payloadJson || "{}") as { path?: string }).path}`);
    for (const want of [
      "file.written world.bin",
      "file.directory_created cfg/sub",
      "file.copied cfg",
      "file.moved cfg-copy/server.properties",
      "file.mode_changed moved.properties",
      "file.deleted cfg-copy",
      "file.archive_created pack.zip",
      "file.archive_extracted pack.tar.gz",
      "file.deleted hostlink",
      "file.written while-stopped.txt",
    ]) {
      expect(seen).toContain(want);
    }
    expect(new Set(got.map((e) => e.actor))).toEqual(new Set([expect.stringMatching(/^token:/)]));
    // Refused calls changed nothing and recorded nothing.
    expect(seen.filter((e) => e.includes("planted") || e.startsWith("file.written v.txt"))).toEqual([]);
  });

  it("answers Unavailable when the server's host is offline", async () => {
    await agent.stop();
    const code = await waitFor("Unavailable", async () => {
      const c = await codeOf(files.listFiles({ server: s.id, path: "/" }));
      return c === "Unavailable" ? c : undefined;
    });
    expect(code).toBe("Unavailable");
    expect(await codeOf(download("world.bin"))).toBe("Unavailable");
    expect(await codeOf(files.writeFile({ server: s.id, path: "x", data: new Uint8Array([1]), last: true }))).toBe("Unavailable");
  }, 60_000);
});
