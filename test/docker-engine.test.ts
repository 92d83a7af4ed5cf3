/**
 * Proves the integration harness: the engine from global setup can run the
 * local test image with docker-init as PID 1, a bind mount and a port
 * published on 127.0.0.1.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import type Dockerode from "dockerode";
import { dockerClient, TEST_IMAGE } from "./harness/docker-engine.js";
import { testDockerHost } from "./harness/engine.js";

const dockerHost = testDockerHost();
const docker = dockerClient(dockerHost);
const suffix = randomBytes(4).toString("hex");

let hostDir: string | undefined;
let container: Dockerode.Container | undefined;

afterAll(async () => {
  await container?.remove({ force: true, v: true }).catch((e: { statusCode?: number }) => {
    if (e.statusCode !== 404) throw e;
  });
  if (hostDir) await rm(hostDir, { recursive: true, force: true });
});

describe("docker test harness", () => {
  it("gives this worker an engine of its own, in env and through testDockerHost()", () => {
    expect(dockerHost).toMatch(/^unix:\/\//);
    expect(process.env.DOCKER_HOST).toBe(dockerHost);
    const hosts = inject("dockerHosts");
    expect(hosts).toContain(dockerHost);
    expect(new Set(hosts).size).toBe(hosts.length);
  });

  it("runs a container with init, a bind mount and a published port", async () => {
    hostDir = await mkdtemp(join(tmpdir(), "berth-harness-"));
    container = await docker.createContainer({
      name: `berth-harness-test-${suffix}`,
      Image: TEST_IMAGE,
      // `nc -ll` keeps listening after each connection; `exec` leaves nc as
      // the only child of docker-init, which forwards SIGTERM to it.
      Cmd: ["sh", "-c", "echo hello from container > /data/hello.txt; exec nc -ll -p 8080 -e echo hi"],
      ExposedPorts: { "8080/tcp": {} },
      HostConfig: {
        Init: true,
        Binds: [`${hostDir}:/data`],
        PortBindings: { "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] },
      },
    });
    await container.start();

    const helloPath = join(hostDir, "hello.txt");
    await waitFor(() => existsSync(helloPath), "the container to write /data/hello.txt");
    expect(await readFile(helloPath, "utf8")).toBe("hello from container\n");

    const info = await container.inspect();
    const hostPort = Number(info.NetworkSettings.Ports["8080/tcp"]?.[0]?.HostPort);
    expect(hostPort).toBeGreaterThan(0);
    // docker-proxy accepts before nc is listening and then just closes, so
    // retry until a connection actually yields the reply.
    let reply = "";
    await waitFor(async () => (reply = await readReply(hostPort)).includes("hi"), `a reply on 127.0.0.1:${hostPort}`);
    expect(reply).toBe("hi\n");

    const t0 = Date.now();
    await container.stop({ t: 10 });
    const stopMs = Date.now() - t0;
    expect(stopMs).toBeLessThan(3_000);
    expect((await container.inspect()).State.Running).toBe(false);
  });
});

function readReply(port: number): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const socket = connect({ host: "127.0.0.1", port });
    socket.setTimeout(2_000, () => socket.destroy());
    socket.on("data", (chunk) => (data += chunk.toString()));
    socket.on("close", () => resolve(data));
    socket.on("error", () => undefined);
  });
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
