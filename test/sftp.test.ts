/**
 * The SFTP endpoint end to end (issue 19): a manager started with
 * --sftp-listen, an agent and a real Docker engine, and OpenSSH's `sftp`
 * client in batch mode. A login as `<server>.<project>` with a berth token
 * sees that server's data directory and nothing else; an operator's upload
 * lands byte for byte on the host, and its download matches; a viewer reads
 * and cannot write; a symlink planted in the data directory does not lead out;
 * a revoked token is refused at its next login; every change is in the ledger
 * with the token as actor; the host key survives a manager restart.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { Phase, type Server, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { sftpBatch } from "./harness/sftp-client.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const SFTP_ARGS = ["--sftp-listen", "127.0.0.1:0"];

describe("sftp", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let s: Server;
  let data: string;
  let login: string;
  const tokens: Record<"operator" | "viewer", { id: string; secret: string; name: string }> = {} as never;
  const ids: string[] = [];

  const run = (who: "operator" | "viewer", commands: string[]) => sftpBatch({ port: manager.sftp!.port, user: login, password: tokens[who].secret, commands, cwd: dir });

  beforeAll(async () => {
    dir = await tempDir("sftp");
    manager = await startManager({ dir, args: SFTP_ARGS });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
    const name = `sftp-${uid()}`;
    const { server } = await manager.servers.createServer({ spec: { name, image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"], dataMountPath: "/data" } as ServerSpec });
    s = server!;
    ids.push(s.id);
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    data = join(agent.dataRoot, s.id);
    login = `${name}.${s.project}`;
    for (const [who, role] of [["operator", Role.OPERATOR], ["viewer", Role.VIEWER]] as const) {
      const r = await manager.access.createToken({ name: `sftp-${who}`, role, project: s.project });
      tokens[who] = { id: r.token!.id, secret: r.secret, name: r.token!.name };
    }
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  it("an operator uploads, renames, lists and downloads in the server's data directory; the bytes on the host match", async () => {
    const world = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(join(dir, "world.bin"), world);
    const r = await run("operator", ["pwd", "mkdir worlds", "put world.bin worlds/w.bin", "rename worlds/w.bin worlds/world.bin", "chmod 640 worlds/world.bin", "ls -l worlds", "get worlds/world.bin back.bin"]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain("Remote working directory: /");
    expect(r.out).toMatch(new RegExp(`-rw-r-----\\s+1 berth\\s+berth\\s+${world.length} .* world\\.bin`));
    expect(sha256(await readFile(join(data, "worlds", "world.bin")))).toBe(sha256(world));
    expect((await stat(join(data, "worlds", "world.bin"))).mode & 0o777).toBe(0o640);
    expect(sha256(await readFile(join(dir, "back.bin")))).toBe(sha256(world));
    // Each change is a ledger event with the SFTP login's token as actor.
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const actor = `token:${tokens.operator.id}:${tokens.operator.name}`;
    await waitFor("the SFTP changes in the ledger", async () => {
      const { events: list } = await events.listEvents({ serverId: s.id, typePrefix: "file." });
      const mine = list.filter((e) => e.actor === actor).map((e) => e.type);
      return ["file.directory_created", "file.written", "file.moved", "file.mode_changed"].every((t) => mine.includes(t)) || undefined;
    }, 10_000);
  });

  it("carries a 200 MB file up and back whole (FileService's upload sessions and streamed reads underneath)", async () => {
    const size = 200 * 1024 * 1024 + 4321;
    const local = join(dir, "big.bin");
    const h = createHash("sha256");
    const out = createWriteStream(local);
    for (let off = 0; off < size; off += 8 * 1024 * 1024) {
      const part = randomBytes(Math.min(8 * 1024 * 1024, size - off));
      h.update(part);
      if (!out.write(part)) await new Promise<void>((r) => out.once("drain", () => r()));
    }
    await new Promise<void>((r, j) => out.end((err?: Error | null) => (err ? j(err) : r())));
    const want = h.digest("hex");
    const r = await sftpBatch({ port: manager.sftp!.port, user: login, password: tokens.operator.secret, commands: ["put big.bin big.bin", "get big.bin big-back.bin"], cwd: dir, timeoutMs: 300_000 });
    expect(r.code, r.out).toBe(0);
    const hashOf = async (path: string) => {
      const x = createHash("sha256");
      for await (const b of createReadStream(path)) x.update(b as Buffer);
      return x.digest("hex");
    };
    expect((await stat(join(data, "big.bin"))).size).toBe(size);
    expect(await hashOf(join(data, "big.bin"))).toBe(want);
    expect(await hashOf(join(dir, "big-back.bin"))).toBe(want);
  }, 400_000);

  it("a viewer downloads but cannot change anything", async () => {
    await writeFile(join(data, "motd.txt"), "welcome\n");
    const read = await run("viewer", ["get motd.txt viewer-motd.txt"]);
    expect(read.code, read.out).toBe(0);
    expect(await readFile(join(dir, "viewer-motd.txt"), "utf8")).toBe("welcome\n");
    await writeFile(join(dir, "evil.txt"), "x");
    for (const cmd of ["put evil.txt motd.txt", "rm motd.txt", "mkdir nope"]) {
      const r = await run("viewer", [cmd]);
      expect(r.code, cmd).not.toBe(0);
      expect(r.out, cmd).toMatch(/Permission denied/i);
    }
    expect(await readFile(join(data, "motd.txt"), "utf8")).toBe("welcome\n");
  });

  it("nothing outside the data directory is reachable: `..` stops at the top, a planted symlink is refused", async () => {
    await writeFile(join(dir, "outside.txt"), "secret of the host");
    await symlink(dir, join(data, "escape"));
    const up = await run("operator", ["cd ../../..", "pwd", "ls"]);
    expect(up.code, up.out).toBe(0);
    expect(up.out).toContain("Remote working directory: /\n");
    expect(up.out).not.toContain("outside.txt");
    const link = await run("operator", ["get escape/outside.txt stolen.txt"]);
    expect(link.code).not.toBe(0);
    await expect(stat(join(dir, "stolen.txt"))).rejects.toThrow(/ENOENT/);
  });

  it("a login names a server the token can see; a revoked token is refused at its next login", async () => {
    const wrong = await sftpBatch({ port: manager.sftp!.port, user: `no-such-server.${s.project}`, password: tokens.operator.secret, commands: ["pwd"], cwd: dir });
    expect(wrong.code).not.toBe(0);
    const { secret } = await manager.access.createToken({ name: "sftp-revoked", role: Role.OPERATOR, project: s.project });
    const before = await sftpBatch({ port: manager.sftp!.port, user: login, password: secret, commands: ["pwd"], cwd: dir });
    expect(before.code, before.out).toBe(0);
    const { tokens: all } = await manager.access.listTokens({});
    await manager.access.revokeToken({ id: all.find((t) => t.name === "sftp-revoked")!.id });
    const after = await sftpBatch({ port: manager.sftp!.port, user: login, password: secret, commands: ["pwd"], cwd: dir });
    expect(after.code).not.toBe(0);
    expect(after.out).toMatch(/Permission denied/i);
  });

  it("keeps its host key across a manager restart (kept beside the database)", async () => {
    const first = manager.sftp!.fingerprint;
    expect(first).toMatch(/^SHA256:/);
    const port = Number(new URL(manager.url).port);
    await manager.stop();
    // The same port: the agent dials it again.
    manager = await startManager({ dir, port, args: SFTP_ARGS });
    expect(manager.sftp!.fingerprint).toBe(first);
    await waitForHostOnline(manager);
    const r = await run("operator", ["get motd.txt again.txt"]);
    expect(r.code, r.out).toBe(0);
  }, 90_000);
});
