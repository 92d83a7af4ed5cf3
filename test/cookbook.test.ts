/**
 * docs/grpcurl.md, executed: every `buf curl` block of the page in order
 * against a live manager, an agent and Docker, then every `curl` block, each
 * checked against the `<!-- run … -->` directive above it. The commands run
 * verbatim through bash with the variables the page's Setup section exports
 * ($M, $G, $TOKEN, $IMAGE, $PORT), so the page cannot drift from the API.
 * Also checks the page covers every RPC of every berth.v1 service.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { AgentService } from "@berth/proto/berth/v1/agent_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { QueryService, SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { Phase, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { parseCookbook, runDocBlock, type Block } from "./harness/cookbook.js";
import { freePorts, REPO_ROOT, removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const DOC = join(REPO_ROOT, "docs/grpcurl.md");
const SERVICES: DescService[] = [ServerService, HostService, AgentService, AccessService, EventService, AlertService, OrphanService, BackupService, FileService, UsageService, TemplateService, ScheduleService, SavedQueryService, QueryService];
/** RPCs no script can call with buf curl or curl: the agent's bidi stream. */
const NOT_RUNNABLE = new Set(["berth.v1.AgentService/Connect"]);

describe("docs/grpcurl.md, executed", () => {
  const docker = dockerClient(testDockerHost());
  const blocks = parseCookbook(readFileSync(DOC, "utf8"));
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let baseEnv: NodeJS.ProcessEnv;

  beforeAll(async () => {
    dir = await tempDir("cookbook");
    // Alerts quickly (the page's ghost host), and no other alert in the way.
    manager = await startManager({ dir, args: ["--alert-host-offline", "1", "--alert-interval", "1", "--alert-not-converged", "3600", "--alert-disk-free", "0"] });
    // Usage every second: the UsageService blocks find samples of a server started a few blocks before.
    agent = await startAgent({ manager, dir, extraArgs: ["--usage-interval", "1"] });
    await waitForHostOnline(manager);
    const url = new URL(manager.url);
    baseEnv = {
      PATH: `${join(REPO_ROOT, "node_modules/.bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      HOME: process.env.HOME ?? "/root",
      M: manager.url,
      G: url.host,
      TOKEN: manager.adminToken,
      IMAGE: TEST_IMAGE,
      PORT: String((await freePorts(1))[0]),
      // The agent's --backup-dir (the harness gives every agent <dir>/backups).
      BACKUPS: join(dir, "backups"),
    };
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    if (manager) await removeBerthContainers(docker, { managerId: manager.managerId });
    await removeTestDir(dir);
  });

  it("covers every RPC of every berth.v1 service: grpcurl, buf curl and (unary) curl, runnable", () => {
    const missing: string[] = [];
    for (const service of SERVICES) {
      for (const m of service.methods) {
        const rpc = `${service.typeName}/${m.name}`;
        const of = (tool: Block["tool"]) => blocks.filter((b) => b.rpc === rpc && b.tool === tool);
        if (of("grpcurl").length === 0) missing.push(`${rpc}: no grpcurl command`);
        if (NOT_RUNNABLE.has(rpc)) continue;
        if (!of("buf").some((b) => b.directive)) missing.push(`${rpc}: no runnable buf curl command`);
        if (m.methodKind === "unary" && !of("curl").some((b) => b.directive)) missing.push(`${rpc}: no runnable curl command`);
      }
    }
    expect(missing).toEqual([]);
  });

  let firstPassFailed = false;
  for (const tool of ["buf", "curl"] as const) {
    it(`runs every ${tool === "buf" ? "buf curl" : "curl"} block top to bottom`, async () => {
      // The curl pass starts where the buf curl pass left the manager (server purged, …).
      if (tool === "curl" && firstPassFailed) throw new Error("not run: the buf curl pass failed first");
      const env = { ...baseEnv };
      const runnable = blocks.filter((b) => b.directive && b.tool === tool);
      expect(runnable.length).toBeGreaterThan(tool === "buf" ? 35 : 28);
      try {
        for (const b of runnable) await runBlock(b, env);
      } catch (err) {
        firstPassFailed = true;
        throw err;
      }
    }, 600_000);
  }

  /** Runs one block (retrying if it says so), checks its output, saves values, waits. */
  async function runBlock(b: Block, env: NodeJS.ProcessEnv): Promise<void> {
    await runDocBlock(b, env, { doc: "docs/grpcurl.md", waitForServer });
  }

  async function waitForServer(name: string, phases: string[] | "gone", where: string): Promise<void> {
    let last = "nothing";
    try {
      await waitFor(
        `${name} to be ${phases === "gone" ? "gone" : phases.join(" or ")}`,
        async () => {
          try {
            const { server } = await manager.servers.getServer({ id: name });
            const s = server!.status!;
            last = `${Phase[s.phase]} ${s.reason}: ${s.message} (generation ${server!.generation}, observed ${s.observedGeneration})`;
            if (phases === "gone") return false;
            // Settled: in the phase, the spec applied, and no backup or restore under way.
            return phases.includes(Phase[s.phase]) && s.observedGeneration === server!.generation && !s.operation;
          } catch (err) {
            if (phases === "gone" && ConnectError.from(err).code === Code.NotFound) return true;
            throw err;
          }
        },
        60_000,
        200,
      );
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}; last seen ${last}`);
    }
  }
});
