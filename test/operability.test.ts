/**
 * What operators run berth with: configuration (flags, BERTH_* variables, a
 * config file; --help; errors naming the setting), /metrics after real
 * activity, /healthz and /readyz, grpc.health.v1 turning NOT_SERVING when
 * the database cannot be written (locked by another process; disk full), log
 * lines for state changes, and the npm packages installed the way
 * docs/install.md says, running with plain node against Docker.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { Phase, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "@berth/proto/grpc/health/v1/health_pb.js";
import { MANAGER_SETTINGS } from "../manager/src/config/manager-settings.js";
import { envName, type AnySetting } from "../manager/src/config/settings.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { bearer, freePorts, managerIdIn, REPO_ROOT, removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { MANAGER_BUNDLE } from "./harness/bundles.js";
import { testDockerHost } from "./harness/engine.js";

const run = promisify(execFile);

/** The environment without npm's own variables (tests may run under `npm test`). */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("npm_")) env[k] = v;
  return { ...env, ...extra };
}

interface Started {
  child: ChildProcess;
  url: string;
  output: () => string;
  stop: () => Promise<void>;
}

/** Starts `command args` and waits for "berth-manager ready url=…"; rejects with the output if it exits first. */
async function startUntilReady(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Started> {
  const child = spawn(command, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /berth-manager ready url=(\S+)/.exec(out);
      if (m) {
        clearInterval(timer);
        resolve(m[1]!);
      }
    }, 50);
    child.once("exit", (code) => {
      clearInterval(timer);
      reject(new Error(`exited with ${code} before it was ready:\n${out}`));
    });
    setTimeout(() => {
      clearInterval(timer);
      reject(new Error(`not ready after 30 s:\n${out}`));
    }, 30_000).unref();
  });
  return {
    child,
    url,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Runs the manager from source to completion (for --help and invalid settings). */
async function managerExits(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MANAGER_BUNDLE, ...args], { cwd: REPO_ROOT, env: cleanEnv(env), timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** One sample (`name{labels} value`) of a Prometheus text page. */
function sample(text: string, series: string): number | undefined {
  const row = text.split("\n").find((l) => l.startsWith(`${series} `));
  return row === undefined ? undefined : Number(row.slice(series.length + 1));
}

async function http(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { headers });
  return { status: res.status, body: await res.text() };
}

describe("configuration", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir("config");
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("--help lists every setting with its flag, environment variable and default", async () => {
    const { code, stdout } = await managerExits(["--help"]);
    expect(code).toBe(0);
    for (const [name, s] of Object.entries(MANAGER_SETTINGS) as [string, AnySetting][]) {
      expect(stdout, `--${name}`).toContain(`--${name}`);
      const env = envName(name, s);
      if (env) expect(stdout, env).toContain(env);
    }
    expect(stdout).toContain("default 127.0.0.1:7000");
    expect(stdout).toContain("token create|list|revoke");
  });

  it("an invalid setting stops the manager at start with exit code 2 and a message naming it", async () => {
    const flag = await managerExits(["--crash-backoff", "0", "--db", ":memory:"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe('berth-manager: invalid --crash-backoff (BERTH_CRASH_BACKOFF) "0" on the command line: must be a whole number of seconds >= 1\n');

    const env = await managerExits(["--db", ":memory:"], { BERTH_MAX_STREAMS: "many" });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/invalid --max-streams \(BERTH_MAX_STREAMS\) "many" in the environment: must be a whole number/);

    const file = join(dir, "bad.json");
    writeFileSync(file, JSON.stringify({ "log-level": "chatty" }));
    const fromFile = await managerExits(["--config", file, "--db", ":memory:"]);
    expect(fromFile.code).toBe(2);
    expect(fromFile.stderr).toContain(`invalid --log-level (BERTH_LOG_LEVEL) "chatty" in ${file}: use trace, debug, info, warn or error`);

    const unknown = await managerExits(["--listn", "127.0.0.1:0"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown flag --listn; --help lists every setting/);
  });

  it("one precedence order: flag > BERTH_* environment > config file > default", async () => {
    const [p1, p2, p3] = await freePorts(3);
    const conf = join(dir, "manager.conf");
    writeFileSync(conf, `# key = value form\nlisten = 127.0.0.1:${p1}\ndb = ${join(dir, "berth.db")}\nlog-format = json\n`);
    const node = process.execPath;
    const base = [MANAGER_BUNDLE];

    const fileOnly = await startUntilReady(node, [...base, "--config", conf], cleanEnv());
    await fileOnly.stop();
    expect(fileOnly.url).toBe(`http://127.0.0.1:${p1}`);

    const envWins = await startUntilReady(node, base, cleanEnv({ BERTH_CONFIG: conf, BERTH_LISTEN: `127.0.0.1:${p2}` }));
    await envWins.stop();
    expect(envWins.url).toBe(`http://127.0.0.1:${p2}`);

    const flagWins = await startUntilReady(node, [...base, "--config", conf, "--listen", `127.0.0.1:${p3}`], cleanEnv({ BERTH_LISTEN: `127.0.0.1:${p2}` }));
    await flagWins.stop();
    expect(flagWins.url).toBe(`http://127.0.0.1:${p3}`);
    // The database named only in the file was used every time.
    expect(existsSync(join(dir, "berth.db"))).toBe(true);
    // JSON logs (not a terminal), and the manager says where its settings came from.
    const firstLog = flagWins.output().split("\n").find((l) => l.startsWith("{"))!;
    expect(JSON.parse(firstLog)).toMatchObject({ name: "berth-manager" });
    expect(flagWins.output()).toContain("settings read from the config file");
  });

  it("--store sqlite://PATH selects the database (secret key beside it); --store with --db, an unknown store or PostgreSQL stop it with exit 2", async () => {
    const path = join(dir, "via-store", "berth.db");
    const started = await startUntilReady(process.execPath, [MANAGER_BUNDLE, "--listen", "127.0.0.1:0", "--store", `sqlite://${path}`, "--log-format", "json"], cleanEnv());
    try {
      expect(await http(`${started.url}/readyz`)).toEqual({ status: 200, body: "ready\n" });
      // The "manager listening" log line (pino, asynchronous) may reach stdout just after the ready line.
      await waitFor("the store in the manager's log", async () => started.output().includes(`"store":"sqlite://${path}"`), 10_000, 50);
      expect(started.output()).toContain(`"store":"sqlite://${path}"`);
      expect(started.output()).toContain(`token create --role admin --name recovery --db ${path}`);
    } finally {
      await started.stop();
    }
    expect(existsSync(path)).toBe(true);
    expect(existsSync(join(dir, "via-store", "secret.key"))).toBe(true);

    const both = await managerExits(["--store", `sqlite://${path}`, "--db", path]);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe("berth-manager: use either --store (BERTH_STORE) or --db (BERTH_DB), not both; --db PATH is short for --store sqlite://PATH\n");
    const unknown = await managerExits([], { BERTH_STORE: "mysql://root@h/berth" });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(
      'berth-manager: invalid --store (BERTH_STORE) "mysql://root@h/berth" in the environment: unknown store "mysql:"; use sqlite:///abs/path/berth.db, sqlite://./relative/berth.db or postgres://user@host:5432/database\n',
    );
    const pg = await managerExits(["--store", "postgres://berth:hunter2@127.0.0.1:1/berth"]);
    expect(pg.code).toBe(2);
    // Nothing listens on port 1: the manager says which store it could not reach, never the password.
    expect(pg.stderr).toBe(
      "berth-manager: cannot open the PostgreSQL store postgres://berth:…@127.0.0.1:1/berth: connect ECONNREFUSED 127.0.0.1:1; check that PostgreSQL is running and reachable at that host and port, then retry\n",
    );
  });
});

describe("metrics, health probes and state-change logs with a live agent", () => {
  const docker = dockerClient(testDockerHost());
  const METRICS_TOKEN = "operability-metrics-token";
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let serverId = "";

  beforeAll(async () => {
    dir = await tempDir("operability");
    manager = await startManager({ dir, args: ["--metrics-token", METRICS_TOKEN] });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    if (serverId) await removeBerthContainers(docker, { serverIds: [serverId] });
    await removeTestDir(dir);
  });

  it("/healthz, /readyz and grpc.health.v1 say SERVING; the dashboard is still served elsewhere", async () => {
    expect(await http(`${manager.url}/healthz`)).toEqual({ status: 200, body: "ok\n" });
    expect(await http(`${manager.url}/readyz`)).toEqual({ status: 200, body: "ready\n" });
    const health = createClient(Health, manager.transport(undefined));
    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    const page = await http(`${manager.url}/servers`);
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/<html/i);
  });

  it("/metrics shows hosts, servers by phase and project, reconciles, commands, events, streams, alerts and SQLite writes", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: `ops-${Date.now().toString(36)}`, image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"] } });
    serverId = server!.id;
    await waitForPhase(manager, serverId, Phase.RUNNING);
    // A watcher, counted while it is open.
    const abort = new AbortController();
    const watch = manager.servers.watchServers({}, { signal: abort.signal })[Symbol.asyncIterator]();
    await watch.next();

    expect((await http(`${manager.url}/metrics`)).status).toBe(401);
    const scrape = async () => {
      const r = await http(`${manager.url}/metrics`, { authorization: `Bearer ${METRICS_TOKEN}` });
      expect(r.status).toBe(200);
      return r.body;
    };
    const body = await waitFor("metrics after the start", async () => {
      const b = await scrape();
      return (sample(b, 'berth_commands_finished_total{kind="ensure-running",outcome="succeeded"}') ?? 0) >= 1 ? b : undefined;
    });
    expect(sample(body, 'berth_hosts{state="online"}')).toBe(1);
    expect(sample(body, 'berth_servers{project="default",phase="RUNNING"}')).toBe(1);
    expect(sample(body, 'berth_reconcile_duration_seconds_count{outcome="ok"}')).toBeGreaterThan(0);
    expect(sample(body, 'berth_commands_issued_total{kind="ensure-running"}')).toBeGreaterThanOrEqual(1);
    expect(sample(body, 'berth_command_duration_seconds_count{kind="ensure-running",outcome="succeeded"}')).toBeGreaterThanOrEqual(1);
    expect(sample(body, 'berth_events_written_total{type="server.created"}')).toBe(1);
    expect(sample(body, 'berth_events_written_total{type="phase.changed"}')).toBeGreaterThanOrEqual(1);
    expect(sample(body, 'berth_streams_open{method="berth.v1.ServerService/WatchServers"}')).toBe(1);
    expect(sample(body, 'berth_streams_open{method="berth.v1.AgentService/Connect"}')).toBe(1);
    expect(sample(body, 'berth_rpc_requests_total{method="berth.v1.ServerService/CreateServer",code="ok"}')).toBe(1);
    expect(body).toContain("# TYPE berth_alerts_firing gauge");
    expect(sample(body, "berth_sqlite_write_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(body, "berth_database_writable")).toBe(1);
    expect(body).toContain("process_resident_memory_bytes");

    abort.abort();
    await watch.return?.();
    const after = await waitFor("the watcher to be gone", async () => {
      const b = await scrape();
      return sample(b, 'berth_streams_open{method="berth.v1.ServerService/WatchServers"}') === 0 ? b : undefined;
    });
    expect(sample(after, 'berth_rpc_requests_total{method="berth.v1.ServerService/WatchServers",code="canceled"}')).toBe(1);
  });

  it("logs every phase change once, with server, host and cause", async () => {
    const events = createClient(EventService, manager.transport(manager.adminToken));
    const { events: changes } = await events.listEvents({ serverId, typePrefix: "phase." });
    expect(changes.length).toBeGreaterThan(0);
    const lines = manager
      .log()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r.msg === "phase changed" && r.server === serverId);
    expect(lines).toHaveLength(changes.length);
    for (const l of lines) {
      expect(l.host).toBe(changes[0]!.hostId);
      expect(typeof l.cause).toBe("string");
      expect(l.cause).not.toBe("");
      expect(typeof l.to).toBe("string");
    }
  });
});

describe("health when the database cannot be written", () => {
  let dir: string;
  let manager: ManagerProc | undefined;
  beforeAll(async () => {
    dir = await tempDir("unwritable");
  });
  afterAll(async () => {
    await manager?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function status(m: ManagerProc): Promise<ServingStatus> {
    return (await createClient(Health, m.transport(undefined)).check({})).status;
  }

  it("NOT_SERVING and /readyz 503 while another process holds the write lock; SERVING again after", async () => {
    // Alert rules only on changes: their writes would stall behind the lock (5 s each) and slow the test.
    manager = await startManager({ dir, args: ["--db-probe-interval", "1", "--alert-interval", "3600"] });
    const other = new Database(manager.dbPath);
    try {
      other.exec("BEGIN IMMEDIATE");
      await waitFor("NOT_SERVING", async () => (await status(manager!)) === ServingStatus.NOT_SERVING, 15_000);
      // In parallel: while the lock is held the manager's own writes wait up to 5 s each (busy timeout).
      const [ready, metrics, live] = await Promise.all(["/readyz", "/metrics", "/healthz"].map((p) => http(`${manager!.url}${p}`)));
      expect(ready!.status).toBe(503);
      expect(ready!.body).toMatch(/^not ready: database not writable: SQLITE_BUSY/);
      expect(sample(metrics!.body, "berth_database_writable")).toBe(0);
      // Liveness is unaffected: restarting would not help.
      expect(live!.status).toBe(200);
    } finally {
      if (other.inTransaction) other.exec("COMMIT");
      other.close();
    }
    await waitFor("SERVING again", async () => (await status(manager!)) === ServingStatus.SERVING, 15_000);
    expect((await http(`${manager.url}/readyz`)).status).toBe(200);
    expect(manager.log()).toContain("database not writable; health is NOT_SERVING until a write succeeds");
    expect(manager.log()).toContain("database writable again");
    await manager.stop();
    manager = undefined;
  });

  // A full disk needs a small file system of its own: a tmpfs, which only root can mount.
  it.skipIf(process.getuid?.() !== 0)("NOT_SERVING while the disk is full; SERVING once there is room", async () => {
    const mnt = join(dir, "tmpfs");
    mkdirSync(mnt, { recursive: true });
    await run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt]);
    try {
      manager = await startManager({ dir, dbPath: join(mnt, "berth.db"), args: ["--db-probe-interval", "1"] });
      await waitFor("SERVING", async () => (await status(manager!)) === ServingStatus.SERVING, 15_000);
      // Empty the WAL so the next write needs new space, then take all the space there is.
      const other = new Database(manager.dbPath);
      other.pragma("wal_checkpoint(TRUNCATE)");
      other.close();
      const filler = join(mnt, "filler");
      await run("dd", ["if=/dev/zero", `of=${filler}`, "bs=64k"]).catch(() => undefined); // ends with "No space left on device"
      await waitFor("NOT_SERVING", async () => (await status(manager!)) === ServingStatus.NOT_SERVING, 15_000);
      expect((await http(`${manager.url}/readyz`)).body).toMatch(/SQLITE_FULL/);
      unlinkSync(filler);
      await waitFor("SERVING again", async () => (await status(manager!)) === ServingStatus.SERVING, 15_000);
    } finally {
      await manager?.stop();
      manager = undefined;
      await run("umount", [mnt]);
    }
  });
});

/**
 * A prebuild-install "local prebuilds" directory (npm_config_better_sqlite3_local_prebuilds) holding
 * the checkout's own better-sqlite3 binary, named as prebuild-install looks it up:
 * better-sqlite3-v<version>-node-v<abi>-<platform>-<arch>.tar.gz with build/Release/better_sqlite3.node.
 */
async function localSqlitePrebuild(under: string): Promise<string> {
  const pkgDir = join(REPO_ROOT, "node_modules/better-sqlite3");
  const { version } = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { version: string };
  const out = join(under, "prebuilds");
  mkdirSync(out, { recursive: true });
  // No binary of its own (not built yet): an empty directory, and the packaged install compiles.
  if (!existsSync(join(pkgDir, "build/Release/better_sqlite3.node"))) return out;
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  await run("tar", ["-czf", join(out, name), "-C", pkgDir, "build/Release/better_sqlite3.node"]);
  return out;
}

describe("npm packages, installed like docs/install.md says", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  /** Stands for / on a real host: the packages go to <root>/opt/berth/{manager,agent}. */
  let root: string;
  const procs: ChildProcess[] = [];
  let managerId = "";
  const bin = (pkg: "manager" | "agent") => join(root, `opt/berth/${pkg}/bin/berth-${pkg}.mjs`);

  beforeAll(async () => {
    dir = await tempDir("packages");
    root = join(dir, "root");
    // `npm pack` runs each package's prepack: the bundle is built fresh.
    await run("npm", ["pack", "-w", "manager", "-w", "agent", "--pack-destination", dir], { cwd: REPO_ROOT, env: cleanEnv(), timeout: 120_000 });
    // As on a real host: unpack, then install the dependencies. better-sqlite3's install script
    // (`prebuild-install || node-gyp rebuild`) runs only because of the allowScripts set below; its
    // prebuild-install step gets the driver this checkout already built from source (the root
    // postinstall, scripts/build-sqlite-driver.mjs, same version, same Node) through its documented
    // local-prebuilds directory, as a host that can download a prebuilt binary gets one from GitHub.
    // The minute-long compile is the root install's subject, already done in every fresh clone; here
    // what counts is that the package's install runs the driver's install script and the result loads.
    // Another version of the driver than the checkout's finds no file there and is compiled as before.
    const prebuilds = await localSqlitePrebuild(dir);
    await Promise.all(
      ["manager", "agent"].map(async (pkg) => {
        const to = join(root, "opt/berth", pkg);
        mkdirSync(to, { recursive: true });
        await run("tar", ["-xzf", join(dir, `berth-${pkg}-0.1.0.tgz`), "-C", to, "--strip-components=1"]);
        // As docs/install.md says: the manager's unpacked package.json is given allowScripts for the SQLite
        // driver's native build (npm reads the field only from a project's root, so the workspace cannot carry it).
        if (pkg === "manager") await run("npm", ["pkg", "set", "allowScripts.better-sqlite3=true", "--json"], { cwd: to, env: cleanEnv() });
        await run("npm", ["install", "--omit=dev", "--prefer-offline", "--no-audit", "--no-fund"], { cwd: to, env: cleanEnv({ npm_config_better_sqlite3_local_prebuilds: prebuilds }), timeout: 540_000, maxBuffer: 16 * 1024 * 1024 });
      }),
    );
  }, 600_000);

  afterAll(async () => {
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null) {
        const exited = new Promise((r) => p.once("exit", r));
        p.kill("SIGTERM");
        await exited;
      }
    }
    if (managerId) await removeBerthContainers(docker, { managerId });
    await removeTestDir(dir);
  });

  it("the tarballs hold the bundles and the dashboard, no TypeScript, and need nothing but the npm registry", async () => {
    const { stdout: m } = await run("tar", ["tzf", join(dir, "berth-manager-0.1.0.tgz")]);
    expect(m).toContain("package/bin/berth-manager.mjs");
    expect(m).toContain("package/dist/berth-manager.mjs");
    expect(m).toContain("package/dist/web/index.html");
    expect(m).not.toMatch(/\.ts$/m);
    const { stdout: a } = await run("tar", ["tzf", join(dir, "berth-agent-0.1.0.tgz")]);
    expect(a).toContain("package/dist/berth-agent.mjs");
    for (const pkg of ["manager", "agent"]) {
      const installed = join(root, "opt/berth", pkg);
      const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as { dependencies: Record<string, string>; devDependencies?: unknown };
      expect(Object.keys(manifest.dependencies).filter((d) => d.startsWith("@berth/"))).toEqual([]);
      expect(manifest.devDependencies).toBeUndefined();
      expect(existsSync(join(installed, "src"))).toBe(false);
      expect(existsSync(join(installed, "node_modules/tsx"))).toBe(false);
    }
  });

  it("the packages carry systemd units that start the installed programs", () => {
    for (const pkg of ["manager", "agent"] as const) {
      const unit = readFileSync(join(root, `opt/berth/${pkg}/dist/berth-${pkg}.service`), "utf8");
      expect(unit).toBe(readFileSync(join(REPO_ROOT, `deploy/systemd/berth-${pkg}.service`), "utf8"));
      expect(unit).toMatch(new RegExp(`^ExecStart=/usr/bin/node /opt/berth/${pkg}/bin/berth-${pkg}\\.mjs`, "m"));
      expect(unit).toMatch(/^NoNewPrivileges=yes$/m);
      expect(unit).toMatch(/^ProtectSystem=strict$/m);
      expect(unit).toMatch(/^PrivateTmp=yes$/m);
    }
    expect(readFileSync(join(REPO_ROOT, "deploy/systemd/berth-agent.service"), "utf8")).toMatch(/^RestartPreventExitStatus=78$/m);
  });

  it("berth-manager --help and berth-agent --help run with plain node", async () => {
    const { stdout: mh } = await run(process.execPath, [bin("manager"), "--help"], { env: cleanEnv() });
    for (const name of Object.keys(MANAGER_SETTINGS)) expect(mh).toContain(`--${name}`);
    const { stdout: ah } = await run(process.execPath, [bin("agent"), "--help"], { env: cleanEnv() });
    expect(ah).toContain("berth-agent enroll --manager URL[,URL...] --token TOKEN");
  });

  it("the installed manager and agent run a server on Docker", async () => {
    const mgr = await startUntilReady(process.execPath, [bin("manager"), "--listen", "127.0.0.1:0", "--db", join(root, "var/lib/berth-manager/berth.db")], cleanEnv());
    procs.push(mgr.child);
    managerId = managerIdIn(mgr.output()) ?? "";
    const token = /berth-manager admin-token=(\S+)/.exec(mgr.output())![1]!;
    expect((await http(`${mgr.url}/readyz`)).status).toBe(200);
    expect((await http(`${mgr.url}/`)).body).toMatch(/<html/i);
    const transport = createGrpcTransport({ baseUrl: mgr.url, interceptors: [bearer(token)] });
    const hosts = createClient(HostService, transport);
    const servers = createClient(ServerService, transport);

    // The Add-host command, run as printed: berth-agent is the installed bin (linked onto the PATH on a
    // real host) and /var/lib/berth-agent lies under this test's root.
    const { token: enrollment, command, notes } = await hosts.createEnrollmentToken({});
    expect(command).toBe(`berth-agent enroll --manager ${mgr.url} --token ${enrollment} --state-dir /var/lib/berth-agent && berth-agent run --state-dir /var/lib/berth-agent`);
    expect(notes).toEqual([expect.stringMatching(/^The manager listens on loopback/)]);
    const stateDir = join(root, "var/lib/berth-agent");
    const [enroll, runAgent] = command.split(" && ").map((c) => c.replace(/^berth-agent /, `${process.execPath} ${bin("agent")} `).replaceAll("/var/lib/berth-agent", stateDir));
    await run("sh", ["-c", enroll!], { env: cleanEnv() });
    const agent = spawn("sh", ["-c", `exec ${runAgent} --data-root ${join(root, "var/lib/berth")}`], { env: cleanEnv(), stdio: "ignore" });
    procs.push(agent);
    await waitFor("the packaged agent online", async () => (await hosts.listHosts({})).hosts.some((h) => h.state === HostState.ONLINE), 30_000);

    const { server } = await servers.createServer({ spec: { name: "packaged", image: TEST_IMAGE, command: ["sh", "-c", "exec sleep 100000"], dataMountPath: "/data" } });
    await waitFor("the server Running", async () => (await servers.getServer({ id: server!.id })).server?.status?.phase === Phase.RUNNING, 60_000);
    await servers.purgeServer({ id: server!.id, removeData: true });
    await waitFor("the server purged", async () => (await servers.listServers({})).servers.length === 0, 60_000);
  });
});
