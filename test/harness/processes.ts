/**
 * Starts real berth processes for integration tests: `node <bundle>` of
 * the current sources (bundles.ts; one PID per process, stopped by that PID only), with output
 * captured to a log file the test can print on failure.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createNetServer, type Server as NetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { inject } from "vitest";
import { createDatabase, uniqueDatabaseName } from "./postgres.js";
import { AGENT_BUNDLE, MANAGER_BUNDLE } from "./bundles.js";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { HostService, HostState, type Host } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService, Phase, GetServerRequestSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** Stack traces in the programs' logs name the TypeScript sources. */
const NODE_FLAGS = ["--enable-source-maps"];

export interface Proc {
  readonly pid: number;
  readonly logPath: string;
  readonly child: ChildProcess;
  log(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. */
  stop(): Promise<void>;
  /** kill -9. */
  kill(): Promise<void>;
}

function startNode(script: string, args: string[], logPath: string, env: NodeJS.ProcessEnv = {}): Proc {
  const out = createWriteStream(logPath, { flags: "a" });
  const child = spawn(process.execPath, [...NODE_FLAGS, script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signal = async (sig: NodeJS.Signals, graceMs: number) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(sig);
    const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(t);
  };
  return {
    pid: child.pid!,
    logPath,
    child,
    log: () => readFileSync(logPath, "utf8"),
    stop: () => signal("SIGTERM", 5000),
    kill: () => signal("SIGKILL", 0),
  };
}

export interface ManagerProc extends Proc {
  url: string;
  /** Its store, as given to --store (sqlite://… or postgres://…). */
  store: string;
  /** The SQLite file of a SQLite store ("" on PostgreSQL). */
  dbPath: string;
  /** The manager's id (`mgr_…`): the value of the `berth.manager` label on what it creates. */
  managerId: string;
  /** An all-projects admin token: the one printed on first start, else one made with the recovery CLI. */
  adminToken: string;
  /** What the manager printed on stdout up to its ready line (the admin token on first start). */
  startupOutput: string;
  /** With TLS (--tls-auto or --tls-cert): the CA certificate clients trust. */
  caPem?: string;
  caPath?: string;
  /** Clients authenticated as the admin token. */
  servers: Client<typeof ServerService>;
  hosts: Client<typeof HostService>;
  access: Client<typeof AccessService>;
  /** A transport sending `authorization: Bearer <token>` (none when token is undefined). */
  transport(token: string | undefined): Transport;
  /** With --sftp-listen: the SFTP endpoint's port and host key fingerprint, as printed. */
  sftp?: { port: number; fingerprint: string };
}

/** PostgreSQL databases made for managers by test dir (BERTH_TEST_STORE=postgres). */
const postgresStores = new Map<string, string>();

/** The PostgreSQL store of the managers started in `dir`: a new database on the run's server, made once. */
async function postgresStoreFor(dir: string): Promise<string> {
  let url = postgresStores.get(dir);
  if (!url) {
    const server = inject("postgres").url;
    if (!server) throw new Error(`BERTH_TEST_STORE=postgres needs the run's PostgreSQL server: ${inject("postgres").unavailable ?? "none was provided"}`);
    url = await createDatabase(server, uniqueDatabaseName("berth_it"));
    postgresStores.set(dir, url);
  }
  return url;
}

/** Admin tokens printed by managers, by database: a restarted manager does not print it again. */
const adminTokens = new Map<string, string>();

/** Sends `authorization: Bearer <token>` on every call. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** `berth-manager token create ...` against a database file; returns the secret. */
export async function createTokenWithCli(dbPath: string, args: string[]): Promise<string> {
  const where = /^[a-z]+:\/\//.test(dbPath) ? ["--store", dbPath] : ["--db", dbPath];
  const { stdout } = await promisify(execFile)(process.execPath, [...NODE_FLAGS, MANAGER_BUNDLE, "token", "create", ...where, ...args], { cwd: REPO_ROOT });
  return stdout.trim();
}

/** The SFTP endpoint a manager printed (`berth-manager sftp=HOST:PORT host-key=SHA256:…`), if any. */
function sftpIn(output: string): { sftp?: { port: number; fingerprint: string } } {
  const m = /berth-manager sftp=\S+:(\d+) host-key=(\S+)/.exec(output);
  return m ? { sftp: { port: Number(m[1]), fingerprint: m[2]! } } : {};
}

/** The manager id in a manager's output: its "manager listening" log line (JSON format, info level). */
export function managerIdIn(output: string): string | undefined {
  return /"managerId":"(mgr_[a-z2-7]+)"/.exec(output)?.[1];
}

/** The manager id a database holds (meta table): for a manager that logs above info or as text. */
function managerIdOfDb(dbPath: string): string {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare("SELECT value FROM meta WHERE key = 'manager_id'").get() as { value: string } | undefined;
    if (!row) throw new Error(`no manager_id in the meta table of ${dbPath}`);
    return row.value;
  } finally {
    db.close();
  }
}

/**
 * Starts a manager on a free loopback port. Its store: `store` when given, else the
 * SQLite file `dbPath` (default <dir>/berth.db), or with BERTH_TEST_STORE=postgres
 * (the integration-pg project) a database of its own on the run's PostgreSQL
 * server, one per `dir` (a manager restarted in the same dir finds its data), with
 * the secret key file every manager of that database shares in `dir`.
 */
export async function startManager(opts: { dir: string; dbPath?: string; store?: string; port?: number; args?: string[] }): Promise<ManagerProc> {
  const store = opts.store ?? (opts.dbPath === undefined && process.env.BERTH_TEST_STORE === "postgres" ? await postgresStoreFor(opts.dir) : undefined);
  const dbPath = store === undefined ? (opts.dbPath ?? join(opts.dir, "berth.db")) : "";
  const storeArgs = store === undefined ? ["--db", dbPath] : ["--store", store, ...(store.startsWith("postgres") && !opts.args?.includes("--secret-key-file") ? ["--secret-key-file", join(opts.dir, "secret.key")] : [])];
  const storeKey = store ?? dbPath;
  const proc = startNode(
    MANAGER_BUNDLE,
    ["--listen", `127.0.0.1:${opts.port ?? 0}`, ...storeArgs, "--log-level", "debug", ...(opts.args ?? [])],
    join(opts.dir, "manager.log"),
  );
  let printedToken: string | undefined;
  let startupOutput = "";
  let caPath: string | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = /berth-manager ready url=(\S+)/.exec(buf);
      if (m) {
        proc.child.stdout!.off("data", onData);
        startupOutput = buf;
        printedToken = /berth-manager admin-token=(\S+)/.exec(buf)?.[1];
        caPath = /berth-manager tls ca=(\S+)/.exec(buf)?.[1];
        clearTimeout(notReady);
        resolve(m[1]!);
      }
    };
    proc.child.stdout!.on("data", onData);
    proc.child.once("exit", (code) => reject(new Error(`manager exited with ${code} before it was ready:\n${proc.log()}`)));
    // Cleared once ready: it reads the log file, which a finished test may have removed.
    const notReady = setTimeout(() => reject(new Error(`manager not ready after 30s:\n${proc.log()}`)), 30_000);
    notReady.unref();
  });
  // The "manager listening" line may reach the output just after the ready line; a store URL
  // has no file to read the id from, so wait for the line there.
  const managerId =
    managerIdIn(startupOutput) ?? (dbPath ? managerIdOfDb(dbPath) : await waitFor("the manager id in its log", async () => managerIdIn(proc.log()), 10_000, 50));
  if (printedToken) adminTokens.set(storeKey, printedToken);
  const adminToken = adminTokens.get(storeKey) ?? (await createTokenWithCli(storeKey, ["--role", "admin", "--name", "harness"]));
  adminTokens.set(storeKey, adminToken);
  const caPem = caPath ? readFileSync(caPath, "utf8") : undefined;
  // The manager closes an HTTP/2 connection idle for --idle-timeout (default 120 s) with GOAWAY; a call
  // the client starts at that moment crosses it and is refused (REFUSED_STREAM). gRPC clients close idle
  // connections first for this reason (connect-node's default, 15 min, is longer): do the same.
  const idleArg = opts.args?.indexOf("--idle-timeout") ?? -1;
  const serverIdleMs = idleArg >= 0 ? Number(opts.args![idleArg + 1]) * 1000 : 120_000;
  const transport = (token: string | undefined) =>
    createGrpcTransport({
      baseUrl: url,
      interceptors: token ? [bearer(token)] : [],
      idleConnectionTimeoutMs: serverIdleMs / 2,
      ...(caPem ? { nodeOptions: { ca: caPem } } : {}),
    });
  const admin = transport(adminToken);
  return {
    ...proc,
    url,
    store: store ?? `sqlite://${dbPath}`,
    dbPath,
    managerId,
    adminToken,
    startupOutput,
    ...(caPem ? { caPem, caPath: caPath! } : {}),
    ...sftpIn(startupOutput),
    servers: createClient(ServerService, admin),
    hosts: createClient(HostService, admin),
    access: createClient(AccessService, admin),
    transport,
  };
}

/**
 * Enrolls an agent with a fresh token (via the API) and starts `berth-agent run`.
 * `managerUrls`: enroll with `--manager <them, comma-separated>` (stored, then dialled
 * in order by run) instead of the manager's own URL; the token still comes from `manager`.
 */
export async function startAgent(opts: {
  manager: ManagerProc;
  managerUrls?: string[];
  dir: string;
  dataRoot?: string;
  dockerHost?: string;
  stateDir?: string;
  extraArgs?: string[];
}): Promise<Proc & { stateDir: string; dataRoot: string }> {
  const stateDir = opts.stateDir ?? join(opts.dir, "agent-state");
  const dataRoot = opts.dataRoot ?? join(opts.dir, "data");
  const env = opts.dockerHost ? { DOCKER_HOST: opts.dockerHost } : {};
  const { token } = await opts.manager.hosts.createEnrollmentToken({});
  const enroll = await enrollAgent({ managerUrl: opts.managerUrls?.join(",") ?? opts.manager.url, token, stateDir, dir: opts.dir, env });
  if (enroll.code !== 0) throw new Error(`berth-agent enroll failed (${enroll.code}):\n${enroll.log}`);
  const proc = runAgent({ dir: opts.dir, stateDir, dataRoot, env, extraArgs: opts.extraArgs ?? [] });
  return { ...proc, stateDir, dataRoot };
}

/** Runs `berth-agent enroll` to completion; returns its exit code and output. */
export async function enrollAgent(opts: { managerUrl: string; token: string; stateDir: string; dir: string; env?: NodeJS.ProcessEnv }): Promise<{ code: number | null; log: string }> {
  const logPath = join(opts.dir, `enroll-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}.log`);
  const p = startNode(AGENT_BUNDLE, ["enroll", "--manager", opts.managerUrl, "--token", opts.token, "--state-dir", opts.stateDir], logPath, opts.env ?? {});
  const code = await new Promise<number | null>((resolve) => p.child.once("exit", (c) => resolve(c)));
  // Let the log stream flush.
  await new Promise((r) => setTimeout(r, 50));
  return { code, log: p.log() };
}

/**
 * The agent's reconnect backoff cap in tests (--reconnect-max; the product's default is 30 s).
 * A test restarting or cutting off a manager is about what happens once the agent is back, not
 * about how long the backoff lets it wait: with 30 s, every restart cost up to 30 s more (0.5 s
 * doubling, jittered). Tests whose subject is the backoff (failover without one) pass their own.
 */
export const TEST_RECONNECT_MAX_SECONDS = 1;

/** Starts `berth-agent run` for an already enrolled state dir. */
export function runAgent(opts: { dir: string; stateDir: string; dataRoot: string; env?: NodeJS.ProcessEnv; extraArgs?: string[] }): Proc {
  return startNode(
    AGENT_BUNDLE,
    [
      "run",
      "--state-dir",
      opts.stateDir,
      "--data-root",
      opts.dataRoot,
      "--log-level",
      "debug",
      // Backups go to the test's directory, never to the agent's default under /var/lib.
      ...(opts.extraArgs?.includes("--backup-dir") ? [] : ["--backup-dir", join(opts.dir, "backups")]),
      ...(opts.extraArgs?.includes("--reconnect-max") ? [] : ["--reconnect-max", String(TEST_RECONNECT_MAX_SECONDS)]),
      ...(opts.extraArgs ?? []),
    ],
    join(opts.dir, "agent.log"),
    opts.env ?? {},
  );
}

/** A new directory /tmp/berth-<prefix>-XXXXXX for one test file; remove it with removeTestDir. */
export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `berth-${prefix}-`));
}

/**
 * Removes a directory made by tempDir, unless BERTH_KEEP_TEST_DIRS is set (to
 * read the logs after a run). Never throws: an afterAll's cleanup must not
 * hide the failure that matters; what it could not remove is printed.
 */
export async function removeTestDir(dir: string | undefined): Promise<void> {
  if (!dir || process.env.BERTH_KEEP_TEST_DIRS) return;
  await rm(dir, { recursive: true, force: true }).catch((err: unknown) => console.warn(`[harness] could not remove ${dir}: ${String(err)}`));
}

/** `n` TCP ports on 127.0.0.1 that are free right now (held together, so all differ). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<NetServer>((resolve, reject) => {
      const srv = createNetServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => resolve(srv));
    })),
  );
  const ports = servers.map((srv) => (srv.address() as { port: number }).port);
  await Promise.all(servers.map((srv) => new Promise((r) => srv.close(r))));
  return ports;
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes; returns the value. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Waits until the text file `path` (a log a test container appends to, one
 * line per start) has `count` lines; returns how many it has then. A server's
 * Running phase is its container's state, not its shell's progress, so a line
 * the shell writes may come a little after it. The caller checks the count is
 * not more.
 */
export async function waitForLines(path: string, count: number, timeoutMs = 20_000): Promise<number> {
  const lines = () => (existsSync(path) ? readFileSync(path, "utf8").split("\n").filter(Boolean).length : 0);
  await waitFor(`${count} line(s) in ${path}`, async () => lines() >= count, timeoutMs);
  return lines();
}

/** Waits until a host of `m` is online (HostState.ONLINE); returns it (tests here run one agent per manager). */
export async function waitForHostOnline(m: ManagerProc, timeoutMs = 20_000): Promise<Host> {
  return waitFor("host online", async () => (await m.hosts.listHosts({})).hosts.find((h) => h.state === HostState.ONLINE), timeoutMs);
}

/** Waits until GetServer reports `phase`; returns the server. */
export async function waitForPhase(m: ManagerProc, id: string, phase: Phase, timeoutMs = 30_000): Promise<Server> {
  let last: Server | undefined;
  try {
    return await waitFor(
      `server ${id} to reach ${Phase[phase]}`,
      async () => {
        const { server } = await m.servers.getServer(create(GetServerRequestSchema, { id }));
        last = server;
        return server?.status?.phase === phase ? server : undefined;
      },
      timeoutMs,
    );
  } catch (err) {
    const s = last?.status;
    throw new Error(`${(err as Error).message}; last seen ${s ? `${Phase[s.phase]} ${s.reason}: ${s.message}` : "nothing"}`);
  }
}
