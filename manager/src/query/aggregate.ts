/**
 * QueryService.Aggregate (docs/explore.md, "Aggregates"): counts (and sums)
 * of the records of a source that match a CEL filter, per group (the values
 * of up to 3 group_by expressions) and, for events, per time bucket.
 *
 * Two ways to count events, same answer:
 * - pushdown: when every group_by is a plain Event field among type, reason,
 *   actor, server_id, host_id and project, there is no `sum`, and the filter
 *   is empty or a conjunction of `event.<one of those> == "literal"` and
 *   `event.type.startsWith("literal")`, the database counts
 *   (Store.countEvents: GROUP BY bucket and columns over the time index);
 * - otherwise the window's events are read in id order in batches and each
 *   goes through the CEL filter and expressions, with the budgets of the list
 *   RPCs' filters (cel.ts FilterRun, larger per call) and at most SCAN_CAP
 *   events per call (more: ResourceExhausted, before reading any).
 * Servers and hosts are read in full (as ListServers and ListHosts show them)
 * and counted in one bucket at the time of the call.
 *
 * runAggregate is the one entry: the QueryService handler and
 * SavedQueryService.RunSavedQuery call it with the caller's scope
 * (aggregateScope).
 */
import { create, type Message } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromMs, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { celType, isCelUint, parse } from "@bufbuild/cel";
import type { Expr } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";
import {
  AggregateGroupSchema,
  AggregateResponseSchema,
  QuerySource,
  type AggregateGroup,
  type AggregateQuery,
  type AggregateRequest,
  type AggregateResponse,
} from "@berth/proto/berth/v1/query_pb.js";
import { checkProjectName, projectFor, type Caller } from "../auth/caller.js";
import { InvalidArgumentError } from "../errors.js";
import type { HostPresence } from "../cluster/presence.js";
import { EVENT_COUNT_COLUMNS, type EventCountColumn, type EventCountQuery, type Store } from "../store/store.js";
import type { EventScope } from "../domain/records.js";
import { eventToProto } from "../api/event-service.js";
import { hostToProto, serverToProto } from "../api/convert.js";
import { markOutdatedTemplates } from "../api/template-apply.js";
import { roomWith } from "../hosts/capacity.js";
import { compileFilter, compileValue, FilterRun, ResourceExhaustedError, type CompiledFilter, type CompiledValue, type FilterKind } from "./cel.js";

/** What runAggregate reads: the store, and which hosts are connected (a host's state, as ListHosts shows it). */
export interface AggregateDeps {
  store: Pick<Store, "countEvents" | "eventIdSpan" | "readEventWindow" | "listServers" | "getTemplate" | "listHosts" | "allocationByHost">;
  presence: Pick<HostPresence, "isConnected">;
  /** The clock (ms); default Date.now. */
  now?: () => number;
  /** false: every events query takes the CEL path (tests and the bench compare both); default true. */
  pushdown?: boolean;
  /** Events (or servers) one call may read through CEL; default SCAN_CAP. */
  scanCap?: number;
}

/**
 * Whose records are counted: `project` null counts every project's servers
 * and events, project-less events (hosts, tokens, ...) included; a project
 * counts that project's only (as ListEvents and ListServers scope). Hosts
 * are counted for every caller, as ListHosts lists them.
 */
export type AggregateScope = EventScope;

/** The scope of a caller's request: a project-scoped token's own project (another one: NotFound); an all-projects token's `project`, or every project. */
export function aggregateScope(caller: Caller, requested: string): AggregateScope {
  if (caller.project !== null) return { project: projectFor(caller, requested) };
  const want = requested.trim();
  return { project: want ? checkProjectName(want) : null };
}

/** Groups returned when max_groups is 0. */
export const DEFAULT_MAX_GROUPS = 50;
export const MAX_GROUPS = 1000;
export const MAX_BUCKETS = 1000;
export const MIN_INTERVAL_MS = 1000;
export const DEFAULT_WINDOW_MS = 24 * 3_600_000;
/** Events read through the CEL path per call at most; servers too. */
export const SCAN_CAP = 1_000_000;
/** Distinct groups (before max_groups) one call may make. */
export const MAX_DISTINCT_GROUPS = 100_000;
/** Rows (bucket × group) the database may answer a pushdown with. */
export const MAX_COUNT_ROWS = 1_000_000;
/**
 * Events read per step (readBatch), from at most readSpan ids; the database's
 * counts and id spans per stretch of the window of about chunkMs (a multiple
 * of the interval, so no bucket is cut), the event loop getting a turn
 * between them: SQLite answers on this thread, and a month of a busy ledger
 * is half a second of counting. Tests make them small to cross many steps.
 */
export const _reads = { readBatch: 1000, readSpan: 10_000, chunkMs: 6 * 3_600_000 };

/** [since, until) cut at the multiples of a step that is a multiple of the interval. */
function timeChunks(since: number, until: number, intervalMs: number | undefined): [number, number][] {
  let step = intervalMs === undefined ? _reads.chunkMs : intervalMs * Math.max(1, Math.floor(_reads.chunkMs / intervalMs));
  // A window of years (no interval) in at most MAX_CHUNKS stretches: empty ones cost a query each.
  const least = Math.ceil((until - since) / MAX_CHUNKS);
  if (step < least) step = intervalMs === undefined ? least : Math.ceil(least / intervalMs) * intervalMs;
  const out: [number, number][] = [];
  for (let a = since; a < until; ) {
    const b = Math.min(until, (Math.floor(a / step) + 1) * step);
    out.push([a, b]);
    a = b;
  }
  return out;
}

const MAX_CHUNKS = 400;

const turn = () => new Promise<void>((r) => setImmediate(r));
/** The CEL budgets of one call: larger than a list page's, an aggregate reads a window. */
export const AGGREGATE_LIMITS = { callBudget: 50_000_000, callMs: 20_000 };

/** What each source's CEL expressions are about (undefined: no source set). */
export const QUERY_KINDS: Partial<Record<QuerySource, FilterKind>> = {
  [QuerySource.SERVERS]: "server",
  [QuerySource.HOSTS]: "host",
  [QuerySource.EVENTS]: "event",
};

/**
 * Compiles a query's group_by and sum, InvalidArgument naming the field under
 * `prefix` (`query`, or `spec.query` when a saved query is stored); the types
 * of their values are checked per record when the query runs.
 */
export function compileAggregateExpressions(kind: FilterKind, q: Pick<AggregateQuery, "groupBy" | "sum">, prefix: string): { groupBy: CompiledValue[]; sum: CompiledValue | undefined } {
  return {
    groupBy: q.groupBy.map((g, i) => compileValue(kind, g, `${prefix}.group_by[${i}]`)),
    sum: q.sum.trim() ? compileValue(kind, q.sum, `${prefix}.sum`) : undefined,
  };
}

/**
 * Counts what `req.query` asks within `scope` (see the file's comment and
 * AggregateRequest in proto/berth/v1/query.proto). InvalidArgument names the
 * field (`query.filter`, `query.group_by[1]`, `query.sum`, `query.interval`,
 * `since`, `until`); a query over its budgets is ResourceExhausted.
 */
export async function runAggregate(deps: AggregateDeps, scope: AggregateScope, req: AggregateRequest): Promise<AggregateResponse> {
  const q = req.query;
  if (!q) throw new InvalidArgumentError("query", "required: the source and what to count");
  const kind = QUERY_KINDS[q.source];
  if (!kind) throw new InvalidArgumentError("query.source", "set it to QUERY_SOURCE_SERVERS, QUERY_SOURCE_HOSTS or QUERY_SOURCE_EVENTS");
  if (q.groupBy.length > 3) throw new InvalidArgumentError("query.group_by", "at most 3 expressions");
  if (req.maxGroups < 0 || req.maxGroups > MAX_GROUPS) throw new InvalidArgumentError("max_groups", `between 0 (${DEFAULT_MAX_GROUPS}) and ${MAX_GROUPS}`);
  if (q.minTotal < 0n) throw new InvalidArgumentError("query.min_total", "must not be negative");
  const filter = q.filter.trim() ? compileFilter(kind, q.filter, "query.filter") : undefined;
  const { groupBy, sum } = compileAggregateExpressions(kind, q, "query");
  const now = (deps.now ?? Date.now)();
  const c: Counting = { filter, groupBy, sum, run: new FilterRun(now, AGGREGATE_LIMITS) };
  const out = { maxGroups: req.maxGroups || DEFAULT_MAX_GROUPS, minTotal: Number(q.minTotal) };

  if (kind !== "event") {
    const acc = new Accumulator(1, sum !== undefined);
    const scanned = kind === "server" ? await countServers(deps, scope, c, acc) : await countHosts(deps, c, acc);
    return acc.response({ bucketStarts: [now], since: now, until: now, scanned, ...out });
  }

  const w = eventWindow(q.interval, q.window, req.since, req.until, now);
  const acc = new Accumulator(w.buckets, sum !== undefined);
  const bucketOf = (time: number) => (w.intervalMs === undefined ? 0 : Math.floor(time / w.intervalMs) - w.firstBucket);
  const bucketStarts = Array.from({ length: w.buckets }, (_, i) => (w.intervalMs === undefined ? w.since : (w.firstBucket + i) * w.intervalMs));
  const push = sum === undefined && deps.pushdown !== false ? pushdown(q.filter, q.groupBy) : undefined;
  const base = { project: scope.project, since: w.since, until: w.until, ...(w.intervalMs !== undefined ? { bucketMs: w.intervalMs } : {}) };
  let scanned = 0;
  if (push) {
    for (const [since, until] of timeChunks(w.since, w.until, w.intervalMs)) {
      const rows = await deps.store.countEvents({ ...base, since, until, groupBy: push.groupBy, where: push.where, limit: MAX_COUNT_ROWS + 1 });
      if (rows.length > MAX_COUNT_ROWS) throw tooMany(`more than ${MAX_COUNT_ROWS} (bucket, group) pairs`);
      for (const r of rows) {
        // A bucket number from the database's division: same as bucketOf on any time of it.
        acc.add(r.key, w.intervalMs === undefined ? 0 : r.bucket - w.firstBucket, r.count, 0);
        scanned += r.count;
      }
      await turn();
    }
  } else {
    scanned = await countEventsByCel(deps, base, c, acc, bucketOf);
  }
  return acc.response({ bucketStarts, since: w.since, until: w.until, intervalMs: w.intervalMs ?? w.until - w.since, scanned, ...out });
}

/** The compiled query and this call's budgets. */
interface Counting {
  filter: CompiledFilter | undefined;
  groupBy: CompiledValue[];
  sum: CompiledValue | undefined;
  run: FilterRun;
}

/** Counts one record (filter, key, sum) into `acc`; whether it matched. */
function countOne(c: Counting, acc: Accumulator, msg: Message, bucket: number): boolean {
  if (c.filter && !c.filter.test(msg, c.run)) return false;
  const key = c.groupBy.map((g) => render(g, g.value(msg, c.run)));
  acc.add(key, bucket, 1, c.sum ? numberOf(c.sum, c.sum.value(msg, c.run)) : 0);
  return true;
}

async function countEventsByCel(deps: AggregateDeps, base: Omit<EventCountQuery, "groupBy" | "where" | "limit">, c: Counting, acc: Accumulator, bucketOf: (t: number) => number): Promise<number> {
  const { store } = deps;
  // How many events the window holds, counted by the database (time index) before any is read; and their ids.
  const cap = deps.scanCap ?? SCAN_CAP;
  let inWindow = 0;
  let span: { first: number; last: number } | undefined;
  for (const [since, until] of timeChunks(base.since, base.until, base.bucketMs)) {
    const [n] = await store.countEvents({ project: base.project, since, until, groupBy: [], where: [], limit: 1 });
    inWindow += n?.count ?? 0;
    if (inWindow > cap) break;
    await turn();
    if (!n?.count) continue;
    const s = await store.eventIdSpan({ project: base.project, since, until });
    if (s) span = { first: Math.min(s.first, span?.first ?? s.first), last: Math.max(s.last, span?.last ?? s.last) };
    await turn();
  }
  if (inWindow > cap) {
    throw new ResourceExhaustedError(
      `the window holds more than ${cap} events; a query whose filter, group_by or sum the database cannot count reads at most ${cap}: narrow the window (since/until or query.window), or filter and group only on event.type, reason, actor, server_id, host_id and project with == and type.startsWith (docs/explore.md, "Aggregates")`,
    );
  }
  if (!span) return 0;
  let after = span.first - 1;
  let scanned = 0;
  while (after < span.last) {
    // A bounded id range per read: the database walks at most READ_SPAN ids of the primary key, whatever plan it picks.
    const upTo = Math.min(span.last, after + _reads.readSpan);
    const rows = await store.readEventWindow({ project: base.project, since: base.since, until: base.until, afterId: after, upToId: upTo, limit: _reads.readBatch });
    for (const e of rows) {
      scanned++;
      countOne(c, acc, eventToProto(e), bucketOf(e.time));
      await c.run.pace();
    }
    after = rows.length < _reads.readBatch ? upTo : rows[rows.length - 1]!.id;
  }
  return scanned;
}

async function countServers(deps: AggregateDeps, scope: AggregateScope, c: Counting, acc: Accumulator): Promise<number> {
  let before: { createdAt: number; id: string } | undefined;
  let scanned = 0;
  for (;;) {
    const rows = await deps.store.listServers({ ...(scope.project !== null ? { project: scope.project } : {}), ...(before ? { before } : {}), limit: 500 });
    const servers = rows.map(serverToProto);
    await markOutdatedTemplates(deps.store, servers);
    for (const s of servers) {
      if (++scanned > (deps.scanCap ?? SCAN_CAP)) throw tooMany(`more than ${deps.scanCap ?? SCAN_CAP} servers`);
      countOne(c, acc, s, 0);
      await c.run.pace();
    }
    const last = rows.at(-1);
    if (rows.length < 500 || !last) return scanned;
    before = { createdAt: last.createdAt, id: last.id };
  }
}

async function countHosts(deps: AggregateDeps, c: Counting, acc: Accumulator): Promise<number> {
  const [hosts, allocation] = await Promise.all([deps.store.listHosts(), deps.store.allocationByHost()]);
  for (const h of hosts) {
    const a = allocation.get(h.id) ?? { servers: 0, cpus: 0, memoryBytes: 0 };
    countOne(c, acc, hostToProto(h, deps.presence.isConnected(h.id), a.servers, roomWith(h, a)), 0);
    await c.run.pace();
  }
  return hosts.length;
}

function tooMany(what: string): ResourceExhaustedError {
  return new ResourceExhaustedError(`the query makes ${what}; narrow the window, the filter or the group_by expressions`);
}

/** The window [since, until) and its buckets. */
export interface EventWindow {
  since: number;
  until: number;
  /** Unset: one bucket, the whole window. */
  intervalMs: number | undefined;
  /** The number (time / interval) of the first bucket. */
  firstBucket: number;
  buckets: number;
}

/** The window of an events query (defaults: until now, since until - window, window 24 h); InvalidArgument on the field at fault. */
export function eventWindow(interval: Duration | undefined, window: Duration | undefined, since: Timestamp | undefined, until: Timestamp | undefined, now: number): EventWindow {
  const windowMs = window ? durationField(window, "query.window") : DEFAULT_WINDOW_MS;
  if (windowMs <= 0) throw new InvalidArgumentError("query.window", "must be positive, e.g. 86400s for the last day; unset means 24 hours");
  const untilMs = until ? timeField(until, "until") : now;
  const sinceMs = since ? timeField(since, "since") : untilMs - windowMs;
  if (untilMs <= sinceMs) throw new InvalidArgumentError("until", "must be after since: the window is [since, until)");
  if (!interval) return { since: sinceMs, until: untilMs, intervalMs: undefined, firstBucket: 0, buckets: 1 };
  const iv = Math.floor(durationField(interval, "query.interval"));
  if (iv < MIN_INTERVAL_MS) throw new InvalidArgumentError("query.interval", "must be at least 1s (e.g. 3600s for hourly buckets); unset makes the whole window one bucket");
  const firstBucket = Math.floor(sinceMs / iv);
  const buckets = Math.ceil(untilMs / iv) - firstBucket;
  if (buckets > MAX_BUCKETS) {
    throw new InvalidArgumentError(
      "query.interval",
      `the window of ${Math.round((untilMs - sinceMs) / 1000)}s holds ${buckets} buckets of ${iv / 1000}s; at most ${MAX_BUCKETS}: use an interval of at least ${Math.ceil((untilMs - sinceMs) / MAX_BUCKETS / 1000)}s or a shorter window`,
    );
  }
  return { since: sinceMs, until: untilMs, intervalMs: iv, firstBucket, buckets };
}

function durationField(d: Duration, field: string): number {
  const v = durationMs(d);
  if (!Number.isFinite(v) || Math.abs(v) > 1e15) throw new InvalidArgumentError(field, "not a valid duration");
  return v;
}

function timeField(t: Timestamp, field: string): number {
  const v = timestampMs(t);
  if (!Number.isFinite(v) || v < 0 || v > 253402300799999) throw new InvalidArgumentError(field, "not a valid time (from 1970 to 9999)");
  return v;
}

/** A group_by value as text: enums by name, a failed evaluation "". */
function render(g: CompiledValue, v: unknown): string {
  if (v === undefined || v === null) return "";
  switch (typeof v) {
    case "string":
      return v;
    case "boolean":
    case "number":
      return String(v);
    case "bigint":
      return (g.enumType && g.enumType.value[Number(v)]?.name) ?? String(v);
  }
  if (isCelUint(v)) return String(v.value);
  throw new InvalidArgumentError(g.field, `the expression gives a ${typeName(v)}; group by a string, int, uint, bool or enum value, e.g. ${g.kind}.id`);
}

function numberOf(g: CompiledValue, v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (isCelUint(v)) return Number(v.value);
  throw new InvalidArgumentError(g.field, `the expression gives a ${typeName(v)}, not a number; sum a numeric field, e.g. double(server.spec.resources.memory_bytes)`);
}

function typeName(v: unknown): string {
  try {
    return celType(v as never).name;
  } catch {
    return typeof v;
  }
}

interface Group {
  key: string[];
  counts: Map<number, number>;
  sums: Map<number, number>;
  total: number;
  sumTotal: number;
}

/** Counts per group (by key) per bucket; answers the largest groups. */
class Accumulator {
  private readonly groups = new Map<string, Group>();
  matched = 0;
  constructor(
    private readonly buckets: number,
    private readonly withSum: boolean,
  ) {}

  add(key: string[], bucket: number, count: number, sum: number) {
    if (bucket < 0 || bucket >= this.buckets) return;
    const id = JSON.stringify(key);
    let g = this.groups.get(id);
    if (!g) {
      if (this.groups.size >= MAX_DISTINCT_GROUPS) throw tooMany(`more than ${MAX_DISTINCT_GROUPS} groups`);
      g = { key, counts: new Map(), sums: new Map(), total: 0, sumTotal: 0 };
      this.groups.set(id, g);
    }
    g.counts.set(bucket, (g.counts.get(bucket) ?? 0) + count);
    g.total += count;
    this.matched += count;
    if (this.withSum) {
      g.sums.set(bucket, (g.sums.get(bucket) ?? 0) + sum);
      g.sumTotal += sum;
    }
  }

  response(o: { bucketStarts: number[]; since: number; until: number; intervalMs?: number; scanned: number; maxGroups: number; minTotal: number }): AggregateResponse {
    const kept = [...this.groups.values()].filter((g) => g.total >= o.minTotal).sort(compareGroups);
    const shown = kept.slice(0, o.maxGroups);
    const dense = (m: Map<number, number>) => Array.from({ length: this.buckets }, (_, i) => m.get(i) ?? 0);
    return create(AggregateResponseSchema, {
      bucketStarts: o.bucketStarts.map(timestampFromMs),
      ...(o.intervalMs !== undefined ? { interval: durationFromMs(o.intervalMs) } : {}),
      since: timestampFromMs(o.since),
      until: timestampFromMs(o.until),
      groups: shown.map(
        (g): AggregateGroup =>
          create(AggregateGroupSchema, {
            key: g.key,
            counts: dense(g.counts).map(BigInt),
            total: BigInt(g.total),
            ...(this.withSum ? { sums: dense(g.sums), sumTotal: g.sumTotal } : {}),
          }),
      ),
      groupsOmitted: kept.length - shown.length,
      matched: BigInt(this.matched),
      scanned: BigInt(o.scanned),
    });
  }
}

/** Largest total first, then by key (value by value). */
export function compareGroups(a: { total: number; key: string[] }, b: { total: number; key: string[] }): number {
  if (a.total !== b.total) return b.total - a.total;
  for (let i = 0; i < Math.max(a.key.length, b.key.length); i++) {
    const x = a.key[i] ?? "";
    const y = b.key[i] ?? "";
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

// ------------------------------------------------------------------ pushdown

/** What the database can count for an events query, or undefined (the CEL path). */
export function pushdown(filter: string, groupBy: readonly string[]): Pick<EventCountQuery, "groupBy" | "where"> | undefined {
  const cols: EventCountColumn[] = [];
  for (const g of groupBy) {
    const col = eventColumn(parseOrUndefined(g));
    if (!col) return undefined;
    cols.push(col);
  }
  const where: EventCountQuery["where"][number][] = [];
  if (filter.trim()) {
    const root = parseOrUndefined(filter);
    if (!root) return undefined;
    // The conjuncts, left to right.
    const terms: Expr[] = [];
    const stack = [root];
    while (stack.length) {
      const e = stack.pop()!;
      if (e.exprKind.case === "callExpr" && e.exprKind.value.function === "_&&_" && !e.exprKind.value.target) stack.push(...[...e.exprKind.value.args].reverse());
      else terms.push(e);
    }
    for (const t of terms) {
      const cond = condition(t);
      if (!cond) return undefined;
      where.push(cond);
    }
  }
  return { groupBy: cols, where };
}

function parseOrUndefined(source: string): Expr | undefined {
  try {
    return parse(source).expr;
  } catch {
    return undefined;
  }
}

/** `event.<column>` → the column. */
function eventColumn(e: Expr | undefined): EventCountColumn | undefined {
  const k = e?.exprKind;
  if (k?.case !== "selectExpr" || k.value.testOnly) return undefined;
  const op = k.value.operand?.exprKind;
  if (op?.case !== "identExpr" || op.value.name !== "event") return undefined;
  return (EVENT_COUNT_COLUMNS as readonly string[]).includes(k.value.field) ? (k.value.field as EventCountColumn) : undefined;
}

function stringConst(e: Expr | undefined): string | undefined {
  const k = e?.exprKind;
  if (k?.case !== "constExpr" || k.value.constantKind.case !== "stringValue") return undefined;
  const v = k.value.constantKind.value;
  // No NUL (PostgreSQL text has none) and no lone surrogate: those stay with CEL.
  return /[\0\uD800-\uDFFF]/.test(v) ? undefined : v;
}

/** `event.<col> == "x"` (either side) or `event.type.startsWith("x")` with a printable ASCII prefix. */
function condition(e: Expr): EventCountQuery["where"][number] | undefined {
  if (e.exprKind.case !== "callExpr") return undefined;
  const call = e.exprKind.value;
  if (call.function === "_==_" && !call.target && call.args.length === 2) {
    const [a, b] = call.args;
    const col = eventColumn(a) ?? eventColumn(b);
    const value = stringConst(a) ?? stringConst(b);
    return col !== undefined && value !== undefined ? { column: col, op: "eq", value } : undefined;
  }
  if (call.function === "startsWith" && call.args.length === 1 && eventColumn(call.target) === "type") {
    const value = stringConst(call.args[0]);
    if (value === undefined || !/^[\x20-\x7e]+$/.test(value)) return undefined;
    return { column: "type", op: "prefix", value };
  }
  return undefined;
}
