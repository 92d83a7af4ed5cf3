/**
 * docs/explore.md's "Four questions, answered", executed: the facts behind
 * each question are made on a real manager, agent and Docker engine (a
 * server that crashes 4 times, changes made with a token named ci-deploy, a
 * server whose data directory is removed, stops), then every runnable block
 * of that section runs verbatim through bash, checked against its
 * `<!-- run … -->` directive (test/harness/cookbook.ts), in order.
 */
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { Phase, RestartPolicy, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { parseCookbook, runDocBlock } from "./harness/cookbook.js";
import { REPO_ROOT, removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const DOC = join(REPO_ROOT, "docs/explore.md");
const SLEEPER = ["sh", "-c", "exec sleep 100000"];

/** The blocks of one `## ` section of the page. */
function sectionBlocks(markdown: string, heading: string) {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`docs/explore.md has no section "${heading}"`);
  const end = markdown.indexOf("\n## ", start + 1);
  // Line numbers stay the page's: parse from the top, keep the section's.
  const firstLine = markdown.slice(0, start).split("\n").length + 1;
  const lastLine = end < 0 ? Infinity : markdown.slice(0, end).split("\n").length;
  return parseCookbook(markdown).filter((b) => b.line > firstLine && b.line < lastLine);
}

describe("docs/explore.md: the four questions, executed", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let hostId: string;

  beforeAll(async () => {
    dir = await tempDir("explore");
    manager = await startManager({ dir, args: ["--crash-backoff", "1", "--alert-interval", "1", "--saved-query-interval", "1", "--alert-not-converged", "3600"] });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    if (manager) await removeBerthContainers(docker, { managerId: manager.managerId });
    await removeTestDir(dir);
  });

  it("answers each question from the ledger and the servers, as the page says", async () => {
    // ci-deploy: an operator token that creates a server and stops it.
    const { secret } = await manager.access.createToken({ name: "ci-deploy", role: Role.OPERATOR, project: "default" });
    const asCi = createClient(ServerService, manager.transport(secret));
    const { server: web } = await asCi.createServer({ spec: { name: "web", image: TEST_IMAGE, command: SLEEPER } });
    await waitForPhase(manager, web!.id, Phase.RUNNING);
    await asCi.stopServer({ id: web!.id });
    await waitForPhase(manager, web!.id, Phase.STOPPED);

    // crashy: exits 1 after half a second; berth restarts it (backoff 1 s, 2 s, 4 s) until it has died 4 times.
    const { server: crashy } = await manager.servers.createServer({
      spec: { name: "crashy", image: TEST_IMAGE, command: ["sh", "-c", "sleep 0.5; exit 1"], restartPolicy: RestartPolicy.ALWAYS },
    });
    const events = createClient(EventService, manager.transport(manager.adminToken));
    await waitFor(
      "crashy to die 4 times",
      async () => (await events.listEvents({ serverId: crashy!.id, typePrefix: "container.died", pageSize: 10 })).events.length >= 4,
      60_000,
      500,
    );
    await manager.servers.stopServer({ id: crashy!.id });

    // lost: stopped, then its data directory removed on the host.
    const { server: lost } = await manager.servers.createServer({ spec: { name: "lost", image: TEST_IMAGE, command: SLEEPER } });
    await waitForPhase(manager, lost!.id, Phase.RUNNING);
    await manager.servers.stopServer({ id: lost!.id });
    await waitForPhase(manager, lost!.id, Phase.STOPPED);
    rmSync(join(agent.dataRoot, lost!.id), { recursive: true, force: true });
    await waitFor("lost's data directory to be missed", async () => (await manager.servers.getServer({ id: lost!.id })).server!.status!.dataExists === false, 60_000, 200);

    const blocks = sectionBlocks(readFileSync(DOC, "utf8"), "Four questions, answered").filter((b) => b.directive);
    expect(blocks.map((b) => b.rpc)).toEqual([
      "berth.v1.QueryService/Aggregate",
      "berth.v1.SavedQueryService/CreateSavedQuery",
      "berth.v1.SavedQueryService/RunSavedQuery",
      "berth.v1.AlertService/ListAlerts",
      "berth.v1.EventService/ListEvents",
      "berth.v1.ServerService/ListServers",
      "berth.v1.QueryService/Aggregate",
    ]);
    const env: NodeJS.ProcessEnv = {
      PATH: `${join(REPO_ROOT, "node_modules/.bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      HOME: process.env.HOME ?? "/root",
      M: manager.url,
      G: new URL(manager.url).host,
      TOKEN: manager.adminToken,
      HOST: hostId,
      FIRE_AFTER: "1s",
      SINCE: new Date(Date.now() - 3_600_000).toISOString(),
      UNTIL: new Date(Date.now() + 60_000).toISOString(),
    };
    for (const b of blocks) await runDocBlock(b, env, { doc: "docs/explore.md" });
    // The first answer names crashy (the only server that crashed), not web or lost.
    expect(env.CRASHED).toBe(crashy!.id);
  }, 240_000);
});
