/**
 * Test support for the fuzz suites (`*.fuzz.test.ts`): an in-process
 * manager on port 0 with a temporary database on the test engine (SQLite
 * file, or a fresh PostgreSQL database: BERTH_TEST_STORE), a scripted agent speaking the
 * real wire protocol, arbitraries that build any berth.v1 request from its
 * descriptor with hostile field values, and a snapshot of every record an
 * API call may write (to prove a refused call wrote nothing).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import fc from "fast-check";
import pg from "pg";
import { pino } from "pino";
import { inject } from "vitest";
import { AgentMessageSchema, AgentService, type AgentMessage, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { AsyncQueue } from "../src/link/async-queue.js";
import { createLogger } from "../src/log.js";
import { buildManager, type Manager, type ManagerConfig } from "../src/manager.js";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "../../test/harness/postgres.js";
import { testEngine, type TestEngine } from "./store.js";

/** Seeds every CI run tries, so a failure there is reproducible from the log. */
export const FIXED_FUZZ_SEEDS: readonly number[] = [1, 20_261_205, 424_242];

/**
 * The seeds a fuzz suite runs with: `BERTH_FUZZ_SEED=n` alone (to reproduce a
 * failure), otherwise the fixed list plus one fresh random seed. Each seed is
 * part of its test's name, so a failing run names the seed to reproduce it.
 */
export function fuzzSeeds(env: NodeJS.ProcessEnv = process.env): number[] {
  const forced = env.BERTH_FUZZ_SEED;
  if (forced !== undefined && forced !== "") {
    const seed = Number(forced);
    if (!Number.isSafeInteger(seed)) throw new Error(`BERTH_FUZZ_SEED must be an integer, got "${forced}"`);
    return [seed];
  }
  return [...FIXED_FUZZ_SEEDS, Math.floor(Math.random() * 2 ** 31)];
}

/** This process's seeds (one random seed per test file). */
export const SUITE_SEEDS: readonly number[] = fuzzSeeds();

/** " (seeds 1, 20261205, 424242, 98765)": for a describe() name, so every run reports its seeds. */
export const seedsLabel = (seeds: readonly number[] = SUITE_SEEDS): string => ` (seeds ${seeds.join(", ")}; BERTH_FUZZ_SEED=n reruns one)`;

/**
 * `fc.assert` once per seed, the run budget `params.numRuns` split between
 * them. fast-check's failure report names the seed and the shrunk path.
 */
export async function assertEachSeed<Ts>(
  property: fc.IAsyncPropertyWithHooks<Ts> | fc.IPropertyWithHooks<Ts>,
  params: fc.Parameters<Ts> & { numRuns: number },
  seeds: readonly number[] = SUITE_SEEDS,
): Promise<void> {
  const numRuns = Math.max(1, Math.ceil(params.numRuns / seeds.length));
  for (const seed of seeds) await fc.assert(property, { ...params, numRuns, seed });
}

export const bearer = (token: string): Interceptor => (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

export interface TestManager {
  manager: Manager;
  url: string;
  /** The engine holding its database. */
  engine: TestEngine;
  /** The SQLite database file; throws on PostgreSQL (read with `rows` there). */
  readonly dbPath: string;
  adminToken: string;
  /** Where its database and secret key are, as ManagerConfig takes them: to start another manager on the same database. */
  storeConfig: Pick<ManagerConfig, "store" | "dbPath" | "secretKeyFile">;
  transport(token?: string): Transport;
  /**
   * Runs a read-only SQL query on the manager's database with a connection of
   * its own (beside the manager's), rows as arrays. The tables are the same on
   * both engines (store/migrations.ts); values may be typed differently
   * (PostgreSQL's BIGINT comes back as a string).
   */
  rows(sql: string): Promise<unknown[][]>;
  /** The manager's last log lines (info and up, JSON; all of them go to stdout instead with FUZZ_LOG): print them when a test fails. */
  recentLog(): string;
  close(): Promise<void>;
}

/** Keeps the last `max` lines written to it. */
function logRing(max: number): { write(line: string): void; text(): string } {
  const lines: string[] = [];
  return {
    write(line) {
      lines.push(line.trimEnd());
      if (lines.length > max) lines.shift();
    },
    text: () => lines.join("\n"),
  };
}

/**
 * A real manager (every service, interceptor and the HTTP server) on 127.0.0.1:0 with a fresh
 * database: a SQLite file in a temporary directory, or (engine "postgres", default from
 * BERTH_TEST_STORE) a new database on the run's PostgreSQL server, dropped by `close()`.
 */
export async function startTestManager(config: Partial<ManagerConfig> = {}, opts: { engine?: TestEngine } = {}): Promise<TestManager> {
  const engine = opts.engine ?? testEngine();
  const dir = mkdtempSync(join(tmpdir(), "berth-fuzz-"));
  const dbPath = join(dir, "berth.db");
  let store: { store: string; secretKeyFile: string } | { dbPath: string } = { dbPath };
  let pgServer: string | undefined;
  let pgName: string | undefined;
  let pgPool: pg.Pool | undefined;
  if (engine === "postgres") {
    pgServer = inject("postgres").url;
    if (!pgServer) throw new Error(`BERTH_TEST_STORE=postgres needs the run's PostgreSQL server: ${inject("postgres").unavailable ?? "none was provided"}`);
    pgName = uniqueDatabaseName("berth_fuzz");
    const url = await createDatabase(pgServer, pgName);
    // A PostgreSQL store has no directory for the secret key: name a file of this manager's own.
    store = { store: url, secretKeyFile: join(dir, "secret.key") };
    pgPool = new pg.Pool({ connectionString: url, max: 1 });
    // An idle connection ended by the server (the database dropped, the run's server stopping)
    // emits 'error' on the pool: without a listener that is an uncaught exception in whatever
    // file this worker runs next (seen in a fresh run, after this file's tests had passed).
    pgPool.on("error", () => {});
  }
  const removeDatabase = async () => {
    await pgPool?.end();
    if (pgServer && pgName) await dropDatabase(pgServer, pgName);
    rmSync(dir, { recursive: true, force: true });
  };
  const ring = logRing(300);
  let manager: Manager;
  try {
    manager = await buildManager({
      listen: "127.0.0.1:0",
      ...store,
      // FUZZ_LOG=error shows what the manager logs (e.g. the stack of an Internal answer);
      // without it the last lines are kept for recentLog().
      log: process.env.FUZZ_LOG ? createLogger(process.env.FUZZ_LOG, "fuzz") : pino({ level: "info", name: "fuzz" }, ring),
      // The fuzzers send thousands of changes per second; the rate limit has its own tests.
      limits: { ratePerSecond: 1e9, burst: 1e9, maxStreams: 1000 },
      ...config,
    });
  } catch (err) {
    await removeDatabase();
    throw err;
  }
  const { url } = await manager.listen();
  const adminToken = manager.initialAdminToken!;
  let reader: Database.Database | undefined;
  // One transport (one HTTP/2 connection) per token, as a real client keeps: a new
  // connection per call would run into the manager's per-IP connection cap.
  const transports = new Map<string, Transport>();
  const transportFor = (token: string): Transport => {
    let t = transports.get(token);
    if (!t) transports.set(token, (t = createGrpcTransport({ baseUrl: url, interceptors: token ? [bearer(token)] : [] })));
    return t;
  };
  return {
    manager,
    url,
    engine,
    get dbPath(): string {
      if (engine !== "sqlite") throw new Error("TestManager.dbPath is the SQLite file; this manager runs on PostgreSQL: read its database with rows(sql)");
      return dbPath;
    },
    adminToken,
    storeConfig: store,
    transport: (token = adminToken) => transportFor(token),
    recentLog: () => ring.text(),
    async rows(sql) {
      if (pgPool) return (await pgPool.query({ text: sql, rowMode: "array" })).rows as unknown[][];
      // One read-only connection, kept: outside a transaction each statement sees every committed write (WAL).
      reader ??= new Database(dbPath, { readonly: true, fileMustExist: true });
      return reader.prepare(sql).raw().all() as unknown[][];
    },
    async close() {
      reader?.close();
      try {
        await manager.close();
      } finally {
        await removeDatabase();
      }
    },
  };
}

/**
 * An agent speaking the real protocol over HTTP/2, scripted by the test: it
 * enrolls, sends Hello and an empty inventory, heartbeats, answers every
 * command with a failure (so nothing waits for it) and ends every log stream.
 */
export class ScriptedAgent {
  readonly received: ManagerMessage[] = [];
  private out = new AsyncQueue<AgentMessage>();
  private timer: NodeJS.Timeout | undefined;
  ended: Promise<ConnectError | undefined> = Promise.resolve(undefined);
  answerCommands = true;

  /**
   * One HTTP/2 connection for every stream this agent opens, as the real
   * agent's grpc-js channel keeps one across reconnects (it opened a new
   * connection per connect(), hundreds per fuzz run).
   */
  private readonly transport: Transport;

  private constructor(
    readonly hostId: string,
    readonly secret: string,
    url: string,
  ) {
    this.transport = createGrpcTransport({ baseUrl: url, interceptors: [bearer(`${hostId}.${secret}`)] });
  }

  static async enroll(tm: TestManager, hostname = "fuzz-host"): Promise<ScriptedAgent> {
    const { token } = await createClient(HostService, tm.transport()).createEnrollmentToken({});
    const res = await createClient(AgentService, tm.transport("")).enroll({ token, hostname });
    return new ScriptedAgent(res.hostId, res.secret, tm.url);
  }

  /** Opens the stream; with `greet`, Hello and an empty inventory first (the host is then connected). */
  connect(greet = true): void {
    this.out = new AsyncQueue<AgentMessage>();
    const stream = createClient(AgentService, this.transport).connect(this.out);
    this.ended = (async () => {
      try {
        for await (const m of stream) {
          this.received.push(m);
          this.answer(m);
        }
        return undefined;
      } catch (err) {
        return ConnectError.from(err);
      } finally {
        if (this.timer) clearInterval(this.timer);
      }
    })();
    if (greet) {
      this.send({ case: "hello", value: { hostname: "fuzz-host", agentVersion: "fuzz", dockerVersion: "0", dataRoot: "/nonexistent", dockerReachable: true } });
      this.send({ case: "inventory", value: { dockerReachable: true } });
    }
    this.timer = setInterval(() => this.send({ case: "heartbeat", value: { dockerReachable: true } }), 1_000);
    this.timer.unref();
  }

  send(body: MessageInitShape<typeof AgentMessageSchema>["body"]): void {
    this.out.push(create(AgentMessageSchema, { body }));
  }

  sendRaw(msg: AgentMessage): void {
    this.out.push(msg);
  }

  private answer(m: ManagerMessage): void {
    if (m.body.case === "command" && this.answerCommands) {
      this.send({ case: "commandResult", value: { commandId: m.body.value.id, success: false, reason: "Scripted", message: "the scripted agent does nothing" } });
    } else if (m.body.case === "logRequest") {
      this.send({ case: "logChunk", value: { requestId: m.body.value.requestId, end: true } });
    }
  }

  /** Ends the stream from the agent's side; resolves with how the manager ended it (throws if it does not within 5 s). */
  async close(): Promise<ConnectError | undefined> {
    this.out.close();
    if (this.timer) clearInterval(this.timer);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("the manager did not end the agent stream within 5s of the agent closing it")), 5_000)));
    try {
      return await Promise.race([this.ended, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---------------------------------------------------------------------------
// Arbitraries

/** Strings an attacker or a careless script would send. `pool`: real ids and names, so calls get past lookups. */
export function hostileString(pool: readonly string[] = []): fc.Arbitrary<string> {
  const nasty = [
    "",
    " ",
    "\t\n",
    "..",
    "../../etc/passwd",
    "/",
    "/etc/shadow",
    "C:\\Windows\\system32",
    "srv_",
    "host_",
    "orp_",
    "tok_",
    "srv_aaaaaaaaaaaa",
    "x' OR '1'='1",
    "'; DROP TABLE servers; --",
    "$(reboot)",
    "`id`",
    "${jndi:ldap://x/a}",
    "<script>alert(1)</script>",
    "%00",
    "\u0000",
    "a\u0000b",
    "\uFEFF",
    "\uD83D\uDCA5",
    "名前",
    "Ω≈ç√",
    "\u202Eevil",
    "default",
    "*",
    "-1",
    "9".repeat(40),
    "a".repeat(64),
    "b".repeat(254),
    "c".repeat(70_000),
    "ROLE_ADMIN",
    "brt_",
  ];
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...nasty) },
    { weight: 2, arbitrary: fc.string({ maxLength: 80 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/) },
    ...(pool.length ? [{ weight: 4, arbitrary: fc.constantFrom(...pool) }] : []),
  );
}

const INT32 = fc.oneof(fc.constantFrom(0, -1, 1, 2 ** 31 - 1, -(2 ** 31), 65_535, 65_536, 3600, 3601), fc.integer());
const UINT32 = fc.oneof(fc.constantFrom(0, 1, 2 ** 32 - 1, 65_535, 65_536, 3600, 3601, 1000, 1001), fc.nat({ max: 2 ** 32 - 1 }).map((n) => n >>> 0));
const INT64 = fc.oneof(fc.constantFrom(0n, -1n, 1n, 2n ** 63n - 1n, -(2n ** 63n)), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const UINT64 = fc.oneof(fc.constantFrom(0n, 1n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));

function scalar(t: ScalarType, strings: fc.Arbitrary<string>): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.STRING:
      return strings;
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 64 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return INT32;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return UINT32;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return INT64;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return UINT64;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.oneof(fc.double({ noNaN: true }), fc.constantFrom(0, -1, 1e308));
  }
}

/**
 * Any message of `schema`, every field drawn independently: hostile strings,
 * extreme numbers, unknown enum values, empty and long lists, duplicate list
 * entries, nested messages down to `depth`.
 */
export function messageArb<D extends DescMessage>(schema: D, strings: fc.Arbitrary<string>, depth = 3): fc.Arbitrary<MessageShape<D>> {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of schema.fields) {
    let arb: fc.Arbitrary<unknown> | undefined;
    const one = (): fc.Arbitrary<unknown> | undefined => {
      switch (f.fieldKind) {
        case "scalar":
          return scalar(f.scalar, strings);
        case "enum":
          return fc.oneof(fc.constantFrom(...f.enum.values.map((v) => v.number)), fc.integer({ min: -5, max: 100 }));
        case "message":
          return depth > 0 ? messageArb(f.message, strings, depth - 1) : undefined;
        case "list": {
          const item =
            f.listKind === "scalar" ? scalar(f.scalar, strings) :
            f.listKind === "enum" ? fc.integer({ min: -1, max: 20 }) :
            depth > 0 ? messageArb(f.message, strings, depth - 1) : undefined;
          if (!item) return undefined;
          // Duplicates on purpose: the same port twice, the same phase twice.
          return fc.oneof(fc.array(item, { maxLength: 4 }), item.chain((x) => fc.constant([x, x])), fc.array(item, { minLength: 100, maxLength: 120 }));
        }
        case "map": {
          const value =
            f.mapKind === "scalar" ? scalar(f.scalar, strings) :
            f.mapKind === "enum" ? fc.integer({ min: 0, max: 5 }) :
            depth > 0 ? messageArb(f.message, strings, depth - 1) : undefined;
          if (!value) return undefined;
          const key = f.mapKey === ScalarType.STRING ? strings : scalar(f.mapKey, strings);
          return fc.array(fc.tuple(key, value), { maxLength: 4 }).map((kv) => Object.fromEntries(kv.map(([k, v]) => [String(k), v])));
        }
      }
    };
    arb = one();
    if (arb) fields[f.localName] = fc.option(arb, { nil: undefined, freq: 3 });
  }
  const oneofs = schema.oneofs.map((o) => {
    const cases = o.fields
      .map((f) => ({ f, arb: f.fieldKind === "message" ? (depth > 0 ? messageArb(f.message, strings, depth - 1) : undefined) : f.fieldKind === "scalar" ? scalar(f.scalar, strings) : undefined }))
      .filter((c): c is { f: typeof c.f; arb: fc.Arbitrary<unknown> } => c.arb !== undefined);
    return [o.localName, cases.length ? fc.oneof(...cases.map((c) => c.arb.map((value) => ({ case: c.f.localName, value })))) : fc.constant({ case: undefined })] as const;
  });
  for (const [name, arb] of oneofs) fields[name] = arb;
  // Oneof members are not plain fields of the init shape.
  for (const o of schema.oneofs) for (const f of o.fields) delete fields[f.localName];
  return fc.record(fields, { requiredKeys: [] }).map((init) => create(schema, init as MessageInitShape<D>));
}

// ---------------------------------------------------------------------------
// Snapshots

/**
 * Every record an API call may write, as one string: equal before and after
 * a refused call proves it wrote nothing. Left out: what changes by itself
 * (a token's last use, the write probe, host heartbeats and facts, and the
 * reconciler's observations of servers). Read with SQL on either engine
 * (the same tables and columns on both), so nothing the contract does not
 * list escapes it.
 */
export async function recordSnapshot(tm: Pick<TestManager, "rows">): Promise<string> {
  const q = async (sql: string) => JSON.stringify(await tm.rows(sql), (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
  const parts = await Promise.all([
    q("SELECT id, project, name, host_id, generation, spec_json, created_at, updated_at, deleted_at, lifecycle_json FROM servers ORDER BY id"),
    q("SELECT id, server_id, host_id, kind, created_at FROM commands ORDER BY id"),
    q("SELECT id, type, server_id, actor FROM events WHERE actor LIKE 'token:%' OR actor IN ('operator', 'bootstrap', 'cli') ORDER BY id"),
    q("SELECT id, name, role, project, created_at, revoked_at FROM tokens ORDER BY id"),
    q("SELECT * FROM enrollment_tokens ORDER BY 1"),
    q("SELECT id, name, removed_at FROM hosts ORDER BY id"),
    // Only what an operator does to alerts: firing and resolving is the evaluator's, on its own clock.
    q("SELECT id, acknowledged_by, muted_until FROM alerts WHERE acknowledged_by <> '' OR muted_until IS NOT NULL ORDER BY id"),
    q("SELECT * FROM projects ORDER BY 1"),
  ]);
  return parts.join("\n");
}

/** Codes that say precisely why a request was refused. */
export const PRECISE = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.AlreadyExists,
  Code.ResourceExhausted,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.OutOfRange,
  Code.Unavailable,
  // A stale UpdateServerRequest.expected_version: read the server again and retry.
  Code.Aborted,
]);
