/**
 * An agent given several managers (`--manager A,B`) with real processes and a
 * real Docker engine: a dead first URL costs it no backoff, and when its
 * manager is killed (-9) it comes online on the next one. Two managers cannot
 * share a store yet, so the second is a manager over a copy of the first's
 * database made with `berth-manager backup` (same host credential, same
 * secret key): as far as the agent can tell, another manager of the same berth.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePorts,
  REPO_ROOT,
  removeTestDir,
  startAgent,
  startManager,
  tempDir,
  waitFor,
  waitForHostOnline,
  type ManagerProc,
  type Proc,
} from "./harness/processes.js";
import { MANAGER_BUNDLE } from "./harness/bundles.js";

/** The agent's "connected to manager" log lines (JSON), oldest first: which URL, which manager. */
function connections(agent: Proc): { url: string; manager: string; time: number }[] {
  return agent
    .log()
    .split("\n")
    .filter((l) => l.includes('"connected to manager"'))
    .map((l) => JSON.parse(l) as { url: string; manager: string; time: number });
}

describe("an agent with several manager URLs", () => {
  let dir: string;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = await tempDir("agent-failover");
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await removeTestDir(dir);
  });

  it("refuses a bad URL in the list at start, naming it (exit 2)", async () => {
    const d = join(dir, "usage");
    await mkdir(d);
    const manager = await startManager({ dir: d });
    procs.push(manager);
    const agent = await startAgent({ manager, dir: d, extraArgs: ["--manager", `${manager.url},ftp://127.0.0.1:21`] });
    procs.push(agent);
    const code = await new Promise<number | null>((resolve) =>
      agent.child.exitCode !== null ? resolve(agent.child.exitCode) : agent.child.once("exit", (c) => resolve(c)),
    );
    expect(code).toBe(2);
    await waitFor("the usage error in the log", async () => /manager URL #2 "ftp:\/\/127\.0\.0\.1:21" must start with http:\/\/ or https:\/\//.test(agent.log()));
  });

  it("a dead first manager: enrolls and comes online on the second within seconds", async () => {
    const d = join(dir, "dead-first");
    await mkdir(d);
    const manager = await startManager({ dir: d });
    procs.push(manager);
    const [deadPort] = await freePorts(1);
    const dead = `http://127.0.0.1:${deadPort}`;
    // Enrolled with both (the dead one skipped), run dials the stored list in that order.
    const t0 = Date.now();
    // The product's backoff (not the harness's 1 s cap): a backoff before the hop would show.
    const agent = await startAgent({ manager, managerUrls: [dead, manager.url], dir: d, extraArgs: ["--reconnect-max", "30"] });
    procs.push(agent);
    const enrolledMs = Date.now() - t0;
    const t1 = Date.now();
    const host = await waitForHostOnline(manager, 20_000);
    const onlineMs = Date.now() - t1;
    // The agent logs the connection before the manager records it online, but its output reaches
    // us through a pipe: the manager's answer can overtake the line (once in a fresh run).
    await waitFor("the agent's \"connected to manager\" line", async () => connections(agent).length > 0);
    const started = agent.log().split("\n").find((l) => l.includes('"agent started"'));
    const linkMs = connections(agent)[0]!.time - (JSON.parse(started!) as { time: number }).time;
    console.log(`[failover] dead first URL: enrolled in ${enrolledMs} ms; "agent started" to connected on the second manager ${linkMs} ms; process start to host online ${onlineMs} ms`);
    expect(host.name).not.toBe("");
    const conns = connections(agent);
    expect(conns.map((c) => c.url)).toEqual([manager.url]);
    expect(conns[0]!.manager).toBe(manager.managerId);
    // The dead one cost one refused dial, not a backoff (0.5 s .. 30 s): the log shows the hop.
    expect(agent.log()).toContain(`"next":"${manager.url}"`);
    // Node's start-up is most of it; a backoff after the dead URL would add up to 30 s.
    expect(onlineMs).toBeLessThan(10_000);
  });

  it("kill -9 of its manager: the agent comes online on the next one", async () => {
    const dA = join(dir, "a");
    const dB = join(dir, "b");
    await mkdir(dA);
    await mkdir(dB);
    const a = await startManager({ dir: dA });
    procs.push(a);
    const [portB] = await freePorts(1);
    const urlB = `http://127.0.0.1:${portB}`;
    // The product's backoff (not the harness's 1 s cap): failing over must not wait for it.
    const agent = await startAgent({ manager: a, dir: dA, extraArgs: ["--manager", `${a.url},${urlB}`, "--reconnect-max", "30"] });
    procs.push(agent);
    const onA = await waitForHostOnline(a, 20_000);

    // Manager B: over a copy of A's store (taken now, so it knows this host's credential) and A's secret key.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [MANAGER_BUNDLE, "backup", "--db", a.dbPath, "--to", join(dB, "berth.db")],
      { cwd: REPO_ROOT },
    );
    expect(stdout).toMatch(/1 hosts/);
    await copyFile(join(dA, "secret.key"), join(dB, "secret.key"));
    const b: ManagerProc = await startManager({ dir: dB, port: portB });
    procs.push(b);
    expect(b.url).toBe(urlB);
    // B has never seen the agent: the host is there, offline.
    expect((await b.hosts.listHosts({})).hosts.map((h) => [h.id, h.state])).toEqual([[onA.id, HostState.OFFLINE]]);

    const killedAt = Date.now();
    await a.kill();
    const onB = await waitForHostOnline(b, 15_000);
    const failoverMs = Date.now() - killedAt;
    console.log(`[failover] kill -9 of manager A to host online on manager B: ${failoverMs} ms`);
    expect(onB.id).toBe(onA.id);
    // Connected after the kill, on B, and the agent kept running throughout.
    expect(timestampMs(onB.connectedSince!)).toBeGreaterThanOrEqual(killedAt - 1_000);
    // As above: the line may still be on its way through the agent's output pipe.
    await waitFor("the agent's second \"connected to manager\" line", async () => connections(agent).length >= 2);
    expect(connections(agent).map((c) => c.url)).toEqual([a.url, urlB]);
    expect(agent.child.exitCode).toBeNull();
    expect(failoverMs).toBeLessThan(10_000);
  });
});
