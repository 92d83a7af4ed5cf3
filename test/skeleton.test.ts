/**
 * The walking skeleton, end to end: a real manager process and a real agent
 * process against a real Docker engine. Enroll → create a server with a data
 * mount and a published port → Running → labels and data dir on the host →
 * Stop → Stopped. Then the same API through buf curl (reflection) and
 * Connect JSON over plain HTTP/1.1, as operators' scripts would call it.
 */
import { execFile } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { Phase } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, TEST_IMAGE } from "./harness/docker-engine.js";
import { REPO_ROOT, startAgent, startManager, tempDir, waitFor, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const run = promisify(execFile);
const BUF = join(REPO_ROOT, "node_modules/.bin/buf");

describe("walking skeleton: manager + agent + Docker", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  const created: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("skeleton");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    // Force-remove every container this test's servers created.
    for (const id of created) {
      const list = await docker.listContainers({ all: true, filters: { label: [`berth.server=${id}`] } });
      for (const c of list) await docker.getContainer(c.Id).remove({ force: true });
    }
  });

  it("the enrolled host comes online with its facts", async () => {
    const host = await waitFor("host online", async () => {
      const { hosts } = await manager.hosts.listHosts({});
      return hosts.find((h) => h.state === HostState.ONLINE);
    });
    expect(host.dockerVersion).not.toBe("");
    expect(host.dataRoot).toBe(agent.dataRoot);
    expect(host.cpuCount).toBeGreaterThan(0);
    expect(host.dockerReachable).toBe(true);
  });

  it("creates a server that reaches Running with its container, labels, data dir and port", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const name = `web-${Date.now().toString(36)}`;
    const { server } = await manager.servers.createServer({
      spec: {
        name,
        image: TEST_IMAGE,
        command: ["httpd", "-f", "-p", "8080", "-h", "/srv"],
        ports: [{ hostPort: port, containerPort: 8080 }],
        dataMountPath: "/srv",
        env: { GREETING: "hi" },
      },
    });
    expect(server).toBeDefined();
    created.push(server!.id);

    const running = await waitForPhase(manager, server!.id, Phase.RUNNING);
    expect(running.status!.conditions.find((c) => c.type === "Ready")?.reason).toBe("Running");
    const containerId = running.status!.containerId;
    expect(containerId).toMatch(/^[0-9a-f]{64}$/);

    // The container really exists, carries berth's identity labels and runs with an init.
    const info = await docker.getContainer(containerId).inspect();
    expect(info.State.Running).toBe(true);
    expect(info.Config.Labels["berth.server"]).toBe(server!.id);
    expect(info.Config.Labels["berth.manager"]).toMatch(/^mgr_/);
    expect(info.Config.Labels["berth.generation"]).toBe("1");
    expect(info.Config.Labels["berth.spec-hash"]).toMatch(/^[0-9a-f]{16}$/);
    expect(info.HostConfig.Init).toBe(true);
    expect(info.HostConfig.RestartPolicy?.Name).toBe("no");
    expect(info.Config.Env).toContain("GREETING=hi");

    // The data directory exists on the host and is what the container serves.
    const dataDir = join(agent.dataRoot, server!.id);
    expect(existsSync(dataDir)).toBe(true);
    writeFileSync(join(dataDir, "index.html"), "served from the data dir\n");
    const body = await waitFor("http reply", () => httpGet(`http://127.0.0.1:${port}/index.html`));
    expect(body).toBe("served from the data dir\n");

    // Stop: desired state recorded at once, observed Stopped once Docker says so.
    const { server: stopping } = await manager.servers.stopServer({ id: server!.id });
    expect(stopping!.spec!.desiredState).toBe(3 /* STOPPED */);
    await waitForPhase(manager, server!.id, Phase.STOPPED);
    expect((await docker.getContainer(containerId).inspect()).State.Running).toBe(false);
    expect(existsSync(dataDir)).toBe(true);
    expect(await portOpen(port)).toBe(false);

    // Start again: the same container and data come back.
    await manager.servers.startServer({ id: name });
    const again = await waitForPhase(manager, server!.id, Phase.RUNNING);
    expect(again.status!.containerId).toBe(containerId);
    expect(await waitFor("http reply", () => httpGet(`http://127.0.0.1:${port}/index.html`))).toBe("served from the data dir\n");
  });

  it("refuses bad input with precise codes and changes nothing", async () => {
    const before = (await manager.servers.listServers({})).servers.length;
    const bad = async (spec: object) => {
      try {
        await manager.servers.createServer({ spec });
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      }
    };
    const e1 = await bad({ name: "Bad Name", image: TEST_IMAGE });
    expect(e1?.code).toBe(Code.InvalidArgument);
    expect(e1?.rawMessage).toContain("spec.name");
    const e2 = await bad({ name: "ok", image: "" });
    expect(e2?.code).toBe(Code.InvalidArgument);
    expect(e2?.rawMessage).toContain("spec.image");
    const e3 = await bad({ name: "ok", image: TEST_IMAGE, hostId: "host_doesnotexist" });
    expect(e3?.code).toBe(Code.NotFound);
    const e4 = await manager.servers.getServer({ id: "srv_nope" }).catch((e: unknown) => ConnectError.from(e));
    expect((e4 as ConnectError).code).toBe(Code.NotFound);
    expect((await manager.servers.listServers({})).servers.length).toBe(before);
  });

  it("rejects a second server publishing the same host port, naming the conflict", async () => {
    const port = 40000 + Math.floor(Math.random() * 10000);
    const { server } = await manager.servers.createServer({
      spec: { name: `a-${Date.now().toString(36)}`, image: TEST_IMAGE, command: ["sleep", "3600"], ports: [{ hostPort: port, containerPort: 1 }], desiredState: 3 },
    });
    created.push(server!.id);
    const err = await manager.servers
      .createServer({ spec: { name: `b-${Date.now().toString(36)}`, image: TEST_IMAGE, ports: [{ hostPort: port, containerPort: 1 }] } })
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((err as ConnectError).rawMessage).toContain(`host port ${port}/tcp is used by server "${server!.spec!.name}" (try ${port + 1})`);
  });

  it("is scriptable with buf curl through server reflection", async () => {
    const list = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", manager.url]);
    expect(list.stdout.split("\n")).toEqual(expect.arrayContaining(["berth.v1.ServerService", "berth.v1.HostService", "grpc.health.v1.Health"]));
    const res = await run(BUF, [
      "curl", "--protocol", "grpc", "--http2-prior-knowledge",
      "-H", `authorization: Bearer ${manager.adminToken}`,
      "-d", "{}", `${manager.url}/berth.v1.ServerService/ListServers`,
    ]);
    const parsed = JSON.parse(res.stdout) as { servers: { spec: { name: string } }[] };
    expect(parsed.servers.length).toBeGreaterThanOrEqual(2);
    const health = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", `${manager.url}/grpc.health.v1.Health/Check`]);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
  });

  it("speaks Connect JSON over plain HTTP/1.1, as curl would", async () => {
    const ok = await postJson(`${manager.url}/berth.v1.ServerService/ListServers`, "{}", manager.adminToken);
    expect(ok.status).toBe(200);
    expect((JSON.parse(ok.body) as { servers: unknown[] }).servers.length).toBeGreaterThanOrEqual(2);
    const bad = await postJson(`${manager.url}/berth.v1.ServerService/GetServer`, '{"id":"srv_missing"}', manager.adminToken);
    expect(bad.status).toBe(404);
    expect(JSON.parse(bad.body)).toMatchObject({ code: "not_found" });
    const notJson = await postJson(`${manager.url}/berth.v1.ServerService/CreateServer`, '{"spec":{"name":5}}', manager.adminToken);
    expect(notJson.status).toBe(400);
    expect(JSON.parse(notJson.body)).toMatchObject({ code: "invalid_argument" });
    // The dashboard's files come from the same port.
    const page = await httpGet(`${manager.url}/`);
    expect(page).toContain("<title>berth</title>");
  });
});

function httpGet(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request(url, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve(res.statusCode === 200 ? body : undefined));
    });
    req.on("error", () => resolve(undefined));
    req.setTimeout(2000, () => req.destroy());
    req.end();
  });
}

function postJson(url: string, body: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` } }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
