/**
 * Property-based fuzzing of every RPC of every berth.v1 service against a
 * real in-process manager (HTTP/2, interceptors, handlers, the test engine's store): requests
 * built from each method's descriptor with hostile field values, sent with
 * tokens of every role (and none). Each answer is OK or a precise code —
 * never Internal or Unknown — and a refused call writes no record.
 *
 * FUZZ_RUNS=n sets the number of requests per method: default 40 on SQLite ("unit"), 20 on
 * PostgreSQL ("unit-pg"). Most of what a case exercises (decoding, validation, access
 * control, the handlers' answers) is the same code on either engine and gets its 40 on
 * SQLite; the PostgreSQL run keeps every method, every seed and the same properties
 * (a refused call writes nothing, reconciles interleaving with real commits) at half the
 * count, which halves its time (75 s of the unit suite's wall time was this file on PostgreSQL).
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { AgentService } from "@berth/proto/berth/v1/agent_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";
import { QueryService } from "@berth/proto/berth/v1/query_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { ConflictError } from "../errors.js";
import { assertEachSeed, hostileString, messageArb, PRECISE, recordSnapshot, ScriptedAgent, startTestManager, seedsLabel, type TestManager } from "../../testing/fuzz-kit.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? (process.env.BERTH_TEST_STORE === "postgres" ? 20 : 40));
const SERVICES: DescService[] = [ServerService, HostService, OrphanService, EventService, AlertService, AccessService, AgentService, BackupService, FileService, UsageService, ScheduleService, SavedQueryService, QueryService];

describe(`fuzz: every RPC answers a precise code and a refused call writes nothing${seedsLabel()}`, () => {
  let tm: TestManager;
  let agent: ScriptedAgent;
  const pool: string[] = [];
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    tm = await startTestManager();
    agent = await ScriptedAgent.enroll(tm);
    agent.connect();
    const servers = createClient(ServerService, tm.transport());
    for (let i = 0; i < 100 && !tm.manager.hub.isConnected(agent.hostId); i++) await new Promise((r) => setTimeout(r, 20));
    for (const name of ["alpha", "beta", "gamma"]) {
      const { server } = await servers.createServer({ spec: { name, image: "busybox:1", hostId: agent.hostId, ports: name === "alpha" ? [{ hostPort: 8080, containerPort: 80 }] : [] } });
      pool.push(server!.id, name);
    }
    await servers.deleteServer({ id: "gamma" });
    const access = createClient(AccessService, tm.transport());
    for (const role of [Role.VIEWER, Role.OPERATOR, Role.ADMIN]) {
      const { secret } = await access.createToken({ name: `fuzz-${role}`, role, project: "default" });
      tokens[Role[role]!] = secret;
    }
    tokens.ALL_ADMIN = tm.adminToken;
    tokens.NONE = "";
    tokens.GARBAGE = "brt_notatoken";
    pool.push(agent.hostId, "default", "busybox:1", "/data");
  });

  afterAll(async () => {
    await agent?.close();
    await tm?.close();
  });

  /** Mostly the all-projects admin, so requests get past access control and into the handlers. */
  const whoArb = () => fc.oneof({ weight: 6, arbitrary: fc.constant("ALL_ADMIN") }, { weight: 4, arbitrary: fc.constantFrom(...Object.keys(tokens)) });

  /** Lets the reconciler and the scripted agent finish what the last call started. */
  async function quiet(): Promise<void> {
    for (let calm = 0, i = 0; calm < 3 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 2));
      calm = tm.manager.reconciler.queue.length === 0 ? calm + 1 : 0;
    }
    // Requeues scheduled for later (deadlines, retention, exit grace) would otherwise
    // land between the two snapshots: reconcile everything to its fixed point first
    // (level-based, so a second pass writes nothing).
    for (let pass = 0; pass < 2; pass++) {
      for (const id of await tm.manager.store.allServerIds()) await reconcileAgain(id);
    }
  }

  /**
   * One reconcile of `id`, called directly: not serialised with the manager's own queue, so it
   * may meet that queue's write (ConflictError, nothing written; on PostgreSQL reads and commits
   * interleave for real). Then read and decide again, as the queue does.
   */
  async function reconcileAgain(id: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await tm.manager.reconciler.reconcile(id, "fuzz quiesce");
        return;
      } catch (err) {
        if (!(err instanceof ConflictError) || attempt >= 10) throw err;
      }
    }
  }

  async function invoke(service: DescService, method: DescMethod, req: unknown, token: string): Promise<ConnectError | undefined> {
    const client = createClient(service, tm.transport(token)) as unknown as Record<string, (req: unknown, opts: object) => unknown>;
    const call = client[method.localName]!;
    const signal = AbortSignal.timeout(method.methodKind === "server_streaming" ? 300 : 10_000);
    try {
      if (method.methodKind === "server_streaming") {
        // The first message (or the refusal) is the answer; then hang up.
        for await (const _ of call(req, { signal }) as AsyncIterable<unknown>) break;
      } else {
        await call(req, { signal });
      }
      return undefined;
    } catch (err) {
      const e = ConnectError.from(err);
      // Our own hang-up of a stream that had nothing to say yet.
      if (signal.aborted && method.methodKind === "server_streaming") return undefined;
      return e;
    }
  }

  for (const service of SERVICES) {
    for (const method of service.methods) {
      if (method.methodKind === "bidi_streaming") continue; // AgentService.Connect: agent-link.fuzz.test.ts
      it(`${service.typeName}.${method.name}`, async () => {
        const strings = hostileString(pool);
        await assertEachSeed(
          fc.asyncProperty(messageArb(method.input, strings), whoArb(), async (req, who) => {
            await quiet();
            const before = await recordSnapshot(tm);
            const err = await invoke(service, method, req, tokens[who]!);
            tally(method.name, err ? Code[err.code]! : "OK");
            if (!err) return;
            expect(PRECISE.has(err.code), `${method.name} as ${who} answered ${Code[err.code]}: ${err.rawMessage}`).toBe(true);
            expect(err.rawMessage.length, "an error says what is wrong").toBeGreaterThan(0);
            await quiet();
            expect(await recordSnapshot(tm), `${method.name} as ${who} refused with ${Code[err.code]} but wrote records`).toBe(before);
          }),
          { numRuns: RUNS },
        );
      }, 60_000);
    }
  }

  const outcomes = new Map<string, Map<string, number>>();
  function tally(method: string, outcome: string): void {
    const m = outcomes.get(method) ?? new Map<string, number>();
    m.set(outcome, (m.get(outcome) ?? 0) + 1);
    outcomes.set(method, m);
  }

  it("CreateServer/UpdateServer with near-valid specs: OK, or refused naming the field (InvalidArgument), a conflict (FailedPrecondition) or a duplicate (AlreadyExists)", async () => {
    const servers = createClient(ServerService, tm.transport());
    const strings = hostileString(pool);
    const port = fc.record({
      hostPort: fc.oneof(fc.integer({ min: 1, max: 65_535 }), fc.constantFrom(0, 8080, 65_536), fc.integer({ min: 1, max: 1000 })),
      containerPort: fc.oneof(fc.integer({ min: 1, max: 65_535 }), fc.constantFrom(0, 70_000)),
      protocol: fc.integer({ min: 0, max: 3 }),
    });
    // A valid spec with at most one field made hostile, so each refusal has one cause to name.
    const valid = fc.record({
      name: fc.stringMatching(/^[a-z][a-z0-9-]{0,12}[a-z0-9]$/),
      image: fc.constantFrom("busybox:1", "registry.example.com:5000/team/app:1.2", `x@sha256:${"a".repeat(64)}`),
      command: fc.array(fc.string({ maxLength: 20 }).filter((x) => !x.includes("\u0000")), { maxLength: 3 }),
      env: fc.dictionary(fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/), fc.string({ maxLength: 10 }).filter((x) => !x.includes("\u0000")), { maxKeys: 3 }),
      ports: fc.array(fc.record({ hostPort: fc.integer({ min: 9000, max: 9100 }), containerPort: fc.integer({ min: 1, max: 65_535 }), protocol: fc.constantFrom(1, 2) }), { maxLength: 2 }),
      dataMountPath: fc.constantFrom("", "/data", "/srv/data"),
      restartPolicy: fc.integer({ min: 0, max: 3 }),
      desiredState: fc.integer({ min: 0, max: 3 }),
      hostId: fc.constantFrom("", agent.hostId),
    });
    const hostile: Record<string, fc.Arbitrary<unknown>> = {
      name: strings,
      image: strings,
      command: fc.array(strings, { minLength: 1, maxLength: 3 }),
      env: fc.dictionary(strings, strings, { minKeys: 1, maxKeys: 3 }),
      ports: fc.oneof(fc.array(port, { minLength: 1, maxLength: 3 }), port.map((p) => [p, p])),
      dataMountPath: fc.oneof(fc.constantFrom("/", "/a/../b", "relative", "/x\u0000y"), strings),
      restartPolicy: fc.integer({ min: -3, max: 50 }),
      desiredState: fc.integer({ min: -3, max: 50 }),
      hostId: fc.oneof(fc.constant("host_nope"), strings),
    };
    const spec = fc.tuple(valid, fc.option(fc.constantFrom(...Object.keys(hostile)), { freq: 3 })).chain(([v, field]) =>
      field ? hostile[field]!.map((x) => ({ ...v, [field]: x })) : fc.constant(v),
    );
    await assertEachSeed(
      fc.asyncProperty(spec, fc.boolean(), fc.constantFrom(...pool.slice(0, 6)), async (s, update, target) => {
        await quiet();
        const before = await recordSnapshot(tm);
        try {
          const res = update ? await servers.updateServer({ id: target, spec: s }) : await servers.createServer({ spec: s });
          tally(update ? "UpdateServer*" : "CreateServer*", "OK");
          // Accepted: stored normalized and readable.
          const { server } = await servers.getServer({ id: res.server!.id });
          expect(server!.spec!.name).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
          expect(server!.spec!.dataMountPath.startsWith("/")).toBe(true);
        } catch (err) {
          const e = ConnectError.from(err);
          tally(update ? "UpdateServer*" : "CreateServer*", Code[e.code]!);
          expect([Code.InvalidArgument, Code.FailedPrecondition, Code.AlreadyExists, Code.NotFound], `${Code[e.code]}: ${e.rawMessage}`).toContain(e.code);
          if (e.code === Code.InvalidArgument) expect(e.rawMessage).toMatch(/^(spec(\.\w+|\.ports\[\d+\]\.\w+|\.env\["(?:[^"\\]|\\.)*"\]|\.command\[\d+\])?|id): /);
          await quiet();
          expect(await recordSnapshot(tm)).toBe(before);
        }
      }),
      { numRuns: RUNS * 5 },
    );
  }, 120_000);

  it("the manager still serves after all of it", async () => {
    // FUZZ_STATS=1: how deep the requests got (OK answers mean they passed validation and lookups).
    if (process.env.FUZZ_STATS) for (const [m, o] of outcomes) console.log(m.padEnd(22), [...o].map(([k, n]) => `${k} ${n}`).join(", "));
    // (The fuzzed calls may have purged every server: only that reads work matters.)
    await createClient(ServerService, tm.transport()).listServers({ showDeleted: true });
    await createClient(HostService, tm.transport()).listHosts({});
    // SQLite only: the file is intact (PostgreSQL has no such check short of amcheck, and keeps its own pages).
    if (tm.engine === "sqlite") {
      const db = new Database(tm.dbPath, { readonly: true });
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      db.close();
    }
  });
});
