/**
 * The manager's database disk fills up (a small tmpfs this test mounts, as
 * root): writes are refused with Unavailable and a message that says so,
 * reads keep working, health turns NOT_SERVING, and once space returns the
 * manager recovers by itself — no restart, no operator.
 */
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "@berth/proto/grpc/health/v1/health_pb.js";
import { startManager, tempDir, waitFor, type ManagerProc } from "../harness/processes.js";

describe("database disk full", () => {
  let dir: string;
  let dbDir: string;
  let mounted = false;
  let manager: ManagerProc;

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs for the manager's database: run it as root");
    dir = await tempDir("diskfull");
    dbDir = join(dir, "db");
    mkdirSync(dbDir);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", dbDir]);
    mounted = true;
    manager = await startManager({ dir, dbPath: join(dbDir, "berth.db"), args: ["--db-probe-interval", "1"] });
  });

  afterAll(async () => {
    await manager?.stop();
    if (mounted) execFileSync("umount", [dbDir]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Writes zeros into the file system until it has no byte left; returns the file to delete. */
  function fill(): string {
    const path = join(dbDir, "fill");
    const fd = openSync(path, "a");
    try {
      for (const size of [1 << 20, 4096, 512, 1]) {
        const chunk = Buffer.alloc(size);
        for (;;) {
          try {
            writeSync(fd, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
            throw err;
          }
        }
      }
    } finally {
      closeSync(fd);
    }
    return path;
  }

  it("writes answer Unavailable saying the disk is full, reads keep working, and it recovers by itself", async () => {
    const access = createClient(AccessService, manager.transport(manager.adminToken));
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const health = createClient(Health, manager.transport(undefined));
    const newToken = (name: string) => access.createToken({ name, role: Role.VIEWER, project: "default" });
    await newToken("before");
    // A second token, first used while the disk is full (its "last used" stamp cannot be written).
    const { secret: viewer } = await newToken("viewer");
    const viewerAccess = createClient(AccessService, manager.transport(viewer));

    const filler = fill();
    // SQLite may still have room in pages it already owns: write until the disk says no.
    let refusal: ConnectError | undefined;
    for (let i = 0; i < 200 && !refusal; i++) {
      await newToken(`during-${i}`).catch((e: unknown) => (refusal = ConnectError.from(e)));
    }
    expect(refusal?.code, refusal?.rawMessage).toBe(Code.Unavailable);
    expect(refusal?.rawMessage).toMatch(/database disk is full; free space on it and retry/);
    // Every later write is refused the same way, never with Internal.
    for (let i = 0; i < 5; i++) {
      const e = await newToken(`refused-${i}`).then(() => undefined, (err: unknown) => ConnectError.from(err));
      expect(e?.code).toBe(Code.Unavailable);
    }

    // Reads keep working, also for a token whose last-used stamp cannot be written now.
    expect((await access.listTokens({})).tokens.map((t) => t.name)).toContain("before");
    expect((await viewerAccess.whoAmI({})).token?.name).toBe("viewer");
    expect((await events.listEvents({ pageSize: 10 })).events.length).toBeGreaterThan(0);
    await manager.servers.listServers({});
    await manager.hosts.listHosts({});

    // Health says so (the write probe runs every second), with the reason on /readyz.
    await waitFor("health NOT_SERVING", async () => (await health.check({})).status === Serving.NOT_SERVING, 10_000, 200);
    const ready = await fetch(`${manager.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/full/i);

    // A manager (re)started while the disk is full still starts and serves reads
    // (found by the 30-minute campaign: it used to exit on its first write).
    const port = Number(new URL(manager.url).port);
    await manager.kill();
    manager = await startManager({ dir, dbPath: join(dbDir, "berth.db"), port, args: ["--db-probe-interval", "1"] });
    expect((await access.listTokens({})).tokens.map((t) => t.name)).toContain("before");
    expect((await newToken("after-restart").then(() => undefined, (e: unknown) => ConnectError.from(e)))?.code).toBe(Code.Unavailable);
    await waitFor("health NOT_SERVING after the restart", async () => (await health.check({})).status === Serving.NOT_SERVING, 10_000, 200);

    // Space comes back: writes work again without a restart, and health recovers.
    unlinkSync(filler);
    await waitFor("writes accepted again", async () => newToken("after").then(() => true, () => false), 10_000, 200);
    await waitFor("health SERVING", async () => (await health.check({})).status === Serving.SERVING, 10_000, 200);
    expect(manager.child.exitCode).toBeNull();
    expect((await access.listTokens({})).tokens.map((t) => t.name)).toContain("after");
    const db = new Database(manager.dbPath, { readonly: true });
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    db.close();
  });
});
