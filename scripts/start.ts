/**
 * `npm start`: a complete local berth on this machine — a Docker engine (the
 * local one, or a private dockerd started as root), the manager with its
 * SQLite file under ./data, and an agent enrolled against it. Prints the
 * dashboard URL and how to talk to the API. Ctrl-C stops what it started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { dockerClient, ensureDockerEngine, ensureTestImage, TEST_IMAGE } from "../test/harness/docker-engine.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const dataDir = join(root, "data");
const listenAddr = process.env.BERTH_LISTEN ?? "127.0.0.1:7000";
const stateDir = join(dataDir, "agent");
const children: ChildProcess[] = [];
mkdirSync(dataDir, { recursive: true });

/** Starts `node --import tsx script`; its JSON logs are appended to data/<logName>.log. */
function node(script: string, args: string[], logName: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, ["--import", "tsx", join(root, script), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = createWriteStream(join(dataDir, `${logName}.log`), { flags: "a" });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  children.push(child);
  return child;
}

function stopAll(code: number): never {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  process.exit(code);
}
process.on("SIGINT", () => stopAll(0));
process.on("SIGTERM", () => stopAll(0));

const engine = await ensureDockerEngine();
await ensureTestImage(dockerClient(engine.dockerHost));
console.log(`[berth] Docker engine: ${engine.dockerHost}`);

const manager = node("manager/src/main.ts", ["--listen", listenAddr, "--db", join(dataDir, "berth.db")], "manager");
const url = await new Promise<string>((resolve, reject) => {
  let buf = "";
  manager.stdout!.on("data", (d: Buffer) => {
    const text = d.toString();
    buf += text;
    const m = /berth-manager ready url=(\S+)/.exec(buf);
    if (m) resolve(m[1]!);
  });
  manager.once("exit", (code) => reject(new Error(`the manager exited with code ${code}; is ${listenAddr} already in use? Set BERTH_LISTEN=127.0.0.1:PORT`)));
});

// Enroll the local agent once; enroll again if the database no longer knows it.
const hosts = createClient(HostService, createGrpcTransport({ baseUrl: url }));
const credFile = join(stateDir, "credentials.json");
const known = existsSync(credFile) ? (JSON.parse(readFileSync(credFile, "utf8")) as { hostId: string; managerUrl: string }) : undefined;
const { hosts: list } = await hosts.listHosts({});
if (!known || known.managerUrl !== url || !list.some((h) => h.id === known.hostId)) {
  const { token } = await hosts.createEnrollmentToken({ ttlSeconds: 300 });
  const enroll = node("agent/src/main.ts", ["enroll", "--manager", url, "--token", token, "--state-dir", stateDir], "agent");
  const code = await new Promise<number | null>((r) => enroll.once("exit", r));
  if (code !== 0) stopAll(1);
}
const agent = node("agent/src/main.ts", ["run", "--state-dir", stateDir, "--data-root", join(dataDir, "servers")], "agent", {
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

console.log(`
berth is running.

  Dashboard:   ${url}/
  API:         ${url}  (gRPC, gRPC-Web and Connect on one port; reflection on)
  Admin token: none yet — access control is not enabled in this build; the API is open on ${listenAddr}
  Database:    ${join(dataDir, "berth.db")}
  Data root:   ${join(dataDir, "servers")}

Try it (buf is in node_modules/.bin):
  npx buf curl --protocol grpc --http2-prior-knowledge --list-services ${url}
  npx buf curl --protocol grpc --http2-prior-knowledge \\
    -d '{"spec":{"name":"hello","image":"${TEST_IMAGE}","command":["httpd","-f","-p","8080","-h","/data"],"ports":[{"hostPort":18080,"containerPort":8080}]}}' \\
    ${url}/berth.v1.ServerService/CreateServer
  curl -s -H 'content-type: application/json' -d '{"id":"hello"}' ${url}/berth.v1.ServerService/GetServer

Logs (JSON): ${join(dataDir, "manager.log")} and ${join(dataDir, "agent.log")}. Ctrl-C stops both.
`);
