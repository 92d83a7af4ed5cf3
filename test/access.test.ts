/**
 * Access control against a real manager process (and, for enrollment and
 * host removal, real agents and Docker):
 *
 * - EVERY RPC of every berth.v1 operator service, enumerated from the service
 *   descriptors, called with no token, a bad token, a revoked token, a viewer
 *   token and an operator token of another project, each answer checked for
 *   its exact code;
 * - enrollment: reuse and expiry refused; RemoveHost closes the running
 *   agent's stream and the agent exits 78;
 * - the recovery CLI and the once-only first admin token;
 * - plaintext refused on a non-loopback address without --insecure.
 *
 * TLS end to end is in tls.test.ts.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { AgentService } from "@berth/proto/berth/v1/agent_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { ArchiveFormat, FileService } from "@berth/proto/berth/v1/file_pb.js";
import { ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";
import { QueryService, QuerySource, SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { ServerService, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { Health } from "@berth/proto/grpc/health/v1/health_pb.js";
import { TEST_IMAGE } from "./harness/docker-engine.js";
import {
  createTokenWithCli,
  enrollAgent,
  REPO_ROOT,
  runAgent,
  startAgent,
  startManager,
  tempDir,
  waitFor,
  type ManagerProc,
  type Proc,
} from "./harness/processes.js";
import { MANAGER_BUNDLE } from "./harness/bundles.js";

const run = promisify(execFile);

/** The operator-facing services; AgentService authenticates agents, not tokens. */
const SERVICES: DescService[] = [ServerService, HostService, AccessService, EventService, AlertService, OrphanService, BackupService, FileService, UsageService, ScheduleService, SavedQueryService, QueryService];

type RoleName = "viewer" | "operator" | "admin";
const RANK: Record<RoleName, number> = { viewer: 0, operator: 1, admin: 2 };

/** What a call needs. Written independently of manager/src/auth/permissions.ts, as the spec. */
interface Row {
  role: RoleName;
  request: () => object;
  /** Names a server of project alpha: a token of another project must get NotFound. */
  serverAddressed?: true;
  /** The exact code for beta's operator token when its role suffices (instead of what the admin gets). */
  otherProject?: Code;
}

type Outcome = Code | "OK";

/** A valid schedule spec on alpha's server (a console command at 04:00). */
const scheduleSpec = (name: string) => ({ name, target: { kind: { case: "serverId" as const, value: "alpha-web" } }, cron: "0 4 * * *", enabled: false, tasks: [{ kind: { case: "wait" as const, value: { seconds: 1 } } }] });
/** A private saved query over hosts (any viewer may make one). */
const savedQuerySpec = (name: string) => ({ name, query: { source: QuerySource.HOSTS, filter: "host.name != ''" } });
const show = (o: Outcome) => (o === "OK" ? "OK" : Code[o]);

describe("access control: every RPC, every kind of caller", () => {
  let dir: string;
  let manager: ManagerProc;
  let hostId: string;
  let serverA: Server;
  const tokens: Record<"none" | "bad" | "revoked" | "viewerAlpha" | "operatorBeta" | "admin", string | undefined> = {
    none: undefined,
    bad: `brt_${"x".repeat(43)}`,
    revoked: "",
    viewerAlpha: "",
    operatorBeta: "",
    admin: "",
  };

  let targets = 0;

  let schedules = 0;
  let savedQueries = 0;
  const ROWS: Record<string, Row> = {
    "berth.v1.ServerService/CreateServer": {
      role: "operator",
      request: () => ({ spec: { name: `new-${Date.now().toString(36)}`, image: TEST_IMAGE, hostId }, project: "alpha" }),
      otherProject: Code.NotFound,
    },
    "berth.v1.ServerService/GetServer": { role: "viewer", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/ListServers": { role: "viewer", request: () => ({}) },
    "berth.v1.ServerService/UpdateServer": {
      role: "operator",
      request: () => ({ id: serverA.id, spec: { name: serverA.spec!.name, image: TEST_IMAGE, hostId } }),
      serverAddressed: true,
    },
    "berth.v1.ServerService/StartServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/StopServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/PauseServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/ResumeServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/RestartServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/RebuildServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/DeleteServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/RestoreServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/PurgeServer": { role: "admin", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/WatchServers": { role: "viewer", request: () => ({}) },
    "berth.v1.ServerService/TailLogs": { role: "viewer", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/WatchConsole": { role: "viewer", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/SendConsoleCommand": { role: "operator", request: () => ({ id: serverA.id, line: "x" }), serverAddressed: true },
    "berth.v1.ServerService/ExecCommand": { role: "operator", request: () => ({ id: serverA.id, argv: ["true"] }), serverAddressed: true },
    "berth.v1.ServerService/TransferServer": { role: "operator", request: () => ({ id: serverA.id, host: "host_doesnotexist" }), serverAddressed: true },
    "berth.v1.ServerService/GetInstallLog": { role: "viewer", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/ReinstallServer": { role: "operator", request: () => ({ id: serverA.id }), serverAddressed: true },
    "berth.v1.ServerService/CloneServer": { role: "operator", request: () => ({ source: serverA.id, name: "access-clone", fromBackup: "bk_doesnotexist" }), serverAddressed: true },

    "berth.v1.HostService/ListHosts": { role: "viewer", request: () => ({}) },
    "berth.v1.HostService/GetHost": { role: "viewer", request: () => ({ id: hostId }) },
    "berth.v1.HostService/CreateEnrollmentToken": { role: "admin", request: () => ({}) },
    "berth.v1.HostService/ResyncHost": { role: "operator", request: () => ({ id: hostId }) },
    "berth.v1.HostService/RemoveHost": { role: "admin", request: () => ({ id: "host_doesnotexist" }) },
    "berth.v1.HostService/CordonHost": { role: "admin", request: () => ({ id: "host_doesnotexist" }) },
    "berth.v1.HostService/DrainHost": { role: "admin", request: () => ({ id: "host_doesnotexist" }) },
    "berth.v1.HostService/UncordonHost": { role: "admin", request: () => ({ id: "host_doesnotexist" }) },
    "berth.v1.HostService/SetHostCapacity": { role: "admin", request: () => ({ id: "host_doesnotexist" }) },

    "berth.v1.AccessService/WhoAmI": { role: "viewer", request: () => ({}) },
    "berth.v1.AccessService/CreateToken": { role: "admin", request: () => ({ name: "x", role: Role.VIEWER, project: "alpha" }) },
    "berth.v1.AccessService/ListTokens": { role: "admin", request: () => ({}) },
    "berth.v1.AccessService/RevokeToken": { role: "admin", request: () => ({ id: "tok_doesnotexist" }) },

    "berth.v1.EventService/ListEvents": { role: "viewer", request: () => ({}) },
    "berth.v1.EventService/WatchEvents": { role: "viewer", request: () => ({}) },

    "berth.v1.AlertService/ListAlerts": { role: "viewer", request: () => ({}) },
    "berth.v1.AlertService/AcknowledgeAlert": { role: "operator", request: () => ({ id: "alert_doesnotexist" }) },
    "berth.v1.AlertService/MuteAlert": { role: "operator", request: () => ({ id: "alert_doesnotexist", durationSeconds: 60 }) },

    "berth.v1.BackupService/CreateBackupTarget": { role: "admin", request: () => ({ name: `access-${++targets}`, directory: { path: "/var/lib/berth-backups" } }) },
    "berth.v1.BackupService/ListBackupTargets": { role: "viewer", request: () => ({}) },
    "berth.v1.BackupService/DeleteBackupTarget": { role: "admin", request: () => ({ id: "bkt_doesnotexist" }) },
    "berth.v1.BackupService/CreateBackup": { role: "operator", request: () => ({ server: serverA.id, target: "no-such-target" }), serverAddressed: true },
    "berth.v1.BackupService/GetBackup": { role: "viewer", request: () => ({ id: "bk_doesnotexist" }) },
    "berth.v1.BackupService/ListBackups": { role: "viewer", request: () => ({}) },
    "berth.v1.BackupService/DeleteBackup": { role: "operator", request: () => ({ id: "bk_doesnotexist" }) },
    "berth.v1.BackupService/LockBackup": { role: "operator", request: () => ({ id: "bk_doesnotexist", locked: true }) },
    "berth.v1.BackupService/RestoreBackup": { role: "operator", request: () => ({ server: serverA.id, backupId: "bk_doesnotexist" }), serverAddressed: true },

    "berth.v1.ScheduleService/ListSchedules": { role: "viewer", request: () => ({}) },
    "berth.v1.ScheduleService/GetSchedule": { role: "viewer", request: () => ({ id: "sch_doesnotexist" }) },
    "berth.v1.ScheduleService/CreateSchedule": { role: "operator", request: () => ({ project: "alpha", spec: scheduleSpec(`access-${++schedules}`) }), serverAddressed: true },
    "berth.v1.ScheduleService/UpdateSchedule": { role: "operator", request: () => ({ id: "sch_doesnotexist", spec: scheduleSpec("access") }) },
    "berth.v1.ScheduleService/DeleteSchedule": { role: "operator", request: () => ({ id: "sch_doesnotexist" }) },
    "berth.v1.ScheduleService/RunScheduleNow": { role: "operator", request: () => ({ id: "sch_doesnotexist" }) },
    "berth.v1.ScheduleService/ListScheduleRuns": { role: "viewer", request: () => ({ id: "sch_doesnotexist" }) },
    "berth.v1.ScheduleService/PreviewCron": { role: "viewer", request: () => ({ cron: "0 4 * * *" }) },

    // Every SavedQueryService RPC is viewer; the service itself refuses shared or alerting queries to viewers (its own tests).
    "berth.v1.SavedQueryService/ListSavedQueries": { role: "viewer", request: () => ({}) },
    "berth.v1.SavedQueryService/GetSavedQuery": { role: "viewer", request: () => ({ id: "sq_doesnotexist" }) },
    "berth.v1.SavedQueryService/CreateSavedQuery": { role: "viewer", request: () => ({ spec: savedQuerySpec(`access-${++savedQueries}`) }) },
    "berth.v1.SavedQueryService/UpdateSavedQuery": { role: "viewer", request: () => ({ id: "sq_doesnotexist", spec: savedQuerySpec("access") }) },
    "berth.v1.SavedQueryService/DeleteSavedQuery": { role: "viewer", request: () => ({ id: "sq_doesnotexist" }) },
    "berth.v1.SavedQueryService/RunSavedQuery": { role: "viewer", request: () => ({ id: "sq_doesnotexist" }) },

    "berth.v1.UsageService/GetUsage": { role: "viewer", request: () => ({ subject: { case: "server", value: serverA.id } }), serverAddressed: true },
    "berth.v1.UsageService/WatchUsage": { role: "viewer", request: () => ({}) },
    "berth.v1.QueryService/Aggregate": { role: "viewer", request: () => ({ query: { source: QuerySource.EVENTS, groupBy: ["event.type"] } }) },
    "berth.v1.FileService/ListFiles": { role: "viewer", request: () => ({ server: serverA.id, path: "/" }), serverAddressed: true },
    "berth.v1.FileService/StatFile": { role: "viewer", request: () => ({ server: serverA.id, path: "/" }), serverAddressed: true },
    "berth.v1.FileService/ReadFile": { role: "viewer", request: () => ({ server: serverA.id, path: "a.txt" }), serverAddressed: true },
    "berth.v1.FileService/WriteFile": { role: "operator", request: () => ({ server: serverA.id, path: "a.txt", data: new Uint8Array([1]), last: true }), serverAddressed: true },
    "berth.v1.FileService/MakeDirectory": { role: "operator", request: () => ({ server: serverA.id, path: "d" }), serverAddressed: true },
    "berth.v1.FileService/MoveFile": { role: "operator", request: () => ({ server: serverA.id, fromPath: "a", toPath: "b" }), serverAddressed: true },
    "berth.v1.FileService/CopyFile": { role: "operator", request: () => ({ server: serverA.id, fromPath: "a", toPath: "b" }), serverAddressed: true },
    "berth.v1.FileService/DeleteFile": { role: "operator", request: () => ({ server: serverA.id, path: "a" }), serverAddressed: true },
    "berth.v1.FileService/ChangeFileMode": { role: "operator", request: () => ({ server: serverA.id, path: "a", mode: 0o644 }), serverAddressed: true },
    "berth.v1.FileService/CreateArchive": { role: "operator", request: () => ({ server: serverA.id, paths: ["a"], archivePath: "a.zip", format: ArchiveFormat.ZIP }), serverAddressed: true },
    "berth.v1.FileService/ExtractArchive": { role: "operator", request: () => ({ server: serverA.id, archivePath: "a.zip", destinationPath: "x" }), serverAddressed: true },

    "berth.v1.OrphanService/ListOrphans": { role: "admin", request: () => ({}) },
    "berth.v1.OrphanService/AdoptOrphan": { role: "admin", request: () => ({ id: "orphan_doesnotexist", project: "alpha", name: "x" }) },
    "berth.v1.OrphanService/DestroyOrphan": { role: "admin", request: () => ({ id: "orphan_doesnotexist", dryRun: true }) },
    "berth.v1.OrphanService/ReassignServer": { role: "admin", request: () => ({ id: "srv_doesnotexist", hostId }) },
  };

  const methods = SERVICES.flatMap((s) => s.methods.map((m) => ({ service: s, method: m, key: `${s.typeName}/${m.name}` })));

  /** Calls one RPC; a stream counts as OK once it delivers a message or stays open for 2 s. */
  /** One transport (one HTTP/2 connection) per token: a new one per call reached the manager's 256 connections per IP. */
  const transports = new Map<string | undefined, ReturnType<ManagerProc["transport"]>>();
  const transportFor = (token: string | undefined) => {
    let t = transports.get(token);
    if (!t) transports.set(token, (t = manager.transport(token)));
    return t;
  };

  async function call(service: DescService, method: DescMethod, token: string | undefined, request: object): Promise<Outcome> {
    const client = createClient(service, transportFor(token)) as unknown as Record<string, (req: object, opts?: object) => unknown>;
    const fn = client[method.localName]!;
    if (method.methodKind === "unary") {
      try {
        await fn(request);
        return "OK";
      } catch (err) {
        return ConnectError.from(err).code;
      }
    }
    const abort = new AbortController();
    const it = (fn(request, { signal: abort.signal }) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    const first = it.next();
    first.catch(() => {});
    try {
      await Promise.race([first, new Promise((r) => setTimeout(r, 2000))]);
      return "OK";
    } catch (err) {
      return ConnectError.from(err).code;
    } finally {
      abort.abort();
    }
  }

  beforeAll(async () => {
    dir = await tempDir("access");
    manager = await startManager({ dir });
    tokens.admin = manager.adminToken;
    const mk = async (name: string, role: Role, project: string) => (await manager.access.createToken({ name, role, project })).secret;
    tokens.viewerAlpha = await mk("viewer-alpha", Role.VIEWER, "alpha");
    tokens.operatorBeta = await mk("operator-beta", Role.OPERATOR, "beta");
    tokens.revoked = await mk("revoked-alpha", Role.OPERATOR, "alpha");
    const { token: revokedToken } = await createClient(AccessService, manager.transport(tokens.revoked)).whoAmI({});
    await manager.access.revokeToken({ id: revokedToken!.id });
    // A host (enrolled over the API; no agent needed) and a server of project alpha on it.
    const { token: enr } = await manager.hosts.createEnrollmentToken({});
    hostId = (await createClient(AgentService, manager.transport(undefined)).enroll({ token: enr, hostname: "table-host" })).hostId;
    const { server } = await manager.servers.createServer({ spec: { name: "alpha-web", image: TEST_IMAGE, hostId, desiredState: 3 }, project: "alpha" });
    serverA = server!;
  });

  afterAll(async () => {
    await manager?.stop();
  });

  it("implements every method: an admin never hears Unimplemented (a deleted service fails here)", async () => {
    const missing: string[] = [];
    for (const { service, method, key } of methods) {
      const row = ROWS[key]!;
      const req = row.serverAddressed ? { ...row.request(), id: "srv_doesnotexist" } : row.request();
      if ((await call(service, method, tokens.admin, req)) === Code.Unimplemented) missing.push(key);
    }
    expect(missing).toEqual([]);
  });

  it("has a row for every method of every operator service (a new RPC cannot be forgotten)", () => {
    expect(methods.length).toBeGreaterThanOrEqual(32);
    expect(methods.filter((m) => !ROWS[m.key]).map((m) => m.key)).toEqual([]);
    expect(Object.keys(ROWS).filter((k) => !methods.some((m) => m.key === k))).toEqual([]);
  });

  for (const who of ["none", "bad", "revoked"] as const) {
    it(`answers Unauthenticated to every RPC with ${who === "none" ? "no token" : `a ${who} token`}`, async () => {
      const wrong: string[] = [];
      for (const { service, method, key } of methods) {
        const got = await call(service, method, tokens[who], ROWS[key]!.request());
        if (got !== Code.Unauthenticated) wrong.push(`${key}: ${show(got)}`);
      }
      expect(wrong).toEqual([]);
    });
  }

  it("gives a viewer of project alpha exactly the reads, with the same answers an admin gets, and PermissionDenied for the rest", async () => {
    const wrong: string[] = [];
    for (const { service, method, key } of methods) {
      const row = ROWS[key]!;
      const req = row.request();
      const want: Outcome = row.role === "viewer" ? await call(service, method, tokens.admin, req) : Code.PermissionDenied;
      const got = await call(service, method, tokens.viewerAlpha, req);
      if (got !== want) wrong.push(`${key}: got ${show(got)}, want ${show(want)}`);
    }
    expect(wrong).toEqual([]);
  });

  it("answers an operator of project beta NotFound for alpha's server on every server RPC its role allows, PermissionDenied above its role", async () => {
    const wrong: string[] = [];
    for (const { service, method, key } of methods) {
      const row = ROWS[key]!;
      let want: Outcome;
      if (RANK[row.role] > RANK.operator) want = Code.PermissionDenied;
      else if (row.otherProject !== undefined) want = row.otherProject;
      else if (row.serverAddressed) want = Code.NotFound;
      else want = await call(service, method, tokens.admin, row.request());
      const got = await call(service, method, tokens.operatorBeta, row.request());
      if (got !== want) wrong.push(`${key}: got ${show(got)}, want ${show(want)}`);
    }
    expect(wrong).toEqual([]);
    // Lists and watches show beta nothing of alpha.
    const beta = createClient(ServerService, manager.transport(tokens.operatorBeta));
    expect((await beta.listServers({})).servers.map((s) => s.id)).not.toContain(serverA.id);
    expect(await call(ServerService, ServerService.method.listServers, tokens.operatorBeta, { project: "alpha" })).toBe(Code.NotFound);
    const seen: string[] = [];
    let snapshotEnded = false;
    const abort = new AbortController();
    for await (const msg of beta.watchServers({}, { signal: abort.signal })) {
      if (msg.server) seen.push(msg.server.id);
      if (msg.change === 2 /* SNAPSHOT_END */) {
        snapshotEnded = true;
        break;
      }
    }
    expect(snapshotEnded).toBe(true);
    expect(seen).not.toContain(serverA.id);
    // The server is untouched.
    const { server } = await manager.servers.getServer({ id: serverA.id });
    expect(server?.generation).toBe(serverA.generation);
  });

  it("names no server of another project in a port conflict", async () => {
    const port = 40_000 + Math.floor(Math.random() * 20_000);
    await manager.servers.createServer({ project: "alpha", spec: { name: "alpha-published", image: TEST_IMAGE, hostId, desiredState: 3, ports: [{ hostPort: port, containerPort: 80 }] } });
    const beta = createClient(ServerService, manager.transport(tokens.operatorBeta));
    const err = ConnectError.from(
      await beta.createServer({ spec: { name: "beta-wants-port", image: TEST_IMAGE, hostId, desiredState: 3, ports: [{ hostPort: port, containerPort: 80 }] } }).catch((e: unknown) => e),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain(`host port ${port}/tcp is used by a server in another project`);
    expect(err.rawMessage).not.toContain("alpha-published");
  });

  it("leaves health and reflection open", async () => {
    const health = createClient(Health, manager.transport(undefined));
    expect((await health.check({})).status).toBe(1);
    const { stdout } = await run(join(REPO_ROOT, "node_modules/.bin/buf"), ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", manager.url]);
    expect(stdout).toContain("berth.v1.AccessService");
  });

  it("says how to get a token when there is none, and which role is needed when it is too weak", async () => {
    const msg = async (token: string | undefined) =>
      ConnectError.from(await createClient(HostService, manager.transport(token)).createEnrollmentToken({}).catch((e: unknown) => e)).rawMessage;
    expect(await msg(undefined)).toMatch(/missing token; send "authorization: Bearer <token>".*berth-manager token create --role admin/);
    expect(await msg(tokens.viewerAlpha)).toBe('CreateEnrollmentToken needs the admin role; token "viewer-alpha" is viewer');
  });

  it("records the acting token on the events of mutating calls", async () => {
    const made = await manager.access.createToken({ name: "audit-me", role: Role.VIEWER, project: "alpha" });
    await manager.access.revokeToken({ id: made.token!.id });
    const events = eventsWhere(manager.dbPath, "correlation_id = ?", made.token!.id);
    const { token: me } = await manager.access.whoAmI({});
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ["token.created", `token:${me!.id}:${me!.name}`],
      ["token.revoked", `token:${me!.id}:${me!.name}`],
    ]);
  });
});

describe("first admin token and the recovery CLI", () => {
  let dir: string;
  let manager: ManagerProc | undefined;

  beforeAll(async () => {
    dir = await tempDir("recovery");
  });
  afterAll(async () => {
    await manager?.stop();
  });

  it("prints the admin token once, on the first start only, and stores only its hash", async () => {
    manager = await startManager({ dir });
    const first = manager.startupOutput;
    expect(first).toMatch(/berth-manager admin token: brt_\S+/);
    expect(first).toContain(`berth-manager admin-token=${manager.adminToken}`);
    expect(first).toContain(`use: -H 'authorization: Bearer ${manager.adminToken}'`);
    const { token } = await manager.access.whoAmI({});
    expect(token).toMatchObject({ name: "admin", role: Role.ADMIN, project: "" });
    const port = Number(new URL(manager.url).port);
    await manager.stop();
    expect(readFileSync(manager.dbPath).includes(manager.adminToken.slice(4))).toBe(false);

    manager = await startManager({ dir, port });
    const second = manager.startupOutput;
    expect(second).toContain("berth-manager ready");
    expect(second).not.toContain("admin-token=");
    expect(second).not.toMatch(/brt_/);
  });

  it("creates a working token directly in the database, even with the manager running", async () => {
    const secret = await createTokenWithCli(manager!.dbPath, ["--role", "viewer", "--project", "games", "--name", "from-cli"]);
    expect(secret).toMatch(/^brt_/);
    const { token } = await createClient(AccessService, manager!.transport(secret)).whoAmI({});
    expect(token).toMatchObject({ name: "from-cli", role: Role.VIEWER, project: "games" });
    const err = await run(process.execPath, [MANAGER_BUNDLE, "token", "create", "--role", "viewer", "--db", manager!.dbPath]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/--project: required for a viewer token/);
  });
});

describe("plaintext on the network", () => {
  it("is refused on a non-loopback address without --insecure, with what to do instead", async () => {
    const dir = await tempDir("insecure");
    const err = await run(process.execPath, [MANAGER_BUNDLE, "--listen", "0.0.0.0:0", "--db", join(dir, "b.db")], {
      cwd: REPO_ROOT,
      timeout: 30_000,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/refusing to serve plaintext on 0\.0\.0\.0:0.*--tls-auto.*--insecure/);
  });
});

describe("agent enrollment and removal", () => {
  let dir: string;
  let manager: ManagerProc;
  let agent: (Proc & { stateDir: string; dataRoot: string }) | undefined;

  beforeAll(async () => {
    dir = await tempDir("enroll");
    manager = await startManager({ dir });
  });
  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
  });

  it("the Add-host command of a manager run from the checkout enrolls as printed (only its state dir moved into the test's directory)", async () => {
    const { token, command, notes } = await manager.hosts.createEnrollmentToken({});
    const repo = join(import.meta.dirname, "..");
    const [enroll, run] = command.split(" && ").slice(1);
    expect(command).toBe(`cd ${repo} && ${enroll} && ${run}`);
    expect(run).toBe("npx berth-agent run --state-dir /var/lib/berth-agent");
    expect(notes).toEqual([expect.stringMatching(/listens on loopback .*only an agent on this machine/), expect.stringMatching(/runs from the checkout at /)]);
    const stateDir = join(dir, "printed");
    const { stdout } = await promisify(execFile)("sh", ["-c", `cd ${repo} && ${enroll!.replace("/var/lib/berth-agent", stateDir)}`], { env: { ...process.env, BERTH_LOG_LEVEL: "warn" } });
    expect(stdout).toMatch(new RegExp(`^enrolled as host_\\w+; credentials in ${stateDir}/`, "m"));
    expect(JSON.parse(readFileSync(join(stateDir, "credentials.json"), "utf8"))).toMatchObject({ managerUrl: manager.url });
    expect(token).not.toBe("");
  });

  it("refuses a used enrollment token", async () => {
    const { token } = await manager.hosts.createEnrollmentToken({});
    const first = await enrollAgent({ managerUrl: manager.url, token, stateDir: join(dir, "a1"), dir });
    expect(first.code).toBe(0);
    const again = await enrollAgent({ managerUrl: manager.url, token, stateDir: join(dir, "a2"), dir });
    expect(again.code).toBe(1);
    expect(again.log).toMatch(/enrollment failed: this enrollment token was already used; create a new one/);
  });

  it("refuses an expired enrollment token", async () => {
    const { token, expireTime } = await manager.hosts.createEnrollmentToken({ ttlSeconds: 1 });
    expect(Number(expireTime!.seconds) * 1000).toBeLessThanOrEqual(Date.now() + 1500);
    await new Promise((r) => setTimeout(r, 1200));
    const late = await enrollAgent({ managerUrl: manager.url, token, stateDir: join(dir, "a3"), dir });
    expect(late.code).toBe(1);
    expect(late.log).toMatch(/this enrollment token expired at .*; create a new one/);
  });

  it("RemoveHost closes the running agent's stream at once; the agent exits 78 and its secret is refused from then on", async () => {
    agent = await startAgent({ manager, dir });
    const host = await waitFor("host online", async () => (await manager.hosts.listHosts({})).hosts.find((h) => h.state === HostState.ONLINE));
    const exited = new Promise<number | null>((resolve) => agent!.child.once("exit", (code) => resolve(code)));
    const t0 = Date.now();
    await manager.hosts.removeHost({ id: host.id });
    const code = await exited;
    expect(code).toBe(78);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(agent.log()).toMatch(/the manager refused this agent's credential \(this host was removed from berth/);
    expect(agent.log()).toMatch(/exiting with code 78/);
    expect(agent.log()).not.toMatch(/%3B/);
    expect((await manager.hosts.listHosts({})).hosts.map((h) => h.id)).not.toContain(host.id);
    expect(ConnectError.from(await manager.hosts.getHost({ id: host.id }).catch((e: unknown) => e)).code).toBe(Code.NotFound);
    // Restarting the agent with the same credential does not get back in.
    const again = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot });
    const code2 = await new Promise<number | null>((resolve) => again.child.once("exit", (c) => resolve(c)));
    expect(code2).toBe(78);
    // The removal is on the ledger with who did it.
    const { token: me } = await manager.access.whoAmI({});
    const removed = eventsWhere(manager.dbPath, "type = 'host.removed' AND host_id = ?", host.id);
    expect(removed.map((e) => e.actor)).toEqual([`token:${me!.id}:${me!.name}`]);
    agent = undefined;
  });
});

/** Ledger rows straight from the manager's database file (read-only). */
function eventsWhere(dbPath: string, where: string, arg: string): { type: string; actor: string }[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(`SELECT type, actor FROM events WHERE ${where} ORDER BY id`).all(arg) as { type: string; actor: string }[];
  } finally {
    db.close();
  }
}
