// The PostgreSQL test harness (test/harness/postgres*.ts) on a real server: the
// run's shared server reaches unit tests, databases made for tests are isolated,
// LISTEN/NOTIFY works between connections, and a private server can be
// restarted, stopped and started again (what the store's failure tests need).
import { existsSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import setup from "../../../test/harness/postgres-setup.js";
import { createDatabase, databaseUrl, dropDatabase, startPostgres, uniqueDatabaseName, type PostgresServer } from "../../../test/harness/postgres.js";
import { requirePostgres } from "../../../test/harness/postgres-tests.js";

const provided = requirePostgres();

/** Alive and not a zombie waiting for its parent (init) to reap it. */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

describe.skipIf(!provided.url)("PostgreSQL harness: the run's shared server", () => {
  const server = provided.url!;
  const made: string[] = [];

  afterAll(async () => {
    for (const name of made) await dropDatabase(server, name);
  });

  it("answers with PostgreSQL 13 or newer (DROP DATABASE … WITH (FORCE))", async () => {
    const c = await connect(server);
    try {
      const { rows } = await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
      expect(Number(rows[0]!.v)).toBeGreaterThanOrEqual(130000);
    } finally {
      await c.end();
    }
  });

  it("gives each test its own empty database: tables and rows in one are not in the other", async () => {
    const [a, b] = [uniqueDatabaseName("smoke_a"), uniqueDatabaseName("smoke_b")];
    made.push(a, b);
    const ca = await connect(await createDatabase(server, a));
    const cb = await connect(await createDatabase(server, b));
    try {
      await ca.query("CREATE TABLE t (v text)");
      await ca.query("INSERT INTO t VALUES ('only in a')");
      // A fresh database starts empty: the table made in a does not exist in b.
      expect((await cb.query("SELECT to_regclass('t') AS r")).rows[0].r).toBeNull();
      await cb.query("CREATE TABLE t (v text)");
      await cb.query("INSERT INTO t VALUES ('only in b')");
      expect((await ca.query("SELECT v FROM t")).rows).toEqual([{ v: "only in a" }]);
      expect((await cb.query("SELECT v FROM t")).rows).toEqual([{ v: "only in b" }]);
    } finally {
      await ca.end();
      await cb.end();
    }

    // Dropped even with a connection still open (WITH (FORCE)); then it is gone.
    const lingering = await connect(databaseUrl(server, a));
    lingering.on("error", () => {});
    await dropDatabase(server, a);
    await expect(connect(databaseUrl(server, a))).rejects.toMatchObject({ code: "3D000" });
    await lingering.end().catch(() => {});
  });

  it("delivers NOTIFY to a LISTENing connection, and only once the sender commits", async () => {
    const name = uniqueDatabaseName("smoke_notify");
    made.push(name);
    const url = await createDatabase(server, name);
    const listener = await connect(url);
    const sender = await connect(url);
    try {
      const got: Array<{ channel: string; payload?: string }> = [];
      listener.on("notification", (n) => got.push({ channel: n.channel, payload: n.payload }));
      await listener.query("LISTEN berth_changes");

      await sender.query("BEGIN");
      await sender.query("SELECT pg_notify('berth_changes', 'server/42')");
      // A round trip on the listener: anything already queued for it arrives before the answer.
      await listener.query("SELECT 1");
      expect(got).toEqual([]);

      await sender.query("COMMIT");
      const deadline = Date.now() + 5_000;
      while (got.length === 0 && Date.now() < deadline) await listener.query("SELECT 1");
      expect(got).toEqual([{ channel: "berth_changes", payload: "server/42" }]);
    } finally {
      await listener.end();
      await sender.end();
    }
  });
});

// Real server processes (initdb, pg_ctl start/stop, a leaked server's cleanup): each step takes
// seconds on a busy machine, far beyond the unit suite's 5 s default.
describe.skipIf(!provided.binDir)("PostgreSQL harness: a private server's restart, stop and start", { timeout: 60_000 }, () => {
  let server: PostgresServer;
  let pool: pg.Pool;
  const poolErrors: string[] = [];

  beforeAll(async () => {
    server = await startPostgres({ binDir: provided.binDir });
    pool = new pg.Pool({ connectionString: server.url, max: 2, connectionTimeoutMillis: 2_000 });
    // An idle pooled connection the server drops reports here; without a listener it would crash the process.
    pool.on("error", (e) => poolErrors.push(e.message));
  }, 60_000);
  afterAll(async () => {
    await pool?.end().catch(() => {});
    await server?.stop();
  }, 60_000);

  it("restart: pooled connections are dropped, the next query gets a new one, the data stays", async () => {
    await pool.query("CREATE TABLE kept (v int)");
    await pool.query("INSERT INTO kept VALUES (7)");
    const before = (await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const postmaster = await server.pid();

    await server.restart();

    expect(await server.pid()).not.toBe(postmaster);
    const after = (await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    expect(after).not.toBe(before);
    expect((await pool.query("SELECT v FROM kept")).rows).toEqual([{ v: 7 }]);
    expect(poolErrors.join("\n")).toMatch(/terminat/i);
  });

  it("stopServer: queries fail with a connection error; startServer: the same URL works again with the data", async () => {
    await server.stopServer();
    expect(await server.pid()).toBeUndefined();
    await expect(pool.query("SELECT 1")).rejects.toMatchObject({ code: "ECONNREFUSED" });

    await server.startServer();
    expect((await pool.query("SELECT v FROM kept")).rows).toEqual([{ v: 7 }]);
  });

  it("stop: the server is gone and its directory removed", async () => {
    const other = await startPostgres({ binDir: provided.binDir });
    const pid = await other.pid();
    expect(pid).toBeGreaterThan(0);
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
    // pg_ctl stop -w returns once postmaster.pid is gone, a moment before the process has exited.
    const deadline = Date.now() + 5_000;
    while (isRunning(pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(isRunning(pid!)).toBe(false);
  });

  it("a server left by a process that died is stopped and removed by the next start; live ones are not", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-pg-leak-"));
    try {
      const script = join(dir, "leak.mts");
      const harness = fileURLToPath(new URL("../../../test/harness/postgres.ts", import.meta.url));
      await writeFile(script, `import { startPostgres } from ${JSON.stringify(harness)};
const s = await startPostgres({ binDir: ${JSON.stringify(provided.binDir)} });
console.log(JSON.stringify({ dir: s.dir, pid: await s.pid() }));
process.exit(0);\n`);
      const out = execFileSync(process.execPath, ["--import", "tsx", script], { encoding: "utf8", cwd: fileURLToPath(new URL("../../..", import.meta.url)) });
      const leaked = JSON.parse(out.trim().split("\n").pop()!) as { dir: string; pid: number };
      expect(isRunning(leaked.pid)).toBe(true);

      const next = await startPostgres({ binDir: provided.binDir });
      await next.stop();
      expect(existsSync(leaked.dir)).toBe(false);
      const deadline = Date.now() + 5_000;
      while (isRunning(leaked.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(isRunning(leaked.pid)).toBe(false);
      // This file's own server (a live owner) was left alone.
      expect((await pool.query("SELECT v FROM kept")).rows).toEqual([{ v: 7 }]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("PostgreSQL harness: global setup without binaries", () => {
  let empty: string;
  const saved = { CI: process.env.CI, BIN: process.env.BERTH_TEST_PG_BIN, URL: process.env.BERTH_TEST_PG_URL };

  beforeAll(async () => {
    empty = await mkdtemp(join(tmpdir(), "berth-no-pg-"));
    process.env.BERTH_TEST_PG_BIN = empty;
    delete process.env.BERTH_TEST_PG_URL;
  });
  afterAll(async () => {
    for (const [k, v] of [["CI", saved.CI], ["BERTH_TEST_PG_BIN", saved.BIN], ["BERTH_TEST_PG_URL", saved.URL]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await rm(empty, { recursive: true, force: true });
  });

  function fakeProject(): { provided: Record<string, unknown>; provide(k: string, v: unknown): void } {
    return {
      provided: {},
      provide(k, v) {
        this.provided[k] = v;
      },
    };
  }

  it("with CI=true fails the run and says how to install PostgreSQL", async () => {
    process.env.CI = "true";
    const project = fakeProject();
    await expect(setup(project as never)).rejects.toThrow(/CI=true.*apt-get install -y postgresql/s);
    expect(project.provided).toEqual({});
  });

  it("without CI provides the reason, so the tests that need it are skipped", async () => {
    delete process.env.CI;
    const project = fakeProject();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      await expect(setup(project as never)).resolves.toBeUndefined();
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/SKIPPED: BERTH_TEST_PG_BIN=.*apt-get install -y postgresql/));
    } finally {
      warn.mockRestore();
    }
    expect(project.provided).toEqual({ postgres: { unavailable: expect.stringMatching(/BERTH_TEST_PG_BIN=.*apt-get install -y postgresql/) } });
  });
});
