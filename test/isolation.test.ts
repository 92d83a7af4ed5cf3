/**
 * Project isolation on a real Docker engine that manages iptables, as Docker
 * on a real host does: every project gets its own bridge network per host, so
 * a container of project alpha reaches alpha's other servers by name and
 * nothing of project beta (neither by beta's IP nor by name) unless beta
 * publishes a port. The network goes with the project's last server on the
 * host; one left behind is listed (and destroyed) by OrphanService.
 *
 * The shared test engine runs with --iptables=false (several private
 * dockerds side by side), where nothing isolates bridge networks from each
 * other; this file starts a private dockerd "isolation" with iptables on
 * (or uses a system engine, which manages iptables by default).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "@connectrpc/connect";
import { OrphanKind, OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { Phase, Protocol, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, ensureTestImage, removeBerthContainers, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./harness/docker-engine.js";
import { freePorts, removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const run = promisify(execFile);
const SLEEPER = ["sh", "-c", "exec sleep 100000"];
/** An HTTP server on port 8080 answering `body`. */
const httpd = (body: string) => ["sh", "-c", `mkdir -p /tmp/www && echo ${body} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`];
const GRACE_S = 2;

describe("project isolation on Docker with iptables", () => {
  let engine: DockerEngine;
  let docker: Docker;
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let orphans: Client<typeof OrphanService>;
  const tag = Date.now().toString(36);
  const alpha = `alpha-${tag}`;
  const beta = `beta-${tag}`;
  let web: Server;
  let probe: Server;
  let secret: Server;
  let webPort: number;

  beforeAll(async () => {
    const shared = testDockerHost();
    // The harness's private engines run without iptables: use one that has it.
    engine = shared.includes("/tmp/berth-docker/") ? await startPrivateDockerd("isolation", { iptables: true }) : { socketPath: shared.replace(/^unix:\/\//, ""), dockerHost: shared, stop: async () => {} };
    docker = dockerClient(engine.dockerHost);
    await ensureTestImage(docker);
    dir = await tempDir("isolation");
    manager = await startManager({ dir, args: ["--orphan-grace", String(GRACE_S)] });
    agent = await startAgent({ manager, dir, dockerHost: engine.dockerHost });
    await waitForHostOnline(manager);
    orphans = createClient(OrphanService, manager.transport(manager.adminToken));

    webPort = (await freePorts(1))[0]!;
    const make = async (project: string, name: string, command: string[], ports: { hostPort: number; containerPort: number }[] = []) => {
      const { server } = await manager.servers.createServer({
        project,
        spec: { name, image: TEST_IMAGE, command, ports: ports.map((p) => ({ ...p, protocol: Protocol.TCP })) },
      });
      return server!;
    };
    const made = [
      await make(alpha, "web", httpd(`alpha-web-${tag}`), [{ hostPort: webPort, containerPort: 8080 }]),
      await make(alpha, "probe", SLEEPER),
      await make(beta, "secret", httpd(`beta-secret-${tag}`)),
    ];
    [web, probe, secret] = await Promise.all(made.map((s) => waitForPhase(manager, s.id, Phase.RUNNING, 60_000)));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    // Only what this run's manager made: the engine may be a developer's own Docker.
    if (docker && manager) {
      await removeBerthContainers(docker, { managerId: manager.managerId });
      const networks = await docker.listNetworks({ filters: { label: [`berth.manager=${manager.managerId}`] } }).catch(() => []);
      for (const n of networks) await docker.getNetwork(n.Id).remove().catch(() => {});
    }
    // Stopped, its iptables rules are left in place but match only its own bridges.
    await engine?.stop();
    await removeTestDir(dir);
  });

  const containerOf = async (s: Server) => docker.getContainer(s.status!.containerId).inspect();
  /** Runs `script` inside `s`'s container (as any process in it could). */
  const inside = async (s: Server, script: string) => {
    const r = await run("docker", ["exec", s.status!.containerId, "sh", "-c", script], { env: { ...process.env, DOCKER_HOST: engine.dockerHost }, timeout: 30_000 }).catch(
      (e: { stdout?: string; stderr?: string; code?: number }) => ({ stdout: e.stdout ?? "", stderr: e.stderr ?? "", failed: true }),
    );
    return `${r.stdout}${r.stderr}`;
  };
  const get = (host: string) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${host} 8080`;

  it("each project's servers are on the project's own network, and only on it", async () => {
    const nets = await Promise.all([web, probe, secret].map(async (s) => Object.keys((await containerOf(s)).NetworkSettings.Networks)));
    expect(nets[0]).toHaveLength(1);
    expect(nets[0]![0]).toMatch(/^berth-alpha-/);
    expect(nets[1]).toEqual(nets[0]);
    expect(nets[2]).toHaveLength(1);
    expect(nets[2]![0]).toMatch(/^berth-beta-/);
    const n = await docker.getNetwork(nets[0]![0]!).inspect();
    expect(n).toMatchObject({ Driver: "bridge", Internal: false, Labels: { "berth.project": alpha } });
    expect(n.Labels?.["berth.manager"]).toMatch(/^mgr_/);
  });

  it("alpha's servers reach each other by server name and by server id", async () => {
    expect(await inside(probe, get("web"))).toContain(`alpha-web-${tag}`);
    expect(await inside(probe, get(web.id))).toContain(`alpha-web-${tag}`);
  });

  it("alpha cannot reach beta's unpublished port, by beta's IP or by name", async () => {
    const betaIp = Object.values((await containerOf(secret)).NetworkSettings.Networks)[0]!.IPAddress;
    expect(betaIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // The engine itself reaches it (the service is up): only the network keeps alpha out.
    expect(await inside(secret, get("127.0.0.1"))).toContain(`beta-secret-${tag}`);
    const byIp = await inside(probe, get(betaIp));
    expect(byIp).not.toContain("beta-secret");
    expect(byIp).toMatch(/timed out|refused|unreachable/i);
    const byName = await inside(probe, get("secret"));
    expect(byName).not.toContain("beta-secret");
    expect(byName).toMatch(/bad address/);
  });

  it("published ports still work from the host", async () => {
    const body = await waitFor("the published port", async () => {
      const r = await fetch(`http://127.0.0.1:${webPort}/`).catch(() => undefined);
      return r?.ok ? r.text() : undefined;
    });
    expect(body).toContain(`alpha-web-${tag}`);
  });

  it("a running container made before project networks (on Docker's bridge) is moved onto its network live: not restarted, not recreated", async () => {
    const before = await containerOf(probe);
    const net = Object.keys(before.NetworkSettings.Networks)[0]!;
    // As berth left containers before project networks: on the default bridge only.
    await docker.getNetwork("bridge").connect({ Container: before.Id });
    await docker.getNetwork(net).disconnect({ Container: before.Id });
    expect(await inside(probe, get("web"))).not.toContain("alpha-web");
    // Network changes are not container events: the next inventory (every 30 s) shows it; ask for one now.
    const hostId = (await manager.hosts.listHosts({})).hosts[0]!.id;
    await manager.hosts.resyncHost({ id: hostId });
    await waitFor("the probe back on its project network", async () => Object.keys((await containerOf(probe)).NetworkSettings.Networks).join() === net, 30_000);
    const after = await containerOf(probe);
    expect(after.Id).toBe(before.Id);
    expect(after.State.StartedAt).toBe(before.State.StartedAt);
    expect(await inside(probe, get("web"))).toContain(`alpha-web-${tag}`);
    expect((await waitForPhase(manager, probe.id, Phase.RUNNING)).status!.phase).toBe(Phase.RUNNING);
  });

  it("the network goes with the project's last server on the host", async () => {
    const net = Object.keys((await containerOf(web)).NetworkSettings.Networks)[0]!;
    await manager.servers.purgeServer({ id: web.id, removeData: true });
    await waitFor("web purged", async () => !(await manager.servers.listServers({ project: alpha })).servers.some((s) => s.id === web.id), 30_000);
    // The probe is still on it.
    expect((await docker.getNetwork(net).inspect()).Name).toBe(net);
    await manager.servers.purgeServer({ id: probe.id, removeData: true });
    await waitFor("the alpha network removed", async () => (await docker.getNetwork(net).inspect().then(() => false, () => true)), 30_000);
    // Beta's network is untouched.
    expect(Object.keys((await containerOf(secret)).NetworkSettings.Networks)).toHaveLength(1);
  });

  it("a network left behind is listed as an orphan after the grace period and DestroyOrphan removes it", async () => {
    const net = Object.keys((await containerOf(secret)).NetworkSettings.Networks)[0]!;
    // Removed behind berth's back: the agent never removed a container, so it kept the network.
    await docker.getContainer(secret.status!.containerId).remove({ force: true });
    await manager.servers.purgeServer({ id: secret.id, removeData: true });
    await waitFor("beta purged", async () => !(await manager.servers.listServers({ project: beta })).servers.some((s) => s.id === secret.id), 30_000);
    expect((await docker.getNetwork(net).inspect()).Name).toBe(net);
    const hostId = (await manager.hosts.listHosts({})).hosts[0]!.id;
    await manager.hosts.resyncHost({ id: hostId });
    const o = await waitFor("the network orphan", async () => (await orphans.listOrphans({})).orphans.find((x) => x.kind === OrphanKind.NETWORK && x.networkName === net), 30_000, 200);
    expect(o).toMatchObject({ hostId, project: beta });
    expect(o.reason).toMatch(/no server/);
    const r = await orphans.destroyOrphan({ id: o.id });
    expect(r.removed.join()).toContain(net);
    expect(await docker.getNetwork(net).inspect().then(() => true, () => false)).toBe(false);
    expect((await orphans.listOrphans({})).orphans.some((x) => x.id === o.id)).toBe(false);
  });
});
