/**
 * The real berth processes a benchmark runs: a manager (`manager/src/main.ts`)
 * and Docker agents (`agent/src/main.ts`), each `node --import tsx` with its
 * output written straight to a log file (no pipe through the benchmark, so
 * the benchmark's own event loop never slows them down). Every process is
 * stopped by its own PID; `stopAll()` ends whatever is still running.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { sleep } from "./stats.js";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const MANAGER_MAIN = join(REPO_ROOT, "manager/src/main.ts");
export const AGENT_MAIN = join(REPO_ROOT, "agent/src/main.ts");

export interface Proc {
  readonly pid: number;
  readonly child: ChildProcess;
  readonly logPath: string;
  readonly exited: Promise<number | null>;
  log(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Proc>();

/** Starts `node [nodeArgs] --import tsx script args`, stdout and stderr appended to `logPath`. */
export function startNode(script: string, args: string[], logPath: string, opts: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {}): Proc {
  const fd = openSync(logPath, "a");
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), "--import", "tsx", script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const proc: Proc = {
    pid: child.pid!,
    child,
    logPath,
    exited,
    log: () => readFileSync(logPath, "utf8"),
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(t);
      }
      running.delete(proc);
    },
  };
  running.add(proc);
  void exited.then(() => running.delete(proc));
  return proc;
}

/** Stops every process this benchmark started that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(3_000)));
}

/** A free TCP port on loopback (bound and released; the manager binds it again right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Waits until `re` matches the file's content (from `offset`); returns the match. */
async function waitInLog(path: string, re: RegExp, offset: number, timeoutMs: number, proc: Proc): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = re.exec(readFileSync(path, "utf8").slice(offset));
    if (m) return m;
    if (proc.child.exitCode !== null) throw new Error(`process ${proc.pid} exited with ${proc.child.exitCode}; see ${path}`);
    if (Date.now() > deadline) throw new Error(`no ${re} in ${path} after ${timeoutMs} ms`);
    await sleep(5);
  }
}

export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

export interface ManagerProc extends Proc {
  url: string;
  port: number;
  /** The store it runs on: a SQLite file path, or the --store URL. */
  store: string;
  adminToken: string;
  /** The manager's id (label berth.manager on its containers). */
  managerId: string;
  /** ms from spawn until the manager printed its ready line. */
  readyMs: number;
  transport(): Transport;
  servers: Client<typeof ServerService>;
  hosts: Client<typeof HostService>;
  events: Client<typeof EventService>;
}

export interface ManagerOptions {
  dir: string;
  /** A SQLite database file (`--db`), or `store`: a --store URL (postgres://…). */
  dbPath?: string;
  store?: string;
  /** --secret-key-file: one key shared by every manager of a PostgreSQL database. */
  secretKeyFile?: string;
  /** The log file in `dir` (default manager.log): several managers need one each. */
  logName?: string;
  port: number;
  /** The admin token, when the database already has one (a restart). */
  adminToken?: string;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  logLevel?: string;
  extraArgs?: string[];
}

/**
 * Starts a manager on 127.0.0.1:<port>. Per-token rate limits are raised
 * (1,000,000 changes/s): the benchmarks measure berth, not its limiter; with
 * the defaults (20/s) a mass stop would measure the limiter.
 */
export async function startManager(opts: ManagerOptions): Promise<ManagerProc> {
  const store = opts.store ?? opts.dbPath;
  if (store === undefined) throw new Error("startManager needs dbPath or store");
  const logPath = join(opts.dir, opts.logName ?? "manager.log");
  let offset = 0;
  try {
    offset = readFileSync(logPath).length;
  } catch {
    /* a new log */
  }
  const t0 = performance.now();
  const proc = startNode(
    MANAGER_MAIN,
    [
      "--listen", `127.0.0.1:${opts.port}`,
      ...(opts.store !== undefined ? ["--store", opts.store] : ["--db", store]),
      ...(opts.secretKeyFile !== undefined ? ["--secret-key-file", opts.secretKeyFile] : []),
      "--log-level", opts.logLevel ?? "info",
      "--log-format", "json",
      "--rate-limit", "1000000",
      "--rate-burst", "1000000",
      "--max-streams", "1000",
      // Every simulated agent dials from 127.0.0.1 on its own connection.
      "--max-connections-per-ip", "1000000",
      "--max-streams-per-ip", "1000000",
      ...(opts.extraArgs ?? []),
    ],
    logPath,
    { nodeArgs: opts.nodeArgs ?? [] },
  );
  const ready = await waitInLog(logPath, /berth-manager ready url=(\S+)/, offset, 300_000, proc);
  const readyMs = performance.now() - t0;
  const printed = /berth-manager admin-token=(\S+)/.exec(readFileSync(logPath, "utf8").slice(offset))?.[1];
  const adminToken = printed ?? opts.adminToken;
  if (!adminToken) throw new Error(`the manager printed no admin token and none was given; see ${logPath}`);
  const url = ready[1]!;
  const managerId = /"managerId":"(mgr_[a-z2-7]+)"/.exec(readFileSync(logPath, "utf8").slice(offset))?.[1] ?? "";
  const transport = () => createGrpcTransport({ baseUrl: url, interceptors: [bearer(adminToken)] });
  const t = transport();
  return {
    ...proc,
    stop: proc.stop,
    url,
    port: opts.port,
    store,
    adminToken,
    managerId,
    readyMs,
    transport,
    servers: createClient(ServerService, t),
    hosts: createClient(HostService, t),
    events: createClient(EventService, t),
  };
}

/** `berth-agent enroll` with a fresh enrollment token, then `berth-agent run` on a real Docker engine. */
export async function startDockerAgent(opts: { manager: ManagerProc; dir: string; dockerHost: string; dataRoot: string }): Promise<Proc> {
  const stateDir = join(opts.dir, "agent-state");
  const env = { DOCKER_HOST: opts.dockerHost };
  const { token } = await opts.manager.hosts.createEnrollmentToken({});
  const enroll = startNode(AGENT_MAIN, ["enroll", "--manager", opts.manager.url, "--token", token, "--state-dir", stateDir], join(opts.dir, "enroll.log"), { env });
  const code = await enroll.exited;
  if (code !== 0) throw new Error(`berth-agent enroll failed (${code}):\n${enroll.log()}`);
  return startNode(AGENT_MAIN, ["run", "--state-dir", stateDir, "--data-root", opts.dataRoot, "--log-level", "info"], join(opts.dir, "agent.log"), { env });
}
