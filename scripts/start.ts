/**
 * `npm start`: a complete local berth on this machine — a Docker engine (the
 * local one, or a private dockerd started as root), the manager with its
 * SQLite file under ./data, and an agent enrolled against it. Prints the
 * dashboard URL, an admin token and how to talk to the API. Ctrl-C stops what
 * it started.
 *
 * The admin token: the manager prints one on its first start only and keeps
 * just its hash. Like a CLI's login file, this launcher keeps a copy in
 * data/admin-token (mode 0600) so it can enroll its agent and show the token
 * on every start. When that copy is missing or no longer works (revoked, or a
 * new database), it makes a new admin token "npm-start" with the recovery CLI
 * (`berth-manager token create`), which works on the database directly.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Transform } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { dockerClient, ensureDockerEngine, ensureTestImage, TEST_IMAGE } from "../test/harness/docker-engine.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const dataDir = join(root, "data");
const listenAddr = process.env.BERTH_LISTEN ?? "127.0.0.1:7000";
const sftpAddr = process.env.BERTH_SFTP_LISTEN ?? "127.0.0.1:2022";
const stateDir = join(dataDir, "agent");
const dbPath = join(dataDir, "berth.db");
const tokenFile = join(dataDir, "admin-token");
const children: ChildProcess[] = [];
// The database, the admin token and every server's data live here: private to this user.
mkdirSync(dataDir, { recursive: true, mode: 0o700 });
chmodSync(dataDir, 0o700);

/** Starts `node --import tsx script`; its JSON logs are appended to data/<logName>.log. */
function node(script: string, args: string[], logName: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", join(root, script), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = createWriteStream(join(dataDir, `${logName}.log`), { flags: "a" });
  // Token secrets never go to the log files.
  child.stdout!.pipe(redactTokens()).pipe(log);
  child.stderr!.pipe(redactTokens()).pipe(log);
  children.push(child);
  return child;
}

function stopAll(code: number): never {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  process.exit(code);
}
const stopAsked = (signal: string) => {
  console.log(`\n[berth] ${signal}: stopping the manager and the agent. The servers' containers keep running and the Docker engine stays up; the next npm start picks them up.`);
  stopAll(0);
};
process.on("SIGINT", () => stopAsked("Ctrl-C"));
process.on("SIGTERM", () => stopAsked("SIGTERM"));

// The dashboard the manager serves from web/dist: rebuilt on every start (about a second).
await promisify(execFile)("npm", ["run", "--silent", "build:web"], { cwd: root });
const engine = await ensureDockerEngine();
await ensureTestImage(dockerClient(engine.dockerHost));
console.log(
  engine.ownedPid !== undefined
    ? `[berth] Docker engine: started a private dockerd (pid ${engine.ownedPid}) on ${engine.dockerHost}; it stays up after Ctrl-C, for the next start`
    : `[berth] Docker engine: using the one already answering on ${engine.dockerHost} (not started here; Ctrl-C leaves it alone)`,
);

const manager = node("manager/src/main.ts", ["--listen", listenAddr, "--db", dbPath, "--sftp-listen", sftpAddr], "manager");
const { url, firstToken, sftp } = await new Promise<{ url: string; firstToken?: string; sftp?: string }>((resolve, reject) => {
  let buf = "";
  manager.stdout!.on("data", (d: Buffer) => {
    const text = d.toString();
    buf += text;
    const m = /berth-manager ready url=(\S+)/.exec(buf);
    const t = /berth-manager admin-token=(\S+)/.exec(buf);
    const f = /berth-manager sftp=(\S+) host-key=(\S+)/.exec(buf);
    if (m) resolve({ url: m[1]!, ...(t ? { firstToken: t[1]! } : {}), ...(f ? { sftp: `${f[1]} (host key ${f[2]})` } : {}) });
  });
  manager.once("exit", (code) => reject(new Error(`the manager exited with code ${code}; is ${listenAddr} or ${sftpAddr} already in use? Set BERTH_LISTEN=127.0.0.1:PORT or BERTH_SFTP_LISTEN=127.0.0.1:PORT`)));
});

const adminToken = await adminTokenFor(url, firstToken);
// Enroll the local agent once; enroll again if the database no longer knows it.
const hosts = createClient(HostService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(adminToken.token)] }));
const credFile = join(stateDir, "credentials.json");
const known = existsSync(credFile) ? (JSON.parse(readFileSync(credFile, "utf8")) as { hostId: string; managerUrl: string }) : undefined;
const { hosts: list } = await hosts.listHosts({});
if (!known || known.managerUrl !== url || !list.some((h) => h.id === known.hostId)) {
  const { token } = await hosts.createEnrollmentToken({ ttlSeconds: 300 });
  const enroll = node("agent/src/main.ts", ["enroll", "--manager", url, "--token", token, "--state-dir", stateDir], "agent");
  const code = await new Promise<number | null>((r) => enroll.once("exit", r));
  if (code !== 0) stopAll(1);
}
const backupDir = join(dataDir, "backups");
const agent = node("agent/src/main.ts", ["run", "--state-dir", stateDir, "--data-root", join(dataDir, "servers"), "--backup-dir", backupDir], "agent", {
  DOCKER_HOST: engine.dockerHost,
});
agent.once("exit", (code) => {
  console.error(`[berth] the agent exited with code ${code}; stopping`);
  stopAll(1);
});
manager.once("exit", (code) => {
  console.error(`[berth] the manager exited with code ${code}; stopping`);
  stopAll(1);
});

// A backup target to start with: the local agent's backup directory (BackupService; docs/data.md).
const backupTargets = createClient(BackupService, createGrpcTransport({ baseUrl: url, interceptors: [bearer(adminToken.token)] }));
if ((await backupTargets.listBackupTargets({})).targets.length === 0) {
  await backupTargets.createBackupTarget({ name: "local", kind: { case: "directory", value: { path: backupDir, shared: false } } });
}

console.log(`
berth is running.

  Dashboard:   ${url}/
  API:         ${url}  (gRPC, gRPC-Web and Connect on one port; reflection on)
  Probes:      ${url}/readyz, ${url}/metrics (Prometheus; docs/metrics.md)
  SFTP:        ${sftp ?? sftpAddr}
               (user <server>.<project>, password a token: sftp -P ${sftpAddr.split(":").pop()} hello.default@127.0.0.1)
  Admin token: ${adminToken.token}
               (${adminToken.how}; a copy is kept in ${tokenFile}, mode 0600)
  Database:    ${dbPath}
  Data root:   ${join(dataDir, "servers")}
  Backups:     ${backupDir} (backup target "local")

Try it (buf is in node_modules/.bin):
  export BERTH_TOKEN=$(cat ${tokenFile})
  npx buf curl --protocol grpc --http2-prior-knowledge --list-services ${url}
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $BERTH_TOKEN" \\
    -d '{"spec":{"name":"hello","image":"${TEST_IMAGE}","command":["httpd","-f","-p","8080","-h","/data"],"ports":[{"hostPort":18090,"containerPort":8080}]}}' \\
    ${url}/berth.v1.ServerService/CreateServer
  curl -s -H "authorization: Bearer $BERTH_TOKEN" -H 'content-type: application/json' -d '{"id":"hello"}' ${url}/berth.v1.ServerService/GetServer

Logs (JSON): ${join(dataDir, "manager.log")} and ${join(dataDir, "agent.log")}. Ctrl-C stops both.
`);

/**
 * The admin token this launcher uses: the one the manager printed on its first
 * start, else the saved copy if it still works, else a new one made with the
 * recovery CLI. Whatever it is, the copy in data/admin-token is updated.
 */
async function adminTokenFor(baseUrl: string, printed: string | undefined): Promise<{ token: string; how: string }> {
  const save = (token: string, how: string) => {
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    return { token, how };
  };
  if (printed) return save(printed, "printed by the manager on its first start");
  if (existsSync(tokenFile)) {
    const saved = readFileSync(tokenFile, "utf8").trim();
    const access = createClient(AccessService, createGrpcTransport({ baseUrl, interceptors: [bearer(saved)] }));
    try {
      const { token } = await access.whoAmI({});
      if (token && token.role === Role.ADMIN && token.project === "") return { token: saved, how: `token "${token.name}" saved by an earlier npm start` };
    } catch (err) {
      if (ConnectError.from(err).code !== Code.Unauthenticated) throw err;
    }
  }
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", join(root, "manager/src/main.ts"), "token", "create", "--role", "admin", "--name", "npm-start", "--db", dbPath],
    { cwd: root },
  );
  return save(stdout.trim(), "made now with `berth-manager token create --role admin --name npm-start`");
}

/** Sends `authorization: Bearer <token>` on every call. */
function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Replaces token secrets (brt_...) in a log stream, line by line. */
function redactTokens(): Transform {
  let rest = "";
  const redact = (s: string) => s.replace(/brt_[A-Za-z0-9_-]+/g, "brt_[redacted]");
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      const text = rest + chunk.toString();
      const cut = text.lastIndexOf("\n") + 1;
      rest = text.slice(cut);
      done(null, redact(text.slice(0, cut)));
    },
    flush(done) {
      done(null, redact(rest));
    },
  });
}
