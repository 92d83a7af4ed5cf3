/**
 * Test harness: a private PostgreSQL server in a temp dir, started from
 * Debian's `postgresql` binaries (initdb + pg_ctl), and one fresh database per
 * test file.
 *
 * A server listens on 127.0.0.1 only (a free port) and on a unix socket in its
 * own directory, trusts loopback connections (user `postgres`, no password) and
 * runs with fsync off: it is for tests, never for data. As root the binaries run
 * as the `postgres` user (initdb refuses root). A cluster made by initdb is kept
 * as a template (see postgresRoot) and copied for each server, so a start costs
 * a copy and `pg_ctl start`, not an initdb.
 *
 * Nothing here imports vitest: the global setup (postgres-setup.ts) uses it too.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, statfsSync } from "node:fs";
import { chown, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import pg from "pg";

/** A PostgreSQL server this harness started, with the controls failure tests need. */
export interface PostgresServer {
  /** Superuser URL of the maintenance database: postgres://postgres@127.0.0.1:<port>/postgres. */
  url: string;
  port: number;
  /** The cluster's data directory (kept by stopServer, removed by stop). */
  dataDir: string;
  /** Directory holding the unix socket, the log and the data directory. */
  dir: string;
  /** The postmaster's PID while it runs, from postmaster.pid. */
  pid(): Promise<number | undefined>;
  /** `pg_ctl restart -m fast`: every connection is dropped, the data stays. */
  restart(): Promise<void>;
  /** `pg_ctl stop -m fast`, keeping the data directory for startServer(). */
  stopServer(): Promise<void>;
  /** `pg_ctl start -w` on the same port and data directory. */
  startServer(): Promise<void>;
  /** Stops the server (if running) and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Directory holding initdb and pg_ctl; default: findPostgresBin(). */
  binDir?: string;
  /** Extra server settings (`-c name=value`), e.g. { max_connections: "50" }. */
  settings?: Record<string, string>;
}

/**
 * Where clusters and templates live (one directory per server, named after the
 * owning process): in memory (/dev/shm) when it has room, since copying the
 * template there takes a tenth of the time it takes on a busy disk; else /tmp.
 * Containers often get a 64 MB /dev/shm: too small, so /tmp then.
 */
export function postgresRoot(): string {
  try {
    const fs = statfsSync("/dev/shm");
    if (fs.bavail * fs.bsize >= SHM_MIN_FREE) return "/dev/shm/berth-postgres";
  } catch {
    // No /dev/shm: use /tmp.
  }
  return "/tmp/berth-postgres";
}
const SHM_MIN_FREE = 2 * 1024 ** 3;
/** Bump when the initdb arguments change, so older templates are not used. */
const TEMPLATE_VERSION = 2;
/** Debian installs each major version under /usr/lib/postgresql/<major>/bin, not on PATH. */
const DEBIAN_ROOT = "/usr/lib/postgresql";
const SYSTEM_BIN_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
const START_TIMEOUT_S = 30;
/** Fast, not durable: a test server never needs to survive a power cut. */
const TEST_SETTINGS: Record<string, string> = {
  listen_addresses: "127.0.0.1",
  fsync: "off",
  synchronous_commit: "off",
  full_page_writes: "off",
  max_connections: "200",
};

/** How to get the binaries, for error messages and skip reasons. */
export const POSTGRES_INSTALL_HINT = "install PostgreSQL (apt-get install -y postgresql) or set BERTH_TEST_PG_URL to a server's URL";

/**
 * The directory holding initdb and pg_ctl: $BERTH_TEST_PG_BIN when set (and
 * nothing else, so a test can hide the binaries), else the newest
 * /usr/lib/postgresql/<major>/bin, else PATH. Undefined when none has both.
 */
export function findPostgresBin(): string | undefined {
  const override = process.env.BERTH_TEST_PG_BIN;
  if (override !== undefined) return hasBinaries(override) ? override : undefined;
  const majors = existsSync(DEBIAN_ROOT)
    ? readdirSync(DEBIAN_ROOT)
        .filter((d) => /^\d+(\.\d+)?$/.test(d))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const major of majors) {
    const dir = join(DEBIAN_ROOT, major, "bin");
    if (hasBinaries(dir)) return dir;
  }
  for (const dir of [...(process.env.PATH ?? "").split(":").filter(Boolean), ...SYSTEM_BIN_DIRS]) {
    if (hasBinaries(dir)) return dir;
  }
  return undefined;
}

/**
 * findPostgresBin(), apt-installing Debian's `postgresql` first when the
 * binaries are missing and this is root (as the Docker harness does for
 * docker.io). Never installs when BERTH_TEST_PG_BIN names the directory.
 * Resolves to the bin dir, or to a sentence saying why there is none.
 */
export async function ensurePostgresBin(): Promise<{ binDir: string } | { missing: string }> {
  const found = findPostgresBin();
  if (found) return { binDir: found };
  if (process.env.BERTH_TEST_PG_BIN !== undefined) {
    return { missing: `BERTH_TEST_PG_BIN=${process.env.BERTH_TEST_PG_BIN} holds no initdb and pg_ctl` };
  }
  if (process.getuid?.() !== 0) return { missing: `no PostgreSQL binaries (initdb, pg_ctl) found and not root to apt-get install postgresql` };
  if (!SYSTEM_BIN_DIRS.some((d) => existsSync(join(d, "apt-get")))) return { missing: "no PostgreSQL binaries found and apt-get is not available" };
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive", PATH: [process.env.PATH ?? "", ...SYSTEM_BIN_DIRS].join(":") };
  // Waits for another run's apt-get instead of failing on the dpkg lock.
  const install = () => run("apt-get", ["-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "postgresql"], env);
  let res = await install();
  // Fresh images have no package lists yet.
  if (res.code !== 0 && (await run("apt-get", ["update"], env)).code === 0) res = await install();
  const installed = findPostgresBin();
  if (installed) return { binDir: installed };
  return { missing: `apt-get install -y postgresql failed (code ${res.code}): ${lastLines(`${res.stdout}\n${res.stderr}`, 8)}` };
}

/**
 * Starts a private server: a copy of the initdb template for this binary
 * directory in <postgresRoot()>/<pid>-<random>/, on a free 127.0.0.1 port,
 * and waits until it accepts a connection. Stale servers of dead processes are
 * swept first (only those in postgresRoot() whose owner process is gone).
 */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PostgresServer> {
  const binDir = opts.binDir ?? findPostgresBin();
  if (!binDir) throw new Error(`PostgreSQL binaries not found: ${POSTGRES_INSTALL_HINT}`);
  const user = await runAsUser();
  const root = postgresRoot();
  await mkdir(root, { recursive: true, mode: 0o755 });
  await sweepStale(root, binDir, user);
  const template = await ensureTemplate(root, binDir, user);

  const dir = await mkdtemp(join(root, `${process.pid}-`));
  const dataDir = join(dir, "data");
  const logFile = join(dir, "postgres.log");
  await writeFile(join(dir, "owner"), String(process.pid));
  await chownTo(dir, user);
  const cp = await run("cp", ["-a", template, dataDir]);
  if (cp.code !== 0) throw new Error(`copying the PostgreSQL template ${template} failed: ${cp.stderr.trim()}`);

  const settings = { ...TEST_SETTINGS, ...opts.settings };
  const pgCtl = join(binDir, "pg_ctl");
  let port = 0;
  const start = async (): Promise<void> => {
    const options = [`-p ${port}`, `-k ${dir}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(" ");
    const logStart = await stat(logFile).then((s) => s.size, () => 0);
    const res = await runAs(user, pgCtl, ["start", "-w", "-t", String(START_TIMEOUT_S), "-D", dataDir, "-l", logFile, "-o", options]);
    if (res.code !== 0) {
      throw new Error(`pg_ctl start (${dataDir}, port ${port}) failed: ${res.stderr.trim() || res.stdout.trim()}\n${await tail(logFile, logStart)}`);
    }
  };

  // A free port can be taken between the probe and the bind: try another.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await start();
      break;
    } catch (e) {
      if (attempt >= 3 || !/could not bind|Address already in use/i.test(errorMessage(e))) {
        await rm(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }

  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const ctl = async (args: string[]): Promise<void> => {
    const res = await runAs(user, pgCtl, [...args, "-D", dataDir]);
    if (res.code !== 0) throw new Error(`pg_ctl ${args.join(" ")} (${dataDir}) failed: ${res.stderr.trim() || res.stdout.trim()}`);
  };
  const running = () => existsSync(join(dataDir, "postmaster.pid"));
  const server: PostgresServer = {
    url,
    port,
    dataDir,
    dir,
    pid: async () => postmasterPid(dataDir),
    // pg_ctl restart reuses the options of the last start (postmaster.opts): same port and socket.
    restart: () => ctl(["restart", "-w", "-m", "fast", "-t", String(START_TIMEOUT_S), "-l", logFile]),
    stopServer: async () => {
      if (running()) await ctl(["stop", "-w", "-m", "fast"]);
    },
    startServer: start,
    stop: async () => {
      if (!existsSync(dir)) return;
      if (running()) await ctl(["stop", "-w", "-m", "fast"]).catch(() => ctl(["stop", "-w", "-m", "immediate"]));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitUntilAccepting(url, 10_000);
  } catch (e) {
    await server.stop().catch(() => {});
    throw e;
  }
  return server;
}

/** Error text if `url` does not answer `SELECT 1` within `timeoutMs`, undefined if it does. */
export async function connectError(url: string, timeoutMs = 3_000): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return undefined;
  } catch (e) {
    return errorMessage(e);
  } finally {
    await client.end().catch(() => {});
  }
}

const NAME = /^[a-z_][a-z0-9_]{0,62}$/;
let dbCounter = 0;

/** A database name no other test (process, file, or run) uses: `<prefix>_<pid>_<n>_<random>`. */
export function uniqueDatabaseName(prefix = "berth_test"): string {
  const name = `${prefix}_${process.pid}_${++dbCounter}_${Math.random().toString(36).slice(2, 8)}`.toLowerCase();
  if (!NAME.test(name)) throw new Error(`database name ${JSON.stringify(name)} is not a plain lower-case identifier of at most 63 characters`);
  return name;
}

/**
 * Creates database `name` (empty: TEMPLATE template0) on the server of
 * `url`, connecting as the user of `url`; resolves to the new database's URL.
 */
export async function createDatabase(url: string, name: string): Promise<string> {
  if (!NAME.test(name)) throw new Error(`database name ${JSON.stringify(name)}: use [a-z0-9_], at most 63 characters`);
  await withClient(url, (c) => c.query(`CREATE DATABASE "${name}" TEMPLATE template0 ENCODING 'UTF8'`));
  return databaseUrl(url, name);
}

/** Drops database `name` on the server of `url`, closing its connections first. No error when it is gone. */
export async function dropDatabase(url: string, name: string): Promise<void> {
  if (!NAME.test(name)) throw new Error(`database name ${JSON.stringify(name)}: use [a-z0-9_], at most 63 characters`);
  await withClient(url, (c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** `url` with its database (path) replaced by `name`. */
export function databaseUrl(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

// ---------------------------------------------------------------------------

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  // The maintenance database: CREATE/DROP DATABASE cannot run inside the target.
  const client = new pg.Client({ connectionString: databaseUrl(url, "postgres"), connectionTimeoutMillis: 10_000 });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

async function waitUntilAccepting(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const err = await connectError(url, 2_000);
    if (!err) return;
    if (Date.now() > deadline) throw new Error(`PostgreSQL at ${url} did not accept a connection within ${timeoutMs} ms: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The initdb result for `binDir`, made once and shared by every server (and
 * every run): <root>/template-<binDir and initdb's mtime>.
 * Built in a temp dir and renamed into place, so a half-made template is never used.
 */
async function ensureTemplate(root: string, binDir: string, user: RunAs): Promise<string> {
  const initdb = join(binDir, "initdb");
  const key = `v${TEMPLATE_VERSION}-${binDir}@${(await stat(initdb)).mtimeMs}`.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
  const template = join(root, `template-${key}`);
  if (existsSync(join(template, "PG_VERSION"))) return template;

  const work = await mkdtemp(join(root, "initdb-"));
  try {
    await chownTo(work, user);
    const data = join(work, "data");
    const res = await runAs(user, initdb, [
      "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=trust", "--no-sync", "-E", "UTF8", "--locale=C",
      // 1 MB WAL segments instead of 16: a smaller template to copy.
      "--wal-segsize=1",
    ]);
    if (res.code !== 0) throw new Error(`initdb (${initdb}) failed: ${lastLines(`${res.stdout}\n${res.stderr}`, 15)}`);
    await rename(data, template).catch((e: NodeJS.ErrnoException) => {
      // Another run made it first: use theirs.
      if (!existsSync(join(template, "PG_VERSION"))) throw e;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return template;
}

/** Stops and removes servers in `root` left by processes that died without tearing them down. */
async function sweepStale(root: string, binDir: string, user: RunAs): Promise<void> {
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const m = /^(\d+)-/.exec(name);
    if (!m) continue;
    const dir = join(root, name);
    const owner = Number((await readFile(join(dir, "owner"), "utf8").catch(() => m[1]!)).trim());
    if (isAlive(owner)) continue;
    const dataDir = join(dir, "data");
    if (existsSync(join(dataDir, "postmaster.pid"))) await runAs(user, join(binDir, "pg_ctl"), ["stop", "-w", "-m", "immediate", "-D", dataDir]);
    await rm(dir, { recursive: true, force: true });
  }
}

async function postmasterPid(dataDir: string): Promise<number | undefined> {
  const first = (await readFile(join(dataDir, "postmaster.pid"), "utf8").catch(() => "")).split("\n")[0];
  const pid = Number(first);
  return pid > 0 && isAlive(pid) ? pid : undefined;
}

/** Who runs initdb/pg_ctl: the current user, or (as root) the `postgres` user. */
type RunAs = { uid: number; gid: number; name: string } | undefined;

async function runAsUser(): Promise<RunAs> {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = await readFile("/etc/passwd", "utf8");
  const line = passwd.split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("running as root but there is no `postgres` user to run PostgreSQL as (initdb refuses root): apt-get install -y postgresql creates it");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid), name: "postgres" };
}

async function chownTo(path: string, user: RunAs): Promise<void> {
  if (user) await chown(path, user.uid, user.gid);
}

function runAs(user: RunAs, cmd: string, args: string[]): Promise<RunResult> {
  return user ? run("runuser", ["-u", user.name, "--", cmd, ...args]) : run(cmd, args);
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    // cwd "/": the postgres user may not be able to enter the caller's directory.
    execFile(cmd, args, { cwd: "/", env: env ?? process.env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === 127 ? err.message : "") });
    });
  });
}

function hasBinaries(dir: string): boolean {
  return existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function isAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function tail(path: string, fromOffset: number): Promise<string> {
  const text = (await readFile(path).catch(() => Buffer.alloc(0))).subarray(fromOffset).toString("utf8");
  return text.trim() ? `tail of ${path}:\n${lastLines(text, 20)}` : `(${path} is empty)`;
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
