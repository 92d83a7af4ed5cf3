/**
 * QueryService.Aggregate at 1,000,000 ledger events (issue 22): a SQLite
 * store (a file, as a manager runs it) filled with events over 30 days —
 * phase changes, stops and starts with their causes, commands, drift, host
 * events — from 500 servers in 5 projects on 20 hosts, then each query timed
 * through runAggregate (manager/src/query/aggregate.ts), the function the
 * RPC calls: the SQL pushdown ones and CEL-path ones. The pushdown queries
 * run first without migration 19's index events_type_time (dropped through a
 * second connection), then with it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import pg from "pg";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { AggregateRequestSchema, QuerySource } from "@berth/proto/berth/v1/query_pb.js";
import { openStore } from "../manager/src/store/open.js";
import { SecretBox } from "../manager/src/store/secrets.js";
import type { Store, WriteOp } from "../manager/src/store/store.js";
import { pushdown, runAggregate, type AggregateScope } from "../manager/src/query/aggregate.js";
import type { Report } from "./lib/report.js";
import { provisionStore, type ProvisionedStore } from "./lib/stores.js";

export interface AggregateBenchOptions {
  events: number;
  days: number;
  rounds: number;
  /** The engine: a SQLite file (default) or a database on the bench's private PostgreSQL. */
  engine?: "sqlite" | "postgres";
  keep?: boolean;
}

const SUITE_NAME = "aggregate";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A seeded generator: the same ledger every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Event kinds, weighted, with their reasons: what a fleet's ledger is made of. */
const KINDS: { type: string; weight: number; reasons: string[]; server: boolean }[] = [
  { type: "phase.changed", weight: 28, reasons: ["Started", "Crashed", "Stopped", "OOMKilled", "Unknown"], server: true },
  { type: "command.issued", weight: 16, reasons: ["Reconcile"], server: true },
  { type: "command.succeeded", weight: 15, reasons: [""], server: true },
  { type: "container.died", weight: 9, reasons: ["Crashed", "Exited", "OOMKilled"], server: true },
  { type: "server.start_requested", weight: 5, reasons: [""], server: true },
  { type: "server.stop_requested", weight: 4, reasons: [""], server: true },
  { type: "drift.healed", weight: 6, reasons: [""], server: true },
  { type: "command.failed", weight: 3, reasons: ["Timeout", "DockerError"], server: true },
  { type: "server.updated", weight: 4, reasons: [""], server: true },
  { type: "host.connected", weight: 5, reasons: [""], server: false },
  { type: "host.disconnected", weight: 5, reasons: ["StreamEnded"], server: false },
];
const ACTORS = ["reconciler", "agent", "manager", "token:tok_ci:ci", "token:tok_ops:ops", "schedule:sch_nightly"];

/**
 * Writes the ledger: through store.commit on SQLite; on PostgreSQL straight
 * into the table (one multi-row INSERT per batch: store.commit's per-batch
 * ledger work makes a million events take many minutes there, and what is
 * measured is the reads).
 */
async function fill(store: Store, raw: RawDb, o: AggregateBenchOptions, end: number): Promise<void> {
  const r = rng(20261207);
  const total = KINDS.reduce((s, k) => s + k.weight, 0);
  const start = end - o.days * DAY;
  const step = (o.days * DAY) / o.events;
  const BATCH = 5000;
  for (let i = 0; i < o.events; i += BATCH) {
    const ops: WriteOp[] = [];
    for (let j = i; j < Math.min(o.events, i + BATCH); j++) {
      let w = r() * total;
      const kind = KINDS.find((k) => (w -= k.weight) < 0) ?? KINDS[0]!;
      const server = Math.floor(r() ** 2 * 500);
      const host = kind.server ? server % 20 : Math.floor(r() * 20);
      ops.push({
        op: "event.append",
        at: Math.floor(start + j * step),
        event: {
          type: kind.type,
          reason: kind.reasons[Math.floor(r() * kind.reasons.length)]!,
          project: kind.server ? `p${server % 5}` : "",
          serverId: kind.server ? `srv_${String(server).padStart(12, "0")}` : "",
          hostId: `host_${String(host).padStart(4, "0")}`,
          actor: ACTORS[Math.floor(r() * ACTORS.length)]!,
          message: kind.server ? `server s${server}: ${kind.type} (${r() < 0.1 ? "exit code 137" : "ok"})` : `host h${host}`,
        },
      });
    }
    if (store.engine === "sqlite") await store.commit(ops);
    else await raw.insertEvents(ops.flatMap((op) => (op.op === "event.append" ? [{ ...op.event, at: op.at }] : [])));
  }
}

/** DDL on the bench's database through a connection of its own. */
interface RawDb {
  exec(sql: string): Promise<void>;
  /** PostgreSQL only: events in one INSERT. */
  insertEvents(events: { at: number; type: string; reason?: string; project?: string; serverId?: string; hostId?: string; actor?: string; message?: string }[]): Promise<void>;
  close(): Promise<void>;
}

async function rawDb(p: ProvisionedStore, dir: string): Promise<RawDb> {
  if (p.config.engine === "sqlite") {
    const db = new Database(join(dir, "berth.db"));
    return {
      exec: async (sql) => void db.exec(sql),
      insertEvents: () => Promise.reject(new Error("SQLite: write through store.commit")),
      close: async () => void db.close(),
    };
  }
  const client = new pg.Client({ connectionString: p.url });
  await client.connect();
  return {
    exec: async (sql) => void (await client.query(sql)),
    insertEvents: async (es) => {
      const col = (f: (e: (typeof es)[number]) => string | number) => es.map(f);
      await client.query(
        `INSERT INTO events (time, type, reason, project, server_id, host_id, actor, message)
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])`,
        [col((e) => e.at), col((e) => e.type), col((e) => e.reason ?? ""), col((e) => e.project ?? ""), col((e) => e.serverId ?? ""), col((e) => e.hostId ?? ""), col((e) => e.actor ?? ""), col((e) => e.message ?? "")],
      );
    },
    close: () => client.end(),
  };
}

export async function runAggregateBench(report: Report, o: AggregateBenchOptions): Promise<void> {
  const engine = o.engine ?? "sqlite";
  const SUITE = engine === "sqlite" ? SUITE_NAME : `${SUITE_NAME}:${engine}`;
  const dir = await mkdtemp(join(tmpdir(), "berth-bench-aggregate-"));
  const box = new SecretBox(randomBytes(32));
  const provisioned = await provisionStore({ label: engine, engine, managers: 1 }, dir);
  const store = await openStore(provisioned.url, { secrets: () => box });
  try {
    const end = Date.parse("2026-12-01T00:00:00Z");
    const raw = await rawDb(provisioned, dir);
    let t = performance.now();
    await fill(store, raw, o, end);
    const fillS = (performance.now() - t) / 1000;
    if (engine === "postgres") await raw.exec("ANALYZE events");
    report.figure(SUITE, `fill: ${o.events} events over ${o.days} days (${engine === "sqlite" ? "store.commit" : "INSERT … unnest"}, 5,000 per batch)`, "s", [fillS]);
    process.stdout.write(`[aggregate] ${o.events} events written in ${fillS.toFixed(1)} s\n`);

    const deps = { store, presence: { isConnected: () => true }, now: () => end };
    const q = (query: object) => create(AggregateRequestSchema, { query: { source: QuerySource.EVENTS, ...query } as never, maxGroups: 1000 });
    const cases: { name: string; req: ReturnType<typeof q>; scope: AggregateScope; pushdown?: false }[] = [
      { name: "stops (container.died) per hour over the last day by reason", req: q({ filter: 'event.type == "container.died"', groupBy: ["event.reason"], interval: durationFromMs(HOUR) }), scope: { project: null } },
      { name: "same, project-scoped token (p1)", req: q({ filter: 'event.type == "container.died"', groupBy: ["event.reason"], interval: durationFromMs(HOUR) }), scope: { project: "p1" } },
      { name: "crashes per server over 7 days (daily buckets, min_total 4)", req: q({ filter: 'event.type == "container.died" && event.reason == "Crashed"', groupBy: ["event.server_id"], interval: durationFromMs(DAY), window: durationFromMs(7 * DAY), minTotal: 4n }), scope: { project: null } },
      { name: "every event per hour by type over 30 days", req: q({ groupBy: ["event.type"], interval: durationFromMs(HOUR), window: durationFromMs(30 * DAY) }), scope: { project: null } },
      { name: "stops per hour by reason, last day, through CEL (pushdown off)", req: q({ filter: 'event.type == "container.died"', groupBy: ["event.reason"], interval: durationFromMs(HOUR) }), scope: { project: null }, pushdown: false },
      { name: "CEL: exit 137 server events per hour by type+reason, last day", req: q({ filter: 'event.type.startsWith("server.") && event.message.contains("137")', groupBy: ['event.type + "/" + event.reason'], interval: durationFromMs(HOUR) }), scope: { project: null } },
      { name: "CEL: same over 7 days", req: q({ filter: 'event.type.startsWith("server.") && event.message.contains("137")', groupBy: ['event.type + "/" + event.reason'], interval: durationFromMs(HOUR), window: durationFromMs(7 * DAY) }), scope: { project: null } },
    ];
    const pushed = (c: (typeof cases)[number]) => c.pushdown !== false && pushdown(c.req.query!.filter, c.req.query!.groupBy) !== undefined;
    await raw.exec("DROP INDEX events_type_time");
    const runs = [
      ...cases.filter(pushed).map((c) => ({ ...c, name: `${c.name}, without events_type_time` })),
      { name: "", req: undefined, scope: { project: null } },
      ...cases,
    ];
    for (const c of runs) {
      if (!c.req) {
        t = performance.now();
        await raw.exec("CREATE INDEX events_type_time ON events (type, time)");
        if (engine === "postgres") await raw.exec("ANALYZE events");
        const built = performance.now() - t;
        report.figure(SUITE, "CREATE INDEX events_type_time (migration 19) on 1,000,000 events", "ms", [built]);
        process.stdout.write(`[aggregate] CREATE INDEX events_type_time: ${built.toFixed(0)} ms\n`);
        continue;
      }
      const path = pushed(c as (typeof cases)[number]) ? "SQL" : "CEL";
      const ms: number[] = [];
      let answer = "";
      for (let i = 0; i < o.rounds + 1; i++) {
        t = performance.now();
        const r = await runAggregate({ ...deps, ...(c.pushdown === false ? { pushdown: false } : {}) }, c.scope, c.req);
        const took = performance.now() - t;
        if (i > 0) ms.push(took);
        answer = `${r.groups.length} groups, ${r.bucketStarts.length} buckets, matched ${r.matched}, scanned ${r.scanned}`;
      }
      ms.sort((a, b) => a - b);
      report.figure(SUITE, `${c.name} [${path}]`, "ms", ms, answer);
      process.stdout.write(`[aggregate] ${c.name} [${path}]: median ${ms[Math.floor(ms.length / 2)]!.toFixed(1)} ms, max ${ms.at(-1)!.toFixed(1)} ms (${answer})\n`);
    }
    await raw.close();
  } finally {
    await store.close();
    await provisioned.release();
    if (!o.keep) await rm(dir, { recursive: true, force: true });
    else process.stdout.write(`[aggregate] kept ${dir}\n`);
  }
}
