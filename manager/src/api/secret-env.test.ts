import { createClient } from "@connectrpc/connect";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, inject, it } from "vitest";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { createLogger } from "../log.js";
import { buildManager, type ManagerConfig } from "../manager.js";
import { SECRET_MASK, SecretKeyError } from "../store/secrets.js";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "../../../test/harness/postgres.js";
import { ScriptedAgent, startTestManager, type TestManager } from "../../testing/fuzz-kit.js";
import { testEngine } from "../../testing/store.js";

const PASSWORD = "s3cr3t-value-that-must-not-leak";
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function withServer(): Promise<{ tm: TestManager; agent: ScriptedAgent; id: string }> {
  const tm = await startTestManager();
  cleanup.push(() => tm.close());
  const agent = await ScriptedAgent.enroll(tm);
  agent.connect();
  cleanup.push(async () => void (await agent.close().catch(() => undefined)));
  await waitFor(() => tm.manager.hub.isConnected(agent.hostId));
  const servers = createClient(ServerService, tm.transport());
  const res = await servers.createServer({
    spec: { name: "db", image: "busybox", hostId: agent.hostId, env: { PW: PASSWORD, MODE: "fast" }, secretEnv: ["PW"], desiredState: 3 /* STOPPED */ },
  });
  return { tm, agent, id: res.server!.id };
}

async function waitFor(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("secret env values", () => {
  it("are masked for viewers and admins, kept by UpdateServer's mask, sealed in the database, and reach the agent in the clear", async () => {
    const { tm, agent, id } = await withServer();
    const admin = createClient(ServerService, tm.transport());
    const { secret: viewerToken } = await createClient(AccessService, tm.transport()).createToken({ name: "v", role: Role.VIEWER, project: "default" });
    const viewer = createClient(ServerService, tm.transport(viewerToken));

    for (const c of [admin, viewer]) {
      expect((await c.getServer({ id })).server!.spec!.env).toEqual({ PW: SECRET_MASK, MODE: "fast" });
      expect((await c.listServers({})).servers[0]!.spec!.env.PW).toBe(SECRET_MASK);
    }

    // A start sends the agent a container command: the value in the clear, for the container.
    const before = (await tm.manager.store.getServer(id))!.spec.env.PW!;
    await admin.startServer({ id });
    await waitFor(() => agent.received.some((m) => m.body.case === "command" && m.body.value.container?.env.PW !== undefined));
    const sent = agent.received.flatMap((m) => (m.body.case === "command" && m.body.value.container ? [m.body.value.container] : []));
    expect(sent[0]!.env.PW).toBe(PASSWORD);
    const hash = sent[0]!.specHash;

    // Re-submitting what GetServer showed (the mask) keeps the stored value and the container's hash.
    const shown = (await admin.getServer({ id })).server!.spec!;
    const updated = await admin.updateServer({ id, spec: { ...shown, env: { ...shown.env, MODE: "fast" } }, applyNow: true });
    expect(updated.server!.spec!.env.PW).toBe(SECRET_MASK);
    expect((await tm.manager.store.getServer(id))!.spec.env.PW).toBe(before);
    const n = agent.received.length;
    await admin.restartServer({ id });
    await waitFor(() => agent.received.slice(n).some((m) => m.body.case === "command" && m.body.value.container !== undefined));
    const again = agent.received.slice(n).flatMap((m) => (m.body.case === "command" && m.body.value.container ? [m.body.value.container] : []));
    expect(again[0]!.env.PW).toBe(PASSWORD);
    expect(again[0]!.specHash).toBe(hash);

    // Nothing at rest and no event holds the plaintext (spec_json, stored commands, the WAL).
    const events = await createClient(EventService, tm.transport()).listEvents({ pageSize: 1000 });
    expect(JSON.stringify(events.events.map((e) => [e.message, e.payloadJson]))).not.toContain(PASSWORD);
    if (tm.engine === "sqlite") {
      // The files themselves: every table, the WAL and free pages.
      for (const f of [tm.dbPath, `${tm.dbPath}-wal`]) expect(readFileSync(f).includes(PASSWORD)).toBe(false);
    } else {
      // PostgreSQL's files are the server's: every row of every table of the database instead.
      const tables = (await tm.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")).map((r) => String(r[0]));
      expect(tables).toEqual(expect.arrayContaining(["servers", "commands", "events"]));
      for (const t of tables) {
        const cells = (await tm.rows(`SELECT * FROM "${t}"`)).flat().map((v) => (Buffer.isBuffer(v) ? v.toString("latin1") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)));
        expect(cells.filter((c) => c.includes(PASSWORD)), `table ${t}`).toEqual([]);
      }
    }
  });

  it("a manager given another key than the database's refuses to start, saying which file to restore", async () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-secret-key-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    let where: Partial<ManagerConfig>;
    if (testEngine() === "sqlite") {
      // The key's default place: secret.key beside the database file.
      where = { dbPath: join(dir, "berth.db") };
    } else {
      // A PostgreSQL database has no directory of its own: the key file is always named.
      const server = inject("postgres").url;
      if (!server) throw new Error(`BERTH_TEST_STORE=postgres needs the run's PostgreSQL server: ${inject("postgres").unavailable ?? "none was provided"}`);
      const name = uniqueDatabaseName("berth_key");
      where = { store: await createDatabase(server, name), secretKeyFile: join(dir, "secret.key") };
      cleanup.push(() => dropDatabase(server, name));
    }
    const log = createLogger("silent", "test");
    const first = await buildManager({ listen: "127.0.0.1:0", ...where, log });
    await first.close();
    expect(readFileSync(join(dir, "secret.key"))).toHaveLength(32);
    const wrong = join(dir, "other.key");
    writeFileSync(wrong, "cd".repeat(32), { mode: 0o600 });
    await expect(buildManager({ listen: "127.0.0.1:0", ...where, secretKeyFile: wrong, log })).rejects.toThrow(SecretKeyError);
    await expect(buildManager({ listen: "127.0.0.1:0", ...where, secretKeyFile: wrong, log })).rejects.toThrow(/is not the key this database's secret env values were sealed with/);
    rmSync(join(dir, "secret.key"));
    await expect(buildManager({ listen: "127.0.0.1:0", ...where, log })).rejects.toThrow(/secret\.key is missing, and this database holds secrets sealed with a key/);
  });
});
