/**
 * The system under test, as real processes on one machine: a manager whose
 * database lives on a small tmpfs of its own (so its disk can be filled),
 * and N "hosts", each a private dockerd with its own bridge, an agent with
 * its own data root, and a TCP proxy between that agent and the manager (so
 * its link can be cut). Every fault the campaign injects is a method here.
 *
 * Everything is started by this process and stopped by pid; the tmpfs is
 * unmounted in shutdown().
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statfsSync } from "node:fs";
import { copyFile, open, rm, unlink } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import type Dockerode from "dockerode";
import { dockerClient, ensureTestImage, startPrivateDockerd } from "../test/harness/docker-engine.js";
import { enrollAgent, runAgent, startManager, waitFor, type ManagerProc, type Proc } from "../test/harness/processes.js";
import { startTcpProxy, type TcpProxy } from "../test/harness/tcp-proxy.js";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";

const run = promisify(execFile);
/** Where the harness keeps private dockerds (docker-engine.ts). */
const PRIVATE_DOCKER_ROOT = "/tmp/berth-docker";

export interface ClusterOptions {
  /** Prefix of the private dockerds' names (`<name>-a`, `<name>-b`, ...): two campaigns at once need different names. */
  name: string;
  hosts: number;
  /** Work directory: logs, agents' state and data roots, the tmpfs mount point. */
  dir: string;
  /** Size of the tmpfs holding the manager's database. */
  dbDiskMb: number;
  managerArgs: string[];
  agentArgs: string[];
  log: (msg: string) => void;
  /** Called when a process exits without the campaign killing it (a crash). */
  onUnexpectedExit: (what: string, detail: string) => void;
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
  readonly proxy: TcpProxy;
  hostId: string;
  agent: Proc | undefined;
  /** Link cut by a fault right now. */
  linkCut: boolean;
}

export class Cluster {
  manager: ManagerProc | undefined;
  readonly hosts: HostNode[] = [];
  readonly dbDir: string;
  readonly dbPath: string;
  readonly managerDir: string;
  managerId = "";
  /** The admin token (printed on the first start). */
  adminToken = "";
  port = 0;
  private mounted = false;
  private fillPath: string;
  private expectedExits = new WeakSet<Proc>();
  private managerStarting: Promise<void> | undefined;
  private closing = false;

  constructor(private readonly opts: ClusterOptions) {
    this.managerDir = join(opts.dir, "manager");
    this.dbDir = join(opts.dir, "dbfs");
    this.dbPath = join(this.dbDir, "berth.db");
    this.fillPath = join(this.dbDir, "fill");
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const { opts } = this;
    if (process.getuid?.() !== 0) throw new Error("the chaos campaign needs root: it mounts a tmpfs and runs private dockerds");
    mkdirSync(this.managerDir, { recursive: true });
    mkdirSync(this.dbDir, { recursive: true });
    await run("mount", ["-t", "tmpfs", "-o", `size=${opts.dbDiskMb}m,mode=0700`, "tmpfs", this.dbDir]);
    this.mounted = true;

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

    await this.startManagerProc();
    for (const [i, e] of engines.entries()) {
      const dir = join(opts.dir, `host-${labels[i]}`);
      mkdirSync(dir, { recursive: true });
      const proxy = await startTcpProxy("127.0.0.1", this.port);
      const node: HostNode = {
        index: i,
        label: labels[i]!,
        engineName: e.engineName,
        dockerHost: e.engine.dockerHost,
        docker: e.docker,
        dir,
        stateDir: join(dir, "agent-state"),
        dataRoot: join(dir, "data"),
        proxy,
        hostId: "",
        agent: undefined,
        linkCut: false,
      };
      mkdirSync(node.dataRoot, { recursive: true });
      const { token } = await this.manager!.hosts.createEnrollmentToken({});
      // Enrolled through the proxy: the agent dials what it enrolled with.
      const enrolled = await enrollAgent({ managerUrl: `http://${proxy.address}`, token, stateDir: node.stateDir, dir, env: { DOCKER_HOST: node.dockerHost } });
      if (enrolled.code !== 0) throw new Error(`enrolling host ${node.label} failed:\n${enrolled.log}`);
      node.hostId = (JSON.parse(readFileSync(join(node.stateDir, "credentials.json"), "utf8")) as { hostId: string }).hostId;
      this.hosts.push(node);
      this.startAgentProc(node);
    }
    await waitFor("every host online", async () => {
      const { hosts } = await this.manager!.hosts.listHosts({});
      return this.hosts.every((n) => hosts.find((h) => h.id === n.hostId)?.state === HostState.ONLINE);
    }, 60_000, 250);
  }

  // -------------------------------------------------------------------------
  // Manager

  /** Starts the manager on its port (port 0 the first time), retrying as systemd's Restart=always would. */
  startManagerProc(): Promise<void> {
    this.managerStarting ??= (async () => {
      const deadline = Date.now() + 120_000;
      for (let attempt = 1; ; attempt++) {
        try {
          const m = await startManager({ dir: this.managerDir, dbPath: this.dbPath, port: this.port, args: this.opts.managerArgs });
          this.manager = m;
          this.port = Number(new URL(m.url).port);
          this.adminToken = m.adminToken;
          if (!this.managerId) this.managerId = readMeta(this.dbPath, "manager_id");
          m.child.once("exit", (code, signal) => {
            if (this.expectedExits.has(m) || this.closing) return;
            this.opts.onUnexpectedExit("manager", `exited by itself (${signal ?? `code ${code}`}); see ${m.logPath}`);
            if (this.manager === m) this.manager = undefined;
            void this.startManagerProc().catch((err: unknown) => this.opts.log(`manager restart failed: ${String(err)}`));
          });
          return;
        } catch (err) {
          if (Date.now() > deadline || this.closing) throw err;
          this.opts.log(`manager start attempt ${attempt} failed: ${firstLine(err)}; retrying`);
          await sleep(Math.min(5_000, 500 * attempt));
        }
      }
    })().finally(() => (this.managerStarting = undefined));
    return this.managerStarting;
  }

  async killManager(): Promise<void> {
    const m = this.manager;
    if (!m) return;
    this.expectedExits.add(m);
    this.manager = undefined;
    await m.kill();
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

  cutLink(node: HostNode, mode: "blackhole" | "reset"): void {
    node.linkCut = true;
    node.proxy.cut(mode);
  }

  healLink(node: HostNode): void {
    node.linkCut = false;
    node.proxy.heal();
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

  /** Stops everything this campaign started and unmounts the tmpfs. */
  async shutdown(opts: { keepEngines?: boolean } = {}): Promise<void> {
    this.closing = true;
    await this.freeDbDisk();
    for (const n of this.hosts) {
      if (n.agent) {
        this.expectedExits.add(n.agent);
        await n.agent.stop();
      }
      await n.proxy.close();
    }
    if (this.manager) {
      this.expectedExits.add(this.manager);
      await this.manager.stop();
    }
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

function readMeta(dbPath: string, key: string): string {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined)?.value ?? "";
  } finally {
    db.close();
  }
}

export function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split("\n")[0]!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
