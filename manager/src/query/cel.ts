/**
 * CEL filters on the list and watch RPCs (docs/explore.md): compile (parse,
 * check what can be checked without evaluating, instrument), cache, evaluate
 * against the protobuf message the RPC returns, with a cost budget.
 *
 * @bufbuild/cel has no type checker usable here and no cost limit, so:
 * - field paths from the bound variable (`server.spec.labelz`), unknown
 *   identifiers and expressions that cannot be bool are refused at compile time
 *   (InvalidArgument on `filter`); anything else not bool is refused at the
 *   first row it gives;
 * - every comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) is
 *   instrumented: each iteration costs the size of its loop body (AST nodes),
 *   charged to a per-row and a per-call budget. Over either the evaluation
 *   stops at once and the call fails with ResourceExhausted.
 * - an error while evaluating one row (a missing map key, a division by zero,
 *   a type mismatch inside a comprehension) makes that row not match.
 */
import { celEnv, celFunc, celType, CelScalar, isCelError, objectType, parse, plan, type CelEnv, type CelInput } from "@bufbuild/cel";
import { create, createRegistry, type DescEnum, type DescMessage, type Message, type Registry } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, file_google_protobuf_duration, file_google_protobuf_timestamp, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ExprSchema, type Expr, type ParsedExpr } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";
import { Code } from "@connectrpc/connect";
import { ServerSchema, file_berth_v1_server } from "@berth/proto/berth/v1/server_pb.js";
import { HostSchema, file_berth_v1_host } from "@berth/proto/berth/v1/host_pb.js";
import { EventSchema, file_berth_v1_event } from "@berth/proto/berth/v1/event_pb.js";
import { BerthError, InvalidArgumentError } from "../errors.js";

/** What a filter is about: the name of its variable. */
export type FilterKind = "server" | "host" | "event";

const SCHEMAS: Record<FilterKind, DescMessage> = { server: ServerSchema, host: HostSchema, event: EventSchema };

/** The longest filter, in UTF-8 bytes (as the requests' protovalidate rule). */
export const MAX_FILTER_BYTES = 4096;
/** Deepest nesting of the expression's tree (brackets, calls, operators). */
export const MAX_DEPTH = 64;
/** Deepest nesting of comprehensions (`exists` inside `all` inside `map`...). */
export const MAX_COMPREHENSION_NESTING = 3;
/** Cost units (AST nodes evaluated in loop bodies) one row may use. */
export const ROW_BUDGET = 50_000;
/**
 * Wall-clock milliseconds the evaluation of one row may take, checked at every
 * comprehension step once the row used ROW_WALL_AFTER steps (a light filter is
 * never cut off because the machine was busy or collecting garbage).
 */
export const ROW_MS = 75;
export const ROW_WALL_AFTER = 5_000;
/** Cost units one call may use over all its rows. */
export const CALL_BUDGET = 2_000_000;
/** Wall-clock milliseconds of evaluation one call may use. */
export const CALL_MS = 3_000;
/** Compiled filters kept. */
export const CACHE_SIZE = 256;
/** Evaluate at most this long before giving the event loop a turn. */
const SLICE_MS = 20;

const TICK = "@tick";
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const HINT = "the filter language is CEL; see docs/explore.md";

export class ResourceExhaustedError extends BerthError {
  constructor(message: string) {
    super(Code.ResourceExhausted, message);
  }
}

/** The meter the running evaluation charges (evaluation is synchronous: one at a time). */
let meter: Meter | undefined;

class Meter {
  rowLeft = ROW_BUDGET;
  callLeft: number;
  rowDeadline = 0;
  exhausted: string | undefined;
  constructor(readonly callBudget: number = CALL_BUDGET) {
    this.callLeft = callBudget;
  }
  startRow() {
    this.rowLeft = ROW_BUDGET;
    this.rowDeadline = performance.now() + ROW_MS;
  }
  charge(n: number): boolean {
    this.rowLeft -= n;
    this.callLeft -= n;
    if (this.rowLeft < 0) this.exhausted = `evaluating the filter on one record took more than ${ROW_BUDGET} steps`;
    else if (this.callLeft < 0) this.exhausted = `evaluating the filter took more than ${this.callBudget} steps in this call`;
    else if (this.rowLeft < ROW_BUDGET - ROW_WALL_AFTER && performance.now() > this.rowDeadline) this.exhausted = `evaluating the filter on one record took more than ${ROW_MS} ms`;
    return this.exhausted === undefined;
  }
}

const registry: Registry = createRegistry(file_berth_v1_server, file_berth_v1_host, file_berth_v1_event, file_google_protobuf_timestamp, file_google_protobuf_duration);

/** Every enum value of the API by its name (`PHASE_FAILED`): names are unique (buf lint: prefixed values). */
const ENUM_VALUES: Record<string, bigint> = (() => {
  const out: Record<string, bigint> = {};
  for (const t of registry) {
    if (t.kind !== "enum" || !t.typeName.startsWith("berth.")) continue;
    for (const v of t.values) out[v.name] = BigInt(v.number);
  }
  return out;
})();

const tick = celFunc(TICK, [CelScalar.DYN, CelScalar.INT], CelScalar.DYN, (cond, weight) => {
  if (meter && !meter.charge(Number(weight))) throw new Error("filter budget exhausted");
  return cond as CelInput;
});

const ENVS = new Map<FilterKind, CelEnv>();
function envOf(kind: FilterKind): CelEnv {
  let env = ENVS.get(kind);
  if (!env) {
    const variables: Record<string, ReturnType<typeof objectType> | typeof CelScalar.INT> = { [kind]: objectType(SCHEMAS[kind]), now: objectType(TimestampSchema) };
    for (const name of Object.keys(ENUM_VALUES)) variables[name] = CelScalar.INT;
    env = celEnv({ namespace: "berth.v1", registry, funcs: [tick], variables });
    ENVS.set(kind, env);
  }
  return env;
}

/** Identifiers a filter may name besides its variables: CEL's type names and the first part of qualified names. */
const TYPE_IDENTS = new Set(["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn", "berth", "google"]);
for (const t of registry) if (t.typeName.startsWith("berth.v1.")) TYPE_IDENTS.add(t.typeName.slice("berth.v1.".length).split(".")[0]!);

export interface CompiledFilter {
  readonly kind: FilterKind;
  readonly source: string;
  /** Whether `msg` matches; throws ResourceExhausted (budget) or InvalidArgument (not bool). */
  test(msg: Message, run: FilterRun): boolean;
}

type Program = (ctx: Record<string, CelInput>) => unknown;

const cache = new Map<string, CompiledFilter | CompiledValue>();

/** The compiled filter, from the cache when it was compiled lately; InvalidArgument on field `field` when it is not a valid filter. */
export function compileFilter(kind: FilterKind, source: string, field = "filter"): CompiledFilter {
  return cached(`f\0${kind}\0${field}\0${source}`, () => compile(kind, source, field)) as CompiledFilter;
}

/**
 * An expression whose value is used rather than tested (Aggregate's
 * group_by and sum, query/aggregate.ts): compiled as a filter is (same
 * variables, checks, instrumentation and budgets) except that its result may
 * be of any type. Results that can be seen to be a list, a map or a message
 * are refused at compile time (InvalidArgument on `field`).
 */
export interface CompiledValue {
  readonly kind: FilterKind;
  readonly source: string;
  /** The request field it came from (named by errors about its values). */
  readonly field: string;
  /** When the expression is a field path to an enum field (`server.status.phase`): the enum, to show values by name. */
  readonly enumType: DescEnum | undefined;
  /** Its value on `msg`, undefined when the evaluation fails on this record (a missing map key); throws ResourceExhausted (budget). */
  value(msg: Message, run: FilterRun): unknown;
}

/** The compiled value expression (CompiledValue), from the cache when it was compiled lately. */
export function compileValue(kind: FilterKind, source: string, field: string): CompiledValue {
  return cached(`v\0${kind}\0${field}\0${source}`, () => compileValueExpr(kind, source, field)) as CompiledValue;
}

function cached(key: string, make: () => CompiledFilter | CompiledValue): CompiledFilter | CompiledValue {
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const compiled = make();
  cache.set(key, compiled);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return compiled;
}

/** The filter of a request: undefined when empty (blank). */
export function requestFilter(kind: FilterKind, source: string): CompiledFilter | undefined {
  return source.trim() ? compileFilter(kind, source) : undefined;
}

/** Parses, checks and instruments `source`; the program and, for a field path to an enum field, the enum. */
function prepare(kind: FilterKind, source: string, field: string, result: "bool" | "value"): { program: Program; enumType: DescEnum | undefined } {
  // The parser quotes the source, which may cut a surrogate pair: a lone surrogate cannot go in a gRPC status.
  const bad = (msg: string) => new InvalidArgumentError(field, `${msg.replace(LONE_SURROGATE, "\uFFFD")}; ${HINT}`);
  if (Buffer.byteLength(source) > MAX_FILTER_BYTES) throw bad(`longer than ${MAX_FILTER_BYTES} bytes`);
  let parsed: ParsedExpr & { expr: Expr };
  try {
    parsed = parse(source);
  } catch (err) {
    if (err instanceof RangeError) throw bad("nested too deeply");
    const m = /^<input>:(\d+):(\d+): ([^]*)$/.exec((err as Error).message);
    throw bad(m ? `syntax error at line ${m[1]}, column ${m[2]}: ${m[3]}` : `syntax error: ${(err as Error).message}`);
  }
  const at = (e: Expr) => position(source, parsed, e);
  const checker = new Checker(kind, at, bad);
  const enumType = result === "bool" ? (checker.check(parsed.expr), undefined) : checker.checkValue(parsed.expr);
  let nextId = maxId(parsed.expr) + 1n;
  instrument(parsed.expr, () => nextId++);
  let program: Program;
  try {
    program = plan(envOf(kind), parsed) as Program;
  } catch (err) {
    throw bad((err as Error).message);
  }
  return { program, enumType };
}

/** Runs `program` on one record, charging `run`; ResourceExhausted when a budget ran out. */
function evaluate(program: Program, ctx: Record<string, CelInput>, kind: FilterKind, msg: Message, run: FilterRun): unknown {
  ctx[kind] = msg;
  ctx.now = run.now;
  run.meter.startRow();
  meter = run.meter;
  const t0 = performance.now();
  let v: unknown;
  try {
    v = program(ctx);
  } finally {
    meter = undefined;
    run.spent(performance.now() - t0);
  }
  if (run.meter.exhausted) throw exhausted(run.meter.exhausted);
  return v;
}

function compileValueExpr(kind: FilterKind, source: string, field: string): CompiledValue {
  const { program, enumType } = prepare(kind, source, field, "value");
  // Reused: evaluation is synchronous.
  const ctx: Record<string, CelInput> = { ...ENUM_VALUES };
  return {
    kind,
    source,
    field,
    enumType,
    value(msg, run) {
      const v = evaluate(program, ctx, kind, msg, run);
      return isCelError(v) ? undefined : v;
    },
  };
}

function compile(kind: FilterKind, source: string, field: string): CompiledFilter {
  const { program } = prepare(kind, source, field, "bool");
  // Reused: evaluation is synchronous.
  const ctx: Record<string, CelInput> = { ...ENUM_VALUES };
  return {
    kind,
    source,
    test(msg, run) {
      const v = evaluate(program, ctx, kind, msg, run);
      if (isCelError(v)) return false;
      if (typeof v !== "boolean") throw new InvalidArgumentError(field, `the expression is of type ${celType(v as never).name}, not bool; compare it with something, e.g. ${kind}.id == "…"; ${HINT}`);
      return v;
    },
  };
}

function exhausted(what: string): ResourceExhaustedError {
  return new ResourceExhaustedError(`filter: ${what}; narrow the filter (fewer or smaller comprehensions such as exists/all/map over long lists) or narrow the request's other fields (project, phases, host) so fewer records are evaluated`);
}

/** A call's limits when they are not the list RPCs' (Aggregate reads more records per call). */
export interface RunLimits {
  /** Cost units over all rows (default CALL_BUDGET). */
  callBudget?: number;
  /** Wall-clock milliseconds of evaluation (default CALL_MS). */
  callMs?: number;
}

/** One call's evaluation: its budget, its clock and its `now`. */
export class FilterRun {
  readonly meter: Meter;
  readonly now: Timestamp;
  private evalMs = 0;
  private readonly callMs: number;
  private sliceStart = performance.now();
  constructor(nowMs: number = Date.now(), limits: RunLimits = {}) {
    this.now = timestampFromMs(nowMs);
    this.meter = new Meter(limits.callBudget ?? CALL_BUDGET);
    this.callMs = limits.callMs ?? CALL_MS;
  }
  spent(ms: number) {
    this.evalMs += ms;
    if (this.evalMs > this.callMs) throw exhausted(`evaluating the filter took more than ${this.callMs} ms in this call`);
  }
  /** Gives the event loop a turn when this call evaluated for a while (call between rows). */
  async pace(): Promise<void> {
    if (performance.now() - this.sliceStart < SLICE_MS) return;
    await new Promise((r) => setImmediate(r));
    this.sliceStart = performance.now();
  }
}

/** `line L, column C` of an expression in the source. */
function position(source: string, parsed: ParsedExpr, e: Expr): string {
  const offset = parsed.sourceInfo?.positions[String(e.id) as unknown as number] ?? 0;
  const before = [...source].slice(0, offset).join("");
  const lines = before.split("\n");
  return `line ${lines.length}, column ${lines.at(-1)!.length + 1}`;
}

function maxId(e: Expr | undefined): bigint {
  let m = 0n;
  walk(e, (x) => {
    if (x.id > m) m = x.id;
  });
  return m;
}

function children(e: Expr): Expr[] {
  const k = e.exprKind;
  switch (k.case) {
    case "selectExpr":
      return k.value.operand ? [k.value.operand] : [];
    case "callExpr":
      return [...(k.value.target ? [k.value.target] : []), ...k.value.args];
    case "listExpr":
      return k.value.elements;
    case "structExpr":
      return k.value.entries.flatMap((en) => [...(en.keyKind.case === "mapKey" ? [en.keyKind.value] : []), ...(en.value ? [en.value] : [])]);
    case "comprehensionExpr": {
      const c = k.value;
      return [c.iterRange, c.accuInit, c.loopCondition, c.loopStep, c.result].filter((x): x is Expr => x !== undefined);
    }
    default:
      return [];
  }
}

function walk(e: Expr | undefined, f: (e: Expr) => void) {
  if (!e) return;
  const stack = [e];
  while (stack.length) {
    const x = stack.pop()!;
    f(x);
    stack.push(...children(x));
  }
}

function size(e: Expr | undefined): number {
  let n = 0;
  walk(e, () => n++);
  return n;
}

/** Wraps every comprehension's loop condition in `@tick(cond, cost of one iteration)`. */
function instrument(e: Expr, id: () => bigint) {
  walk(e, (x) => {
    if (x.exprKind.case !== "comprehensionExpr") return;
    const c = x.exprKind.value;
    const weight = 1 + size(c.loopCondition) + size(c.loopStep);
    const cond = c.loopCondition ?? create(ExprSchema, { id: id(), exprKind: { case: "constExpr", value: { constantKind: { case: "boolValue", value: true } } } });
    c.loopCondition = create(ExprSchema, {
      id: id(),
      exprKind: {
        case: "callExpr",
        value: { function: TICK, args: [cond, create(ExprSchema, { id: id(), exprKind: { case: "constExpr", value: { constantKind: { case: "int64Value", value: BigInt(weight) } } } })] },
      },
    });
  });
}

const NOT_BOOL_CALLS = new Set(["_+_", "_-_", "_*_", "_/_", "_%_", "-_", "size", "int", "uint", "double", "string", "bytes", "duration", "timestamp", "type", "dyn"]);

/** What can be known without evaluating: variables, field paths, nesting, a result that cannot be bool. */
class Checker {
  /** Loop variables bound to a message (inside a comprehension over a list of messages): name → "message <type>". */
  private readonly typed = new Map<string, string>();

  constructor(
    private readonly kind: FilterKind,
    private readonly at: (e: Expr) => string,
    private readonly bad: (msg: string) => InvalidArgumentError,
  ) {}

  check(root: Expr) {
    this.visit(root, new Set(), 0, 0);
    const k = root.exprKind;
    let what: string | undefined;
    if (k.case === "constExpr" && k.value.constantKind.case !== "boolValue") what = "a constant";
    else if (k.case === "listExpr") what = "a list";
    else if (k.case === "structExpr") what = "a map or message";
    else if (k.case === "callExpr" && NOT_BOOL_CALLS.has(k.value.function)) what = `the result of ${k.value.function.replace(/_/g, " ").trim()}`;
    else if (k.case === "comprehensionExpr" && k.value.result?.exprKind.case === "identExpr" && k.value.loopCondition?.exprKind.case === "constExpr") what = "a list (map/filter)";
    else if (k.case === "selectExpr" || k.case === "identExpr") {
      const f = this.fieldOf(root);
      if (f && f !== "bool") what = `a field of type ${f.replace(/^list message .*/, "list")}`;
    }
    if (what) throw this.bad(`the expression must be bool, but it is ${what}; compare it with something, e.g. ${this.kind}.id == "…"`);
  }

  /**
   * The checks of `check` but for a result of any type: one that is plainly
   * a list, a map or a message is refused. Answers the enum of a field path to
   * an enum field (its values are shown by name).
   */
  checkValue(root: Expr): DescEnum | undefined {
    this.visit(root, new Set(), 0, 0);
    const k = root.exprKind;
    let what: string | undefined;
    if (k.case === "listExpr") what = "a list";
    else if (k.case === "structExpr") what = "a map or message";
    else if (k.case === "comprehensionExpr" && k.value.result?.exprKind.case === "identExpr" && k.value.loopCondition?.exprKind.case === "constExpr") what = "a list (map/filter)";
    else if (k.case === "selectExpr" || k.case === "identExpr") {
      const f = this.fieldOf(root);
      if (f === "list" || f === "map" || f?.startsWith("message ") || f?.startsWith("list ")) what = `a field of type ${f.replace(/^list message .*/, "list")}`;
    }
    if (what) throw this.bad(`the expression must give a string, a number, a bool or an enum, but it is ${what}; pick one field of it, e.g. ${this.kind}.id`);
    return this.enumOf(root);
  }

  private enumOf(e: Expr): DescEnum | undefined {
    const k = e.exprKind;
    if (k.case !== "selectExpr" || !k.value.operand || k.value.testOnly) return undefined;
    const parentKind = this.fieldOf(k.value.operand);
    if (!parentKind?.startsWith("message ")) return undefined;
    const f = registry.getMessage(parentKind.slice("message ".length))?.fields.find((x) => x.name === k.value.field);
    return f?.fieldKind === "enum" ? f.enum : undefined;
  }

  private visit(e: Expr, scope: Set<string>, depth: number, nesting: number) {
    if (depth > MAX_DEPTH) throw this.bad(`nested more than ${MAX_DEPTH} levels deep at ${this.at(e)}`);
    const k = e.exprKind;
    if (k.case === "identExpr") {
      const n = k.value.name;
      if (n !== this.kind && n !== "now" && !scope.has(n) && !(n in ENUM_VALUES) && !TYPE_IDENTS.has(n)) {
        throw this.bad(`undeclared reference to '${n}' at ${this.at(e)}: the variables are ${this.kind} and now (a google.protobuf.Timestamp), and enum values by name (e.g. PHASE_FAILED)`);
      }
      return;
    }
    if (k.case === "selectExpr") this.fieldOf(e);
    if (k.case === "comprehensionExpr") {
      const c = k.value;
      if (nesting + 1 > MAX_COMPREHENSION_NESTING) throw this.bad(`comprehensions (exists, all, map, filter) nested more than ${MAX_COMPREHENSION_NESTING} deep at ${this.at(e)}`);
      const inner = new Set([...scope, c.iterVar, c.accuVar, ...(c.iterVar2 ? [c.iterVar2] : [])]);
      for (const x of [c.iterRange, c.accuInit]) if (x) this.visit(x, scope, depth + 1, nesting);
      // Over a list of messages (`server.spec.ports.exists(p, …)`), the loop variable is such a
      // message: its field paths are checked as the variable's are. Names bound here shadow outer ones.
      const range = c.iterRange ? this.fieldOf(c.iterRange) : undefined;
      const element = !c.iterVar2 && range?.startsWith("list message ") ? range.slice("list ".length) : undefined;
      const saved = new Map([c.iterVar, c.accuVar, ...(c.iterVar2 ? [c.iterVar2] : [])].map((n) => [n, this.typed.get(n)]));
      for (const n of saved.keys()) this.typed.delete(n);
      if (element) this.typed.set(c.iterVar, element);
      try {
        for (const x of [c.loopCondition, c.loopStep, c.result]) if (x) this.visit(x, inner, depth + 1, nesting + 1);
      } finally {
        for (const [n, t] of saved) {
          if (t === undefined) this.typed.delete(n);
          else this.typed.set(n, t);
        }
      }
      return;
    }
    for (const c of children(e)) this.visit(c, scope, depth + 1, nesting);
  }

  /**
   * For a field path from the filter's variable (`server.spec.host_id`), the
   * kind of its value ("message", "bool", "string", ...), or undefined when it
   * is not such a path or goes through a map or list; a field that does not exist is InvalidArgument.
   */
  private fieldOf(e: Expr): string | undefined {
    const k = e.exprKind;
    if (k.case === "identExpr") return k.value.name === this.kind ? `message ${SCHEMAS[this.kind].typeName}` : this.typed.get(k.value.name);
    if (k.case !== "selectExpr" || !k.value.operand) return undefined;
    const parentKind = this.fieldOf(k.value.operand);
    if (!parentKind?.startsWith("message ")) return undefined;
    const typeName = parentKind.slice("message ".length);
    const desc = registry.getMessage(typeName);
    if (!desc || !typeName.startsWith("berth.")) return undefined;
    const f = desc.fields.find((x) => x.name === k.value.field);
    if (!f) {
      throw this.bad(`${typeName} has no field '${k.value.field}' at ${this.at(e)}; its fields are ${desc.fields.map((x) => x.name).join(", ")} (CEL uses the proto names, snake_case)`);
    }
    if (k.value.testOnly) return "bool";
    if (f.fieldKind === "list" && f.listKind === "message") return `list message ${f.message.typeName}`;
    if (f.fieldKind === "map" || f.fieldKind === "list") return f.fieldKind;
    if (f.fieldKind === "message") return `message ${f.message.typeName}`;
    if (f.fieldKind === "enum") return "int (enum)";
    return f.scalar === 8 ? "bool" : "scalar";
  }
}

/** For tests: the registry filters resolve types in, and a fresh Duration (to build `now` offsets). */
export const _internal = { registry, DurationSchema, cache };
