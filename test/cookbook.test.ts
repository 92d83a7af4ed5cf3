/**
 * docs/grpcurl.md, executed: every `buf curl` block of the page in order
 * against a live manager, an agent and Docker, then every `curl` block, each
 * checked against the `<!-- run … -->` directive above it. The commands run
 * verbatim through bash with the variables the page's Setup section exports
 * ($M, $G, $TOKEN, $IMAGE, $PORT), so the page cannot drift from the API.
 * Also checks the page covers every RPC of every berth.v1 service.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
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
import { SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { Phase, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { lookup, mismatches, parseCookbook, parseJsonSequence, type Block } from "./harness/cookbook.js";
import { freePorts, REPO_ROOT, removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, type ManagerProc, type Proc } from "./harness/processes.js";

const DOC = join(REPO_ROOT, "docs/grpcurl.md");
const SERVICES: DescService[] = [ServerService, HostService, AgentService, AccessService, EventService, AlertService, OrphanService, BackupService, FileService, UsageService, TemplateService, ScheduleService, SavedQueryService];
/** RPCs no script can call with buf curl or curl: the agent's bidi stream. */
const NOT_RUNNABLE = new Set(["berth.v1.AgentService/Connect"]);

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs `code` with bash; a stream is read for at most `streamSeconds`, then its process group is ended. */
function runShell(code: string, env: NodeJS.ProcessEnv, streamSeconds?: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", `set -eo pipefail\n${code}`], { env, cwd: REPO_ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const limit = (streamSeconds ?? 60) * 1000;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        // already gone
      }
    }, limit);
    child.once("error", reject);
    child.once("close", (c) => {
      clearTimeout(timer);
      resolve({ code: c, stdout, stderr, timedOut });
    });
  });
}

describe("docs/grpcurl.md, executed", () => {
  const docker = dockerClient(inject("dockerHost"));
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
    const d = b.directive!;
    const where = `docs/grpcurl.md:${b.line} (${b.rpc ?? b.code.split("\n")[0]})`;
    const deadline = Date.now() + (d.retrySeconds ?? 0) * 1000;
    let problems: string[] = [];
    let r: RunResult | undefined;
    let docs: unknown[] = [];
    for (;;) {
      r = await runShell(b.code, env, d.streamSeconds);
      problems = [];
      const streamEndedByUs = d.streamSeconds !== undefined && r.timedOut;
      docs = parseJsonSequence(r.stdout);
      if (r.timedOut && d.streamSeconds === undefined) problems.push("timed out");
      if (r.code !== 0 && !streamEndedByUs) {
        // An accepted error code (e.g. unimplemented) is an answer too.
        const errors = parseJsonSequence(`${r.stdout}\n${r.stderr}`).map((e) => lookup(e, "code"));
        if (!(d.codes.length && errors.some((c) => typeof c === "string" && d.codes.includes(c)))) {
          problems.push(`exit code ${r.code}`);
        }
      } else if (d.expect.length) {
        const candidates = d.streamSeconds !== undefined ? docs : docs.slice(0, 1);
        if (candidates.length === 0) problems.push("no JSON answer");
        else if (!candidates.some((doc) => mismatches(doc, d.expect).length === 0)) problems.push(...mismatches(candidates[0], d.expect));
      }
      for (const t of d.expectText) if (!r.stdout.includes(t)) problems.push(`output lacks "${t}"`);
      if (problems.length === 0 || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    if (problems.length) {
      throw new Error(`${where}: ${problems.join("; ")}\n--- command\n${b.code}\n--- stdout\n${r.stdout.slice(0, 3000)}\n--- stderr\n${r.stderr.slice(0, 3000)}`);
    }
    for (const s of d.save) {
      const from = docs.find((doc) => lookup(doc, s.path) !== undefined);
      const v = from === undefined ? undefined : lookup(from, s.path);
      if (typeof v !== "string" || !v) throw new Error(`${where}: nothing at ${s.path} to save as ${s.name}\n${r.stdout}`);
      env[s.name] = v;
    }
    if (d.wait) await waitForServer(d.wait.server, d.wait.phases, where);
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
