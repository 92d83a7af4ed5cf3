/**
 * The system under test, as real processes on one machine: one manager (or,
 * with PostgreSQL, several on one database) and N "hosts", each a private
 * dockerd with its own bridge, an agent with its own data root, and TCP
 * proxies between that agent and every manager (so its links can be cut).
 * Every fault the campaign injects is a method here.
 *
 *   SQLite      one manager; its database lives on a small tmpfs of its own
 *               (so its disk can be filled)
 *   PostgreSQL  a private server (test/harness/postgres.ts) with one database,
 *               N managers on it sharing one secret key file; each manager
 *               keeps its port across restarts, so the agents' URL lists
 *               (enrolled as `--manager proxyA,proxyB`) stay valid
 *
 *   agent a ──proxy a0──▶ manager 0 ─┐
 *           └─proxy a1──▶ manager 1 ─┴──▶ PostgreSQL
 *
 * Everything is started by this process and stopped by pid; the tmpfs is
 * unmounted and the PostgreSQL server stopped in shutdown().
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statfsSync } from "node:fs";
import { copyFile, open, rm, unlink } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type Dockerode from "dockerode";
import { dockerClient, ensureTestImage, startPrivateDockerd } from "../test/harness/docker-engine.js";
import { createDatabase, findPostgresBin, startPostgres, type PostgresServer } from "../test/harness/postgres.js";
import { bearer, enrollAgent, runAgent, startManager, waitFor, type ManagerProc, type Proc } from "../test/harness/processes.js";
import { startTcpProxy, type TcpProxy } from "../test/harness/tcp-proxy.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import type { Rng } from "./rng.js";
import { postgresProbe, sqliteProbe, type StoreProbe } from "./store-probe.js";

const run = promisify(execFile);
/** Where the harness keeps private dockerds (docker-engine.ts). */
const PRIVATE_DOCKER_ROOT = "/tmp/berth-docker";

export type StoreKind = "sqlite" | "postgres";

export interface ClusterOptions {
  /** Prefix of the private dockerds' names (`<name>-a`, `<name>-b`, ...): two campaigns at once need different names. */
  name: string;
  hosts: number;
  /** "sqlite" (default: one manager, database on a tmpfs) or "postgres" (a private server, `managers` managers). */
  store?: StoreKind;
  /** Managers on the one database (default 1; more than one needs store "postgres"). */
  managers?: number;
  /** Work directory: logs, agents' state and data roots, the tmpfs mount point. */
  dir: string;
  /** Size of the tmpfs holding the manager's database (SQLite). */
  dbDiskMb: number;
  managerArgs: string[];
  agentArgs: string[];
  log: (msg: string) => void;
  /** Called when a process exits without the campaign killing it (a crash). */
  onUnexpectedExit: (what: string, detail: string) => void;
  /**
   * Called when manager `index` crashed; the returned function when it runs again. The
   * crash is a violation of its own; calls it cut off are not reported again.
   */
  onManagerCrash?: (index: number) => () => void;
}

/** The API of one manager, as the admin. */
export interface ManagerApi {
  /** Index in Cluster.managers. */
  readonly index: number;
  readonly servers: Client<typeof ServerService>;
  readonly hosts: Client<typeof HostService>;
  readonly events: Client<typeof EventService>;
}

/** One manager's place in the cluster: its port and directory stay, its process comes and goes. */
export interface ManagerSlot {
  readonly index: number;
  /** "manager" alone, "manager 0", "manager 1", ... with several. */
  readonly label: string;
  readonly dir: string;
  /** 0 until the first start picks one; the same on every restart. */
  port: number;
  proc: ManagerProc | undefined;
  starting: Promise<void> | undefined;
  api: ManagerApi | undefined;
}

export interface HostNode {
  readonly index: number;
  readonly label: string;
  readonly engineName: string;
  readonly dockerHost: string;
  readonly docker: Dockerode;
  readonly dir: string;
  readonly stateDir: string;
  readonly dataRoot: string;
  /** One proxy per manager (same index as Cluster.managers): the agent dials them in order. */
  readonly proxies: TcpProxy[];
  hostId: string;
  agent: Proc | undefined;
  /** Some link of this agent cut by a fault right now. */
  linkCut: boolean;
}

export class Cluster {
  readonly managers: ManagerSlot[];
  readonly hosts: HostNode[] = [];
  readonly store: StoreKind;
  readonly dbDir: string;
  readonly dbPath: string;
  /** The directory of the first manager (its log; on SQLite the copied database after shutdown). */
  readonly managerDir: string;
  managerId = "";
  /** The admin token (printed on the first start on an empty database). */
  adminToken = "";
  /** The campaign's private PostgreSQL server and berth's database URL on it (store "postgres"). */
  postgres: PostgresServer | undefined;
  storeUrl = "";
  /** Whether the database-restart fault holds the PostgreSQL server down right now. */
  databaseDown = false;
  private probeImpl: StoreProbe | undefined;
  private mounted = false;
  private fillPath: string;
  private expectedExits = new WeakSet<Proc>();
  private closing = false;

  constructor(private readonly opts: ClusterOptions) {
    this.store = opts.store ?? "sqlite";
    const n = opts.managers ?? 1;
    if (n > 1 && this.store !== "postgres") throw new Error("several managers need --store postgres (SQLite is one process's database)");
    this.managers = Array.from({ length: n }, (_, i) => ({
      index: i,
      label: n === 1 ? "manager" : `manager ${i}`,
      dir: join(opts.dir, n === 1 ? "manager" : `manager-${i}`),
      port: 0,
      proc: undefined,
      starting: undefined,
      api: undefined,
    }));
    this.managerDir = this.managers[0]!.dir;
    this.dbDir = join(opts.dir, "dbfs");
    this.dbPath = join(this.dbDir, "berth.db");
    this.fillPath = join(this.dbDir, "fill");
  }

  /** The URL of the first manager running (of manager 0 when none is). */
  get url(): string {
    const slot = this.managers.find((m) => m.proc) ?? this.managers[0]!;
    return `http://127.0.0.1:${slot.port}`;
  }

  /** The campaign's read-only look into the database (see store-probe.ts). */
  get probe(): StoreProbe {
    if (!this.probeImpl) throw new Error("the cluster is not started");
    return this.probeImpl;
  }

  /** Managers whose process runs now. */
  liveManagers(): ManagerSlot[] {
    return this.managers.filter((m) => m.proc);
  }

  /**
   * The API of a manager to call: with one manager, that one (up or not: a call to a
   * manager that is down fails like an operator's would); with several, a live one
   * drawn with `rng` (any one when none is up, and the call fails).
   */
  pickApi(rng: Rng): ManagerApi {
    if (this.managers.length === 1) return this.api(0);
    const live = this.liveManagers();
    return this.api(rng.pick(live.length ? live : this.managers).index);
  }

  /** The admin API of manager `index` (its transport follows it across restarts: same port). */
  api(index: number): ManagerApi {
    const slot = this.managers[index]!;
    if (!slot.api) {
      const t = createGrpcTransport({ baseUrl: `http://127.0.0.1:${slot.port}`, interceptors: [bearer(this.adminToken)] });
      slot.api = { index, servers: createClient(ServerService, t), hosts: createClient(HostService, t), events: createClient(EventService, t) };
    }
    return slot.api;
  }

  async start(): Promise<void> {
    const { opts } = this;
    if (process.getuid?.() !== 0) throw new Error("the chaos campaign needs root: it mounts a tmpfs, runs private dockerds and PostgreSQL as its own user");
    for (const m of this.managers) mkdirSync(m.dir, { recursive: true });
    if (this.store === "sqlite") {
      mkdirSync(this.dbDir, { recursive: true });
      await run("mount", ["-t", "tmpfs", "-o", `size=${opts.dbDiskMb}m,mode=0700`, "tmpfs", this.dbDir]);
      this.mounted = true;
    } else {
      this.postgres = await startPostgres();
      this.storeUrl = await createDatabase(this.postgres.url, "berth_chaos");
      opts.log(`PostgreSQL ${this.postgres.url} (data ${this.postgres.dataDir}); berth's database ${this.storeUrl}`);
    }

    // The hosts' engines, in parallel (each takes a few seconds to start).
    const labels = "abcdefgh";
    const engines = await Promise.all(
      Array.from({ length: opts.hosts }, async (_, i) => {
        const engineName = `${opts.name}-${labels[i]}`;
        const engine = await startPrivateDockerd(engineName);
        const docker = dockerClient(engine.dockerHost);
        await ensureTestImage(docker);
        // Left over by an earlier campaign on this engine: not ours to judge.
        for (const c of await docker.listContainers({ all: true, filters: { label: ["berth.server"] } })) {
          await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
        }
        return { engineName, engine, docker };
      }),
    );

    // One after the other: the first start on the empty database prints the admin
    // token and creates the shared secret key file the others then read.
    for (const m of this.managers) await this.startManagerProc(m.index);
    this.probeImpl = this.store === "sqlite" ? sqliteProbe(this.dbPath) : postgresProbe(this.storeUrl);
    for (const [i, e] of engines.entries()) {
      const dir = join(opts.dir, `host-${labels[i]}`);
      mkdirSync(dir, { recursive: true });
      const proxies = await Promise.all(this.managers.map((m) => startTcpProxy("127.0.0.1", m.port)));
      const node: HostNode = {
        index: i,
        label: labels[i]!,
        engineName: e.engineName,
        dockerHost: e.engine.dockerHost,
        docker: e.docker,
        dir,
        stateDir: join(dir, "agent-state"),
        dataRoot: join(dir, "data"),
        proxies,
        hostId: "",
        agent: undefined,
        linkCut: false,
      };
      mkdirSync(node.dataRoot, { recursive: true });
      const { token } = await this.api(0).hosts.createEnrollmentToken({});
      // Enrolled through the proxies, every manager's in order: the agent dials what it enrolled with.
      const managerUrl = proxies.map((p) => `http://${p.address}`).join(",");
      const enrolled = await enrollAgent({ managerUrl, token, stateDir: node.stateDir, dir, env: { DOCKER_HOST: node.dockerHost } });
      if (enrolled.code !== 0) throw new Error(`enrolling host ${node.label} failed:\n${enrolled.log}`);
      node.hostId = (JSON.parse(readFileSync(join(node.stateDir, "credentials.json"), "utf8")) as { hostId: string }).hostId;
      this.hosts.push(node);
      this.startAgentProc(node);
    }
    await waitFor("every host online", async () => {
      const { hosts } = await this.api(0).hosts.listHosts({});
      return this.hosts.every((n) => hosts.find((h) => h.id === n.hostId)?.state === HostState.ONLINE);
    }, 60_000, 250);
  }

  // -------------------------------------------------------------------------
  // Managers

  /** Starts manager `index` on its port (port 0 the first time), retrying as systemd's Restart=always would. */
  startManagerProc(index = 0): Promise<void> {
    const slot = this.managers[index]!;
    slot.starting ??= (async () => {
      const deadline = Date.now() + 120_000;
      for (let attempt = 1; ; attempt++) {
        try {
          const m =
            this.store === "sqlite"
              ? await startManager({ dir: slot.dir, dbPath: this.dbPath, port: slot.port, args: this.opts.managerArgs })
              : await startManager({
                  dir: slot.dir,
                  store: this.storeUrl,
                  port: slot.port,
                  args: [...this.opts.managerArgs, "--secret-key-file", join(this.opts.dir, "secret.key")],
                });
          slot.proc = m;
          slot.port = Number(new URL(m.url).port);
          this.adminToken ||= m.adminToken;
          this.managerId ||= m.managerId;
          m.child.once("exit", (code, signal) => {
            if (this.expectedExits.has(m) || this.closing) return;
            this.opts.onUnexpectedExit(slot.label, `exited by itself (${signal ?? `code ${code}`}); see ${m.logPath}`);
            const back = this.opts.onManagerCrash?.(index);
            if (slot.proc === m) slot.proc = undefined;
            void this.startManagerProc(index)
              .catch((err: unknown) => this.opts.log(`${slot.label} restart failed: ${String(err)}`))
              .finally(() => back?.());
          });
          return;
        } catch (err) {
          if (Date.now() > deadline || this.closing) throw err;
          this.opts.log(`${slot.label} start attempt ${attempt} failed: ${startFailure(err)}; retrying`);
          await sleep(Math.min(5_000, 500 * attempt));
        }
      }
    })().finally(() => (slot.starting = undefined));
    return slot.starting;
  }

  /** kill -9 manager `index`. */
  async killManager(index = 0): Promise<void> {
    const slot = this.managers[index]!;
    const m = slot.proc;
    if (!m) return;
    this.expectedExits.add(m);
    slot.proc = undefined;
    await m.kill();
  }

  // -------------------------------------------------------------------------
  // The PostgreSQL server

  /** `pg_ctl restart -m fast`: every connection dropped, the server back at once. */
  async restartDatabase(): Promise<void> {
    await this.postgres!.restart();
  }

  /** `pg_ctl stop -m fast`: the database is unreachable until startDatabase(). */
  async stopDatabase(): Promise<void> {
    this.databaseDown = true;
    await this.postgres!.stopServer();
  }

  async startDatabase(): Promise<void> {
    await this.postgres!.startServer();
    this.databaseDown = false;
  }

  // -------------------------------------------------------------------------
  // Agents

  startAgentProc(node: HostNode): void {
    const p = runAgent({
      dir: node.dir,
      stateDir: node.stateDir,
      dataRoot: node.dataRoot,
      env: { DOCKER_HOST: node.dockerHost },
      extraArgs: this.opts.agentArgs,
    });
    node.agent = p;
    p.child.once("exit", (code, signal) => {
      if (this.expectedExits.has(p) || this.closing) return;
      this.opts.onUnexpectedExit(`agent ${node.label}`, `exited by itself (${signal ?? `code ${code}`}); see ${p.logPath}`);
      if (node.agent === p) {
        node.agent = undefined;
        setTimeout(() => !this.closing && !node.agent && this.startAgentProc(node), 1_000);
      }
    });
  }

  async killAgent(node: HostNode): Promise<void> {
    const p = node.agent;
    if (!p) return;
    this.expectedExits.add(p);
    node.agent = undefined;
    await p.kill();
  }

  // -------------------------------------------------------------------------
  // Faults on the hosts

  /** Cuts the agent's links to every manager, or with `only` to that manager alone (the agent must fail over). */
  cutLink(node: HostNode, mode: "blackhole" | "reset", only?: number): void {
    node.linkCut = true;
    for (const [i, p] of node.proxies.entries()) if (only === undefined || i === only) p.cut(mode);
  }

  healLink(node: HostNode): void {
    node.linkCut = false;
    for (const p of node.proxies) p.heal();
  }

  /** Stops the host's dockerd (SIGTERM: it stops its containers, as on a real restart) and starts it again on the same directories. */
  async restartDockerd(node: HostNode): Promise<void> {
    await stopPrivateDockerd(node.engineName);
    await startPrivateDockerd(node.engineName);
  }

  /** Fills the database's file system to the last byte. */
  async fillDbDisk(): Promise<number> {
    const f = await open(this.fillPath, "a");
    let written = 0;
    try {
      for (const size of [1 << 20, 4096, 512]) {
        const chunk = Buffer.alloc(size);
        for (;;) {
          try {
            await f.write(chunk);
            written += size;
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
            throw err;
          }
        }
      }
    } finally {
      await f.close().catch(() => {});
    }
    return written;
  }

  async freeDbDisk(): Promise<void> {
    await unlink(this.fillPath).catch(() => {});
  }

  dbDiskFree(): number {
    const s = statfsSync(this.dbDir);
    return s.bavail * s.bsize;
  }

  // -------------------------------------------------------------------------

  /** Stops everything this campaign started, unmounts the tmpfs and stops the PostgreSQL server (dumping berth's database into the work dir first). */
  async shutdown(opts: { keepEngines?: boolean } = {}): Promise<void> {
    this.closing = true;
    if (this.store === "sqlite") await this.freeDbDisk();
    for (const n of this.hosts) {
      if (n.agent) {
        this.expectedExits.add(n.agent);
        await n.agent.stop();
      }
      for (const p of n.proxies) await p.close();
    }
    for (const m of this.managers) {
      if (!m.proc) continue;
      this.expectedExits.add(m.proc);
      await m.proc.stop();
    }
    await this.probeImpl?.close().catch(() => {});
    for (const n of this.hosts) {
      for (const c of await n.docker.listContainers({ all: true, filters: { label: ["berth.server"] } }).catch(() => [])) {
        await n.docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
      }
      if (!opts.keepEngines) await stopPrivateDockerd(n.engineName).catch((err: unknown) => this.opts.log(`stopping ${n.engineName}: ${String(err)}`));
    }
    if (this.mounted) {
      // Keep the database for the report's reader: the tmpfs goes away with the mount.
      for (const f of ["berth.db", "berth.db-wal", "berth.db-shm"]) await copyFile(join(this.dbDir, f), join(this.managerDir, f)).catch(() => {});
      await run("umount", [this.dbDir]).catch(async () => run("umount", ["-l", this.dbDir]));
      this.mounted = false;
    }
    if (this.postgres) {
      // Keep the database for the report's reader: the server's directory goes away with it.
      if (this.databaseDown) await this.startDatabase().catch(() => {});
      const pgDump = join(findPostgresBin() ?? "/usr/bin", "pg_dump");
      await run(pgDump, ["--file", join(this.managerDir, "berth.sql"), this.storeUrl]).catch((err: unknown) => this.opts.log(`pg_dump: ${firstLine(err)}`));
      await this.postgres.stop().catch((err: unknown) => this.opts.log(`stopping PostgreSQL: ${firstLine(err)}`));
      this.postgres = undefined;
    }
  }

  /** Removes the work directory (after shutdown). */
  async removeWorkDir(): Promise<void> {
    if (this.mounted) throw new Error(`${this.dbDir} is still mounted`);
    await rm(this.opts.dir, { recursive: true, force: true });
  }
}

/** SIGTERM to the private dockerd `name` (by its pidfile), SIGKILL after 30 s; resolves once it is gone. */
export async function stopPrivateDockerd(name: string): Promise<void> {
  const pidFile = join(PRIVATE_DOCKER_ROOT, name, "docker.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!(pid > 0) || !alive(pid)) return;
  const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  if (comm !== "dockerd") return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 30_000;
  while (alive(pid)) {
    if (Date.now() > deadline) {
      process.kill(pid, "SIGKILL");
      await sleep(1_000);
      break;
    }
    await sleep(100);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie still answers signal 0 until reaped.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/** Why a manager did not start: the harness's first line and, from the log it quotes, the last error line. */
function startFailure(err: unknown): string {
  const text = String(err instanceof Error ? err.message : err);
  const lines = text.split("\n").reverse().map((l) => l.trim());
  const cause = lines.find((l) => /^(berth-manager: |\w*Error\b|error:)/.test(l)) ?? lines.find((l) => /"level":[56]0/.test(l));
  return cause ? `${firstLine(err)} ${cause.trim().slice(0, 300)}` : firstLine(err);
}

export function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split("\n")[0]!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
