/**
 * Test harness: get hold of a Docker engine and a tiny local test image
 * without any registry access.
 *
 * Engine selection (ensureDockerEngine):
 *   1. $DOCKER_HOST (unix:// only) if it answers a ping,
 *   2. /var/run/docker.sock if it answers,
 *   3. a private dockerd under /tmp/berth-docker/<name>, reused if already
 *      running there, otherwise started (as root; docker.io is apt-installed
 *      when missing).
 *
 * Every private dockerd gets its own bridge and its own containerd
 * namespaces and never touches iptables, so several of them (multi-host
 * tests) can run side by side with each other and with a system dockerd.
 * Published ports still work on 127.0.0.1 through docker-proxy.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import Docker from "dockerode";
import type Dockerode from "dockerode";

/** A reachable Docker engine and how to release it. */
export interface DockerEngine {
  /** Absolute path of the engine's API unix socket. */
  socketPath: string;
  /** The same socket as a DOCKER_HOST value: "unix:///...". */
  dockerHost: string;
  /** PID of the dockerd this harness call spawned; undefined when reused. */
  ownedPid?: number;
  /** Stops the dockerd if this call started it; otherwise a no-op. */
  stop(): Promise<void>;
}

/** Local-only image built from the host's static busybox (see ensureTestImage). */
export const TEST_IMAGE = "berth-test/busybox:1";

/** Stable root so the image/layer cache survives across test runs. */
const PRIVATE_ROOT = "/tmp/berth-docker";
const SYSTEM_SOCKET = "/var/run/docker.sock";
const PING_TIMEOUT_MS = 2_000;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
/** Private bridges get a /24 out of 10.213.0.0/16 (chosen to be unusual). */
const BRIDGE_NET_PREFIX = [10, 213] as const;
/** Where Debian (and most distros) put the binaries we need; root's PATH may lack sbin. */
const SYSTEM_BIN_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * Returns a usable Docker engine: $DOCKER_HOST or the system socket when
 * they answer, otherwise a private dockerd (see startPrivateDockerd).
 * Throws an Error explaining every failed option; it never skips silently.
 */
export async function ensureDockerEngine(opts: { name?: string; iptables?: boolean } = {}): Promise<DockerEngine> {
  const rejected: string[] = [];

  const envHost = process.env.DOCKER_HOST;
  if (envHost) {
    if (envHost.startsWith("unix://")) {
      const socketPath = envHost.slice("unix://".length);
      const err = await pingError(socketPath);
      if (!err) return reusedEngine(socketPath);
      rejected.push(`DOCKER_HOST=${envHost} did not answer: ${err}`);
    } else {
      rejected.push(`DOCKER_HOST=${envHost} ignored: only unix:// sockets are supported`);
    }
  }

  const err = await pingError(SYSTEM_SOCKET);
  if (!err) return reusedEngine(SYSTEM_SOCKET);
  rejected.push(`${SYSTEM_SOCKET} did not answer: ${err}`);

  try {
    return await startPrivateDockerd(opts.name ?? "default", { iptables: opts.iptables ?? false });
  } catch (e) {
    throw new Error(
      `No Docker engine available.\n- ${rejected.join("\n- ")}\n- private dockerd: ${errorMessage(e)}`,
    );
  }
}

/**
 * Returns a private dockerd rooted at /tmp/berth-docker/<name>: reuses one
 * already answering on <dir>/docker.sock, otherwise starts one (root only).
 * The daemon is detached so that it may outlive the caller; stop() only
 * stops a daemon this call spawned, and leaves it running while another live
 * process (another test run sharing it) is registered in <dir>/users/<pid>.
 * dockerd output goes to <dir>/dockerd.log.
 *
 * `iptables`: let this dockerd manage iptables as a real host's Docker does
 * (isolation between its networks, NAT). Give such a daemon a name of its
 * own: a daemon already answering under `name` is reused as it was started.
 * It is started with the FORWARD policy left alone (see spawnDockerd).
 *
 * `usernsRemap`: start it with `--userns-remap=default` (containers' root is
 * dockremap's first subuid on the host; dockerd creates the user and its
 * /etc/subuid, /etc/subgid ranges). Give it a name of its own too.
 */
export async function startPrivateDockerd(name: string, opts: { iptables?: boolean; usernsRemap?: boolean } = {}): Promise<DockerEngine> {
  // The name ends up in a unix socket path (108-byte limit), a containerd
  // namespace and an interface name, so keep it short and plain.
  if (!/^[a-z0-9]+(?:[-_][a-z0-9]+)*$/i.test(name) || name.length > 32) {
    throw new Error(`invalid private dockerd name ${JSON.stringify(name)}: use [A-Za-z0-9_-], at most 32 chars`);
  }
  const dir = join(PRIVATE_ROOT, name);
  const users = join(dir, "users");
  await mkdir(users, { recursive: true });
  // Registered before the ping: a run that started this daemon and is stopping it sees this one first.
  const me = join(users, String(process.pid));
  await writeFile(me, "");
  const engine = await startOrReuse(name, dir, opts).catch(async (err: unknown) => {
    await rm(me, { force: true });
    throw err;
  });
  return {
    ...engine,
    // Several test runs (a helper's, a fresh clone's) may share one daemon: the run that started
    // it stops it only when no other live process is registered as using it.
    stop: async () => {
      await rm(me, { force: true });
      if (engine.ownedPid === undefined) return;
      const others = (await readdir(users)).map(Number).filter((pid) => Number.isInteger(pid) && pid !== process.pid && isAlive(pid));
      if (others.length > 0) {
        console.log(`[berth] leaving private dockerd pid ${engine.ownedPid} running: other processes use it (${others.join(", ")})`);
        return;
      }
      await engine.stop();
    },
  };
}

async function startOrReuse(name: string, dir: string, opts: { iptables?: boolean; usernsRemap?: boolean }): Promise<DockerEngine> {
  const socketPath = join(dir, "docker.sock");

  if (!(await pingError(socketPath))) return reusedEngine(socketPath);

  if (process.getuid?.() !== 0) {
    throw new Error(
      `cannot start a private dockerd at ${dir}: not running as root (uid ${process.getuid?.()}); ` +
        `start Docker yourself and set DOCKER_HOST`,
    );
  }

  await mkdir(dir, { recursive: true });
  const lock = await acquireStartLock(dir, socketPath);
  if (lock === "ready") return reusedEngine(socketPath);
  try {
    // Someone may have finished starting it while we waited for the lock.
    if (!(await pingError(socketPath))) return reusedEngine(socketPath);

    // A live dockerd holding our pidfile but not answering yet: a previous
    // run died while it was starting. Wait for it instead of racing it.
    const pidfilePid = await liveDockerdFromPidfile(join(dir, "docker.pid"));
    if (pidfilePid !== undefined) {
      const err = await waitForPing(socketPath, START_TIMEOUT_MS);
      if (!err) return reusedEngine(socketPath);
      throw new Error(
        `dockerd pid ${pidfilePid} (from ${dir}/docker.pid) is running but ${socketPath} ` +
          `did not answer within ${START_TIMEOUT_MS / 1000}s: ${err}`,
      );
    }

    return await spawnDockerd(name, dir, socketPath, opts.iptables ?? false, opts.usernsRemap ?? false);
  } finally {
    await lock();
  }
}

/**
 * Makes sure `tag` exists in the engine, building it when absent: a root
 * filesystem containing only Debian's static busybox (plus one symlink per
 * applet, /tmp, /data, /etc/passwd and /etc/group) imported like
 * `docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]'`.
 * No registry is involved, so this works offline.
 */
export async function ensureTestImage(docker: Dockerode, tag = TEST_IMAGE): Promise<void> {
  if (await imageExists(docker, tag)) return;

  const busybox = await ensureStaticBusybox();
  const work = await mkdtemp(join(tmpdir(), "berth-rootfs-"));
  try {
    const rootfs = join(work, "rootfs");
    for (const d of ["bin", "etc", "tmp", "data", "root"]) await mkdir(join(rootfs, d), { recursive: true });
    await chmod(join(rootfs, "tmp"), 0o1777);
    await copyFile(busybox, join(rootfs, "bin", "busybox"));
    await chmod(join(rootfs, "bin", "busybox"), 0o755);

    const list = await run(busybox, ["--list"]);
    if (list.code !== 0) throw new Error(`${busybox} --list failed: ${list.stderr}`);
    for (const applet of list.stdout.split("\n").map((s) => s.trim())) {
      if (applet && applet !== "busybox" && !applet.includes("/")) {
        await symlink("busybox", join(rootfs, "bin", applet));
      }
    }
    await writeFile(join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    await writeFile(join(rootfs, "etc", "group"), "root:x:0:\n");

    // Numeric root ownership so the image does not depend on who ran the build.
    const tarFile = join(work, "rootfs.tar");
    const tar = await run("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-cf", tarFile, "."]);
    if (tar.code !== 0) throw new Error(`tar of test rootfs failed: ${tar.stderr}`);

    const { repo, tag: version } = splitImageRef(tag);
    const stream = await docker.importImage(createReadStream(tarFile), {
      repo,
      tag: version,
      changes: ["ENV PATH=/bin", 'CMD ["/bin/sh"]'],
    });
    const events = await new Promise<Array<{ error?: string; errorDetail?: { message?: string } }>>(
      (resolve, reject) => docker.modem.followProgress(stream, (err, out) => (err ? reject(err) : resolve(out))),
    );
    // The import reports failures in-band, not as a stream error.
    const failed = events.find((e) => e.error || e.errorDetail);
    if (failed) throw new Error(`importing ${tag} failed: ${failed.error ?? failed.errorDetail?.message}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  if (!(await imageExists(docker, tag))) throw new Error(`imported ${tag} but the engine does not list it`);
}

/** A dockerode client for a "unix:///..." DOCKER_HOST value (independent of the environment). */
export function dockerClient(dockerHost: string): Dockerode {
  if (!dockerHost.startsWith("unix://")) throw new Error(`unsupported DOCKER_HOST ${dockerHost}: unix:// only`);
  return unixClient(dockerHost.slice("unix://".length));
}

/**
 * Force-removes the containers a test made: every one labelled
 * `berth.manager=<managerId>`, every one labelled `berth.server=<id>` for
 * `serverIds`, and `containerIds` (made by hand). Never throws, so an
 * afterAll's cleanup cannot replace the failure that matters with a 409;
 * what it could not list or remove is printed.
 */
export async function removeBerthContainers(
  docker: Dockerode,
  what: { managerId?: string; serverIds?: readonly string[]; containerIds?: readonly string[] },
): Promise<void> {
  const ids = new Set(what.containerIds ?? []);
  // An empty manager id must not become the filter "berth.manager": every berth container on the engine.
  const labels = [...(what.managerId ? [`berth.manager=${what.managerId}`] : []), ...(what.serverIds ?? []).map((id) => `berth.server=${id}`)];
  for (const label of labels) {
    try {
      for (const c of await docker.listContainers({ all: true, filters: { label: [label] } })) ids.add(c.Id);
    } catch (e) {
      console.warn(`[harness] could not list containers labelled ${label}: ${errorMessage(e)}`);
    }
  }
  for (const id of ids) {
    await docker
      .getContainer(id)
      .remove({ force: true })
      .catch((e: { statusCode?: number }) => {
        if (e.statusCode !== 404) console.warn(`[harness] could not remove container ${id}: ${errorMessage(e)}`);
      });
  }
}

/**
 * docker-modem merges $DOCKER_HOST, $DOCKER_CERT_PATH, $DOCKER_TLS_VERIFY and
 * $DOCKER_CLIENT_TIMEOUT into every client, and a tcp:// host silently wins
 * over socketPath; reset those so the socket we name is the one we talk to.
 */
function unixClient(socketPath: string, timeout?: number): Dockerode {
  const docker = new Docker({
    socketPath,
    host: undefined,
    port: undefined,
    protocol: "http",
    ca: undefined,
    cert: undefined,
    key: undefined,
    timeout,
  });
  // getContainer("") asks for /containers//json: Docker answers a 301 and docker-modem follows it to
  // http://containers/json, a DNS lookup whose failure is an uncaught exception in the test process
  // (a test polled a server whose container was being replaced: status.container_id ""). Refused here.
  const getContainer = docker.getContainer.bind(docker);
  docker.getContainer = (id: string) => {
    if (!id) throw new Error('getContainer(""): no container id (the server has no container right now)');
    return getContainer(id);
  };
  return docker;
}

// ---------------------------------------------------------------------------
// Private dockerd

async function spawnDockerd(name: string, dir: string, socketPath: string, iptables: boolean, usernsRemap = false): Promise<DockerEngine> {
  const dockerd = await ensureBinary("dockerd", "docker.io");
  const dockerInit = findBinary("docker-init", ["/usr/libexec/docker"]);
  if (!dockerInit) throw new Error(`docker-init not found (expected from docker.io/tini); containers with Init: true would fail`);
  const bridge = await ensureBridge(name);

  const args = [
    `--data-root=${join(dir, "data")}`,
    // Exec root holds containerd's sockets: must stay short (108-byte sun_path).
    `--exec-root=${join(dir, "exec")}`,
    `--host=unix://${socketPath}`,
    `--pidfile=${join(dir, "docker.pid")}`,
    // Our own bridge: dockerd only auto-creates "docker0", which a second
    // private dockerd or a system dockerd would fight over.
    `--bridge=${bridge}`,
    // Each dockerd flushes and rewrites the DOCKER iptables chains on start,
    // so several daemons would break each other (and the host firewall).
    // Not needed: 127.0.0.1 published ports are served by docker-proxy.
    // Only a daemon asked for (the network-isolation test) manages iptables.
    `--iptables=${iptables}`,
    "--ip6tables=false",
    // berth gives every project its own network per host. Docker's default pools hold
    // about 31 networks (172.17-31.x/16 and 192.168.x/20), which a full test run uses
    // up; /24s out of 10.96.0.0/12 make 4,096 (docs/install.md says the same for hosts).
    "--default-address-pool=base=10.96.0.0/12,size=24",
    "--userland-proxy=true",
    // Be explicit rather than rely on PATH lookup at container start.
    `--init-path=${dockerInit}`,
    // dockerd reuses a running system containerd if there is one; separate
    // namespaces keep our containers apart from any other dockerd's.
    `--containerd-namespace=berth-${name}`,
    `--containerd-plugins-namespace=berth-${name}-plugins`,
    ...(usernsRemap ? ["--userns-remap=default"] : []),
  ];

  const logPath = join(dir, "dockerd.log");
  const logFile = await open(logPath, "a");
  const logStart = (await logFile.stat()).size;
  await logFile.write(`\n=== ${new Date().toISOString()} berth harness: ${dockerd} ${args.join(" ")}\n`);

  let child: ChildProcess;
  try {
    // Detached: the daemon's lifetime is governed by stop(), not by the
    // process group of whoever started it (a crashed test run leaves it for
    // the next run to reuse).
    child = spawn(dockerd, args, {
      detached: true,
      stdio: ["ignore", logFile.fd, logFile.fd],
      env: { ...process.env, PATH: withSystemPath(process.env.PATH) },
    });
  } finally {
    await logFile.close();
  }
  child.unref();
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
    child.once("error", (err) => {
      exitInfo = `spawn error: ${err.message}`;
      resolve();
    });
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const err = await pingError(socketPath);
    if (!err) break;
    if (exitInfo) {
      throw new Error(`dockerd exited (${exitInfo}) before answering; tail of ${logPath}:\n${await tail(logPath, logStart)}`);
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(
        `dockerd did not answer on ${socketPath} within ${START_TIMEOUT_MS / 1000}s (${err}); ` +
          `killed it. Tail of ${logPath}:\n${await tail(logPath, logStart)}`,
      );
    }
    await Promise.race([sleep(250), exited]);
  }

  const pid = child.pid!;
  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    if (exitInfo) return;
    child.kill("SIGTERM");
    if (!(await settlesWithin(exited, STOP_TIMEOUT_MS))) {
      child.kill("SIGKILL");
      await settlesWithin(exited, 5_000);
      throw new Error(`dockerd pid ${pid} ignored SIGTERM for ${STOP_TIMEOUT_MS / 1000}s and was SIGKILLed; see ${logPath}`);
    }
  };
  return {
    socketPath,
    dockerHost: `unix://${socketPath}`,
    ownedPid: pid,
    stop: () => (stopping ??= stop()),
  };
}

function reusedEngine(socketPath: string): DockerEngine {
  return { socketPath, dockerHost: `unix://${socketPath}`, stop: async () => {} };
}

/**
 * Cross-process lock (atomic mkdir) so two test runs do not start two
 * daemons on one data root. Resolves to a release function, or to "ready"
 * when the socket started answering while we waited (someone else won).
 */
async function acquireStartLock(dir: string, socketPath: string): Promise<(() => Promise<void>) | "ready"> {
  const lockDir = join(dir, "start.lock");
  const deadline = Date.now() + START_TIMEOUT_MS + 10_000;
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(join(lockDir, "pid"), String(process.pid));
      return () => rm(lockDir, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    if (!(await pingError(socketPath))) return "ready";
    const owner = Number(await readFile(join(lockDir, "pid"), "utf8").catch(() => ""));
    const age = await stat(lockDir).then((s) => Date.now() - s.mtimeMs, () => 0);
    // Stale: the holder died, or never wrote its pid and is long gone.
    if ((owner > 0 && !isAlive(owner)) || (!owner && age > 5_000)) {
      await rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${lockDir} (held by pid ${owner || "?"}) to start dockerd`);
    }
    await sleep(250);
  }
}

async function liveDockerdFromPidfile(pidfile: string): Promise<number | undefined> {
  const pid = Number((await readFile(pidfile, "utf8").catch(() => "")).trim());
  if (!(pid > 0) || !isAlive(pid)) return undefined;
  // A recycled PID belonging to something else makes the pidfile stale;
  // dockerd would refuse to start on it, so drop it.
  const comm = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim();
  if (comm === "dockerd") return pid;
  await rm(pidfile, { force: true });
  return undefined;
}

// ---------------------------------------------------------------------------
// Bridge per private dockerd

let bridgeMutex: Promise<unknown> = Promise.resolve();

/**
 * Creates (or reuses) bridge "berth-<name>" with a free 10.213.X.1/24.
 * dockerd never creates a bridge other than docker0 itself, so we must.
 * Serialized in-process so parallel startPrivateDockerd calls pick
 * different subnets; the scan starts at a name-derived X so that
 * different names in different processes rarely even compete.
 */
async function ensureBridge(name: string): Promise<string> {
  const result = bridgeMutex.then(() => ensureBridgeUnlocked(name));
  bridgeMutex = result.catch(() => undefined);
  return result;
}

async function ensureBridgeUnlocked(name: string): Promise<string> {
  const ip = await ensureBinary("ip", "iproute2");
  const hash = createHash("sha256").update(name).digest();
  // Interface names are limited to 15 characters.
  const bridge = `berth-${name}`.length <= 15 && /^[a-z0-9-]+$/.test(name) ? `berth-${name}` : `berth-${hash.toString("hex").slice(0, 8)}`;

  const exists = (await run(ip, ["link", "show", "dev", bridge])).code === 0;
  if (!exists) {
    const add = await run(ip, ["link", "add", "name", bridge, "type", "bridge"]);
    if (add.code !== 0 && !/exists/i.test(add.stderr)) throw new Error(`ip link add ${bridge} failed: ${add.stderr.trim()}`);
  }
  const own = await run(ip, ["-4", "-o", "addr", "show", "dev", bridge]);
  if (!/\binet /.test(own.stdout)) {
    const used = await usedIpv4Networks(ip);
    const start = hash[0]! % 254;
    let chosen: string | undefined;
    for (let i = 0; i < 254 && !chosen; i++) {
      const x = 1 + ((start + i) % 254);
      const net = `${BRIDGE_NET_PREFIX[0]}.${BRIDGE_NET_PREFIX[1]}.${x}.0/24`;
      if (!used.some((u) => cidrOverlap(u, net))) chosen = `${BRIDGE_NET_PREFIX[0]}.${BRIDGE_NET_PREFIX[1]}.${x}.1/24`;
    }
    if (!chosen) throw new Error(`no free /24 in ${BRIDGE_NET_PREFIX.join(".")}.0.0/16 for bridge ${bridge}`);
    const add = await run(ip, ["addr", "add", chosen, "dev", bridge]);
    if (add.code !== 0) throw new Error(`ip addr add ${chosen} dev ${bridge} failed: ${add.stderr.trim()}`);
  }
  const up = await run(ip, ["link", "set", "dev", bridge, "up"]);
  if (up.code !== 0) throw new Error(`ip link set ${bridge} up failed: ${up.stderr.trim()}`);
  return bridge;
}

/** IPv4 networks already in use on this host: interface addresses and routes. */
async function usedIpv4Networks(ip: string): Promise<string[]> {
  const nets: string[] = [];
  for (const line of (await run(ip, ["-4", "-o", "addr", "show"])).stdout.split("\n")) {
    const m = line.match(/\binet (\d+\.\d+\.\d+\.\d+\/\d+)/);
    if (m) nets.push(m[1]!);
  }
  // Route lines start with the destination, optionally after a type
  // ("local", "broadcast", ...); bare addresses are host routes.
  for (const line of (await run(ip, ["-4", "route", "show", "table", "all"])).stdout.split("\n")) {
    const m = line.match(/^(?:[a-z]+\s+)?(\d+\.\d+\.\d+\.\d+)(\/\d+)?\s/);
    if (m) nets.push(`${m[1]}${m[2] ?? "/32"}`);
  }
  return nets;
}

function cidrOverlap(a: string, b: string): boolean {
  const parse = (c: string): [number, number] => {
    const [addr, len] = c.split("/");
    const n = addr!.split(".").reduce((acc, o) => (acc << 8) | Number(o), 0) >>> 0;
    return [n, Number(len)];
  };
  const [na, la] = parse(a);
  const [nb, lb] = parse(b);
  const len = Math.min(la, lb);
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  return ((na & mask) >>> 0) === ((nb & mask) >>> 0);
}

// ---------------------------------------------------------------------------
// Test image helpers

async function imageExists(docker: Dockerode, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) return false;
    throw e;
  }
}

function splitImageRef(ref: string): { repo: string; tag: string } {
  const colon = ref.lastIndexOf(":");
  // A colon before the last "/" belongs to a registry host:port, not a tag.
  if (colon > ref.lastIndexOf("/")) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref, tag: "latest" };
}

/**
 * Path of a statically linked busybox, installing busybox-static if needed.
 * A dynamically linked busybox (Debian's "busybox" package) would fail in
 * the otherwise empty image with a confusing "no such file or directory".
 */
async function ensureStaticBusybox(): Promise<string> {
  const candidates = () => [findBinary("busybox"), "/bin/busybox", "/usr/bin/busybox"].filter((p): p is string => !!p);
  for (const p of candidates()) if (existsSync(p) && (await isStaticElf(p))) return p;
  if (process.getuid?.() !== 0) throw new Error("no statically linked busybox found and not root to apt-get install busybox-static");
  await aptInstall(["busybox-static"]);
  for (const p of candidates()) if (existsSync(p) && (await isStaticElf(p))) return p;
  throw new Error("installed busybox-static but found no statically linked busybox in /bin or /usr/bin");
}

/** True for an ELF executable without a PT_INTERP program header (i.e. no dynamic loader). */
async function isStaticElf(path: string): Promise<boolean> {
  const buf = await readFile(path);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = buf[4] === 2;
  const le = buf[5] === 1;
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const phoff = is64 ? Number(le ? buf.readBigUInt64LE(0x20) : buf.readBigUInt64BE(0x20)) : u32(0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > buf.length) return false;
    if (u32(off) === PT_INTERP) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Process / system helpers

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: env ?? process.env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === 127 ? err.message : "") });
    });
  });
}

function withSystemPath(path: string | undefined): string {
  const dirs = (path ?? "").split(delimiter).filter(Boolean);
  for (const d of SYSTEM_BIN_DIRS) if (!dirs.includes(d)) dirs.push(d);
  return dirs.join(delimiter);
}

function findBinary(name: string, extraDirs: string[] = []): string | undefined {
  for (const dir of [...withSystemPath(process.env.PATH).split(delimiter), ...extraDirs]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** Path of `name`, apt-installing `pkg` first if it is missing (root only): e.g. zstd for the archive tests. */
export async function ensureBinary(name: string, pkg: string): Promise<string> {
  const found = findBinary(name);
  if (found) return found;
  await aptInstall([pkg]);
  const installed = findBinary(name);
  if (!installed) throw new Error(`apt-get installed ${pkg} but ${name} is still not on PATH`);
  return installed;
}

/** apt-get install, retrying once after `apt-get update` (fresh images have no package lists). */
async function aptInstall(pkgs: string[]): Promise<void> {
  const aptGet = findBinary("apt-get");
  if (!aptGet) throw new Error(`${pkgs.join(", ")} missing and apt-get is not available to install it`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive", PATH: withSystemPath(process.env.PATH) };
  const install = () => run(aptGet, ["install", "-y", ...pkgs], env);
  let res = await install();
  if (res.code === 0) return;
  const update = await run(aptGet, ["update"], env);
  if (update.code === 0) res = await install();
  if (res.code !== 0) {
    const out = `${update.code !== 0 ? update.stderr : ""}\n${res.stdout}\n${res.stderr}`.trim();
    throw new Error(`apt-get install -y ${pkgs.join(" ")} failed (code ${res.code}):\n${lastLines(out, 20)}`);
  }
}

/** Error text if the engine at socketPath does not answer a ping, undefined if it does. */
async function pingError(socketPath: string): Promise<string | undefined> {
  if (!existsSync(socketPath)) return "no socket";
  try {
    await unixClient(socketPath, PING_TIMEOUT_MS).ping();
    return undefined;
  } catch (e) {
    return errorMessage(e);
  }
}

async function waitForPing(socketPath: string, timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  let err = await pingError(socketPath);
  while (err && Date.now() < deadline) {
    await sleep(250);
    err = await pingError(socketPath);
  }
  return err;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function tail(path: string, fromOffset: number, lines = 40): Promise<string> {
  const text = (await readFile(path).catch(() => Buffer.alloc(0))).subarray(fromOffset).toString("utf8");
  return lastLines(text, lines);
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Whether `p` settles within `ms`; the timer is cleared so it never holds the process open. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
