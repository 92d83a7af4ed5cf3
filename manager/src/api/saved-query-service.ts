/**
 * SavedQueryService (docs/explore.md "Saved queries"): named queries (a
 * source, a CEL filter, optionally a grouping and a view) owned by the token
 * that made them, shared with their project or private to their owner, that
 * can back an alert (alerts/rules.ts `saved_query`, run by
 * query/saved-alerts.ts on the leader) and be pinned to the dashboard.
 *
 * Every method is viewer in the permission table; this service enforces the
 * rest: a shared query or one with an alert needs the operator role; a
 * private query is seen and changed only by its owner (an all-projects admin
 * sees and may delete any); a shared one is changed by its owner or an
 * operator of its project.
 */
import { clone, create } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createContextValues, createHandlerContext, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import {
  AggregateRequestSchema,
  CreateSavedQueryResponseSchema,
  DeleteSavedQueryResponseSchema,
  EventListSchema,
  HostListSchema,
  ServerListSchema,
  GetSavedQueryResponseSchema,
  ListSavedQueriesResponseSchema,
  QuerySource,
  QueryView,
  RunSavedQueryResponseSchema,
  SavedQuerySchema,
  SavedQueryService,
  SavedQuerySpecSchema,
  UpdateSavedQueryResponseSchema,
  type AggregateRequest,
  type AggregateResponse,
  type SavedQuery,
  type SavedQuerySpec,
} from "@berth/proto/berth/v1/query_pb.js";
import { ListServersRequestSchema, ListServersResponseSchema, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { HostService, ListHostsRequestSchema, ListHostsResponseSchema } from "@berth/proto/berth/v1/host_pb.js";
import { EventService, ListEventsRequestSchema, ListEventsResponseSchema } from "@berth/proto/berth/v1/event_pb.js";
import { actorOf, callerKey, callerOf, canSee, checkProjectName, hasRole, projectFor, type Caller } from "../auth/caller.js";
import { BerthError, InvalidArgumentError, NotFoundError, PermissionDeniedError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { compileFilter } from "../query/cel.js";
import { compileAggregateExpressions, QUERY_KINDS } from "../query/aggregate.js";
import type { SavedQueryRecord } from "../query/saved-records.js";

/** QueryService.Aggregate's work (query/aggregate.ts runAggregate), injected: the lead wires it. */
export type AggregateFn = (caller: Caller, req: AggregateRequest) => Promise<AggregateResponse>;

export interface SavedQueryServiceDeps {
  store: Store;
  ledger: Ledger;
  /** The list RPCs whose code paths RunSavedQuery reuses (with the caller's rights). */
  servers: Partial<Pick<ServiceImpl<typeof ServerService>, "listServers">>;
  hosts: Partial<Pick<ServiceImpl<typeof HostService>, "listHosts">>;
  events: Partial<Pick<ServiceImpl<typeof EventService>, "listEvents">>;
  /** Runs an aggregate saved query (QueryService.Aggregate's work). */
  aggregate: AggregateFn;
  now?: () => number;
}

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;
/** Events: the window when the query sets none. */
export const DEFAULT_WINDOW_MS = 24 * 3600_000;
/** An alert's fire_after when unset. */
export const DEFAULT_FIRE_AFTER_MS = 5 * 60_000;

/** Whether running the query answers an aggregate (group_by or a chart view) rather than records. */
export function isAggregate(spec: SavedQuerySpec): boolean {
  return (spec.query?.groupBy.length ?? 0) > 0 || spec.query?.view === QueryView.CHART;
}

/** The Aggregate call a saved aggregate query makes: its query, in its project. */
export function aggregateRequestOf(q: SavedQueryRecord): AggregateRequest {
  return create(AggregateRequestSchema, { query: q.spec.query!, project: q.project });
}

/**
 * Compiles group_by and sum at save time, as Aggregate compiles them when it
 * runs (InvalidArgument on the spec's field); the types of their values are
 * checked per record when it runs.
 */
export function checkAggregateExpressions(spec: SavedQuerySpec): void {
  const q = spec.query!;
  compileAggregateExpressions(QUERY_KINDS[q.source]!, q, "spec.query");
  if (q.source !== QuerySource.EVENTS && (q.interval || q.window)) {
    throw new InvalidArgumentError(q.interval ? "spec.query.interval" : "spec.query.window", "only events have a time window; leave interval and window unset for servers and hosts");
  }
}

/** The spec as stored: checked (its filter compiled, InvalidArgument on `spec.query.filter`). */
function checkSpec(spec: SavedQuerySpec): SavedQuerySpec {
  const s = clone(SavedQuerySpecSchema, spec);
  const kind = QUERY_KINDS[s.query!.source];
  if (!kind) throw new InvalidArgumentError("spec.query.source", "set the source: QUERY_SOURCE_SERVERS, QUERY_SOURCE_HOSTS or QUERY_SOURCE_EVENTS");
  if (s.query!.filter.trim()) compileFilter(kind, s.query!.filter, "spec.query.filter");
  checkAggregateExpressions(s);
  return s;
}

export function fireAfterMs(spec: SavedQuerySpec): number {
  return spec.alert?.fireAfter ? durationMs(spec.alert.fireAfter) : DEFAULT_FIRE_AFTER_MS;
}

/** ListSavedQueries' page token: the last (project, name) of the page. */
function pageToken(last: SavedQueryRecord | undefined, more: boolean): string {
  return more && last ? Buffer.from(`sq:${last.project}/${last.name}`).toString("base64url") : "";
}

function positionOf(token: string): { project: string; name: string } | undefined {
  if (!token) return undefined;
  const m = /^sq:([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(Buffer.from(token, "base64url").toString());
  if (!m) throw new InvalidArgumentError("page_token", "not a token returned by ListSavedQueries; omit it to start from the first page");
  return { project: m[1]!, name: m[2]! };
}

/** May `c` see `q`: its project, and shared or its own (an all-projects admin sees every one). */
export function maySee(c: Caller, q: SavedQueryRecord): boolean {
  if (c.project === null && c.role === "admin") return true;
  return canSee(c, q.project) && (q.shared || q.ownerTokenId === c.tokenId);
}

/** Whether `spec` needs the operator role (shared, or with an alert), and why. */
function operatorNeeded(spec: SavedQuerySpec): string | undefined {
  if (spec.shared) return "a shared saved query (spec.shared)";
  if (spec.alert?.enabled) return "a saved query with an alert (spec.alert.enabled)";
  return undefined;
}

function requireOperatorFor(c: Caller, spec: SavedQuerySpec, action: string): void {
  const why = operatorNeeded(spec);
  if (why && !hasRole(c, "operator")) {
    throw new PermissionDeniedError(`${action}: ${why} needs the operator role; token "${c.name}" is ${c.role}: keep it private without an alert (shared false, alert.enabled false), or use an operator token`);
  }
}

/** The in-process context of a list RPC called for `caller`. */
export function contextFor(caller: Caller, service: DescService, method: string): HandlerContext {
  return createHandlerContext({
    service,
    method: service.method[method]!,
    protocolName: "in-process",
    requestMethod: "POST",
    url: `saved-query://${service.typeName}/${method}`,
    requestSignal: new AbortController().signal,
    contextValues: createContextValues().set(callerKey, caller),
  });
}

function need<T>(f: T | undefined, name: string): T {
  if (!f) throw new Error(`${name} is not available to saved queries`);
  return f;
}

export interface RecordsResult {
  result: NonNullable<ReturnType<typeof create<typeof RunSavedQueryResponseSchema>>["result"]>;
  nextPageToken: string;
  /** Rows on this page, and the first one described (alerts' messages). */
  rows: number;
  first: string;
}

/**
 * The query's records as the list RPC of its source returns them to
 * `caller` acting in the query's project: servers (a page), hosts (all),
 * events in [now - window, now), newest first (a page).
 */
export async function runRecords(
  deps: Pick<SavedQueryServiceDeps, "servers" | "hosts" | "events">,
  caller: Caller,
  rec: SavedQueryRecord,
  page: { pageSize: number; pageToken: string },
  now: number,
): Promise<RecordsResult> {
  const q = rec.spec.query!;
  // The query's project: a caller who sees the query may read it; an all-projects admin reads that project only.
  const scoped: Caller = { ...caller, project: rec.project };
  const pageSize = Math.min(page.pageSize || DEFAULT_PAGE, MAX_PAGE);
  switch (q.source) {
    case QuerySource.SERVERS: {
      const r = create(ListServersResponseSchema, await need(deps.servers.listServers, "ServerService.ListServers")(create(ListServersRequestSchema, { project: rec.project, filter: q.filter, pageSize, pageToken: page.pageToken }), contextFor(scoped, ServerService, "listServers")));
      return { result: { case: "servers", value: create(ServerListSchema, { servers: r.servers }) }, nextPageToken: r.nextPageToken, rows: r.servers.length, first: r.servers[0] ? `server ${r.servers[0].spec?.name ?? r.servers[0].id}` : "" };
    }
    case QuerySource.HOSTS: {
      const r = create(ListHostsResponseSchema, await need(deps.hosts.listHosts, "HostService.ListHosts")(create(ListHostsRequestSchema, { filter: q.filter }), contextFor(scoped, HostService, "listHosts")));
      return { result: { case: "hosts", value: create(HostListSchema, { hosts: r.hosts }) }, nextPageToken: "", rows: r.hosts.length, first: r.hosts[0] ? `host ${r.hosts[0].name || r.hosts[0].id}` : "" };
    }
    case QuerySource.EVENTS: {
      const windowMs = q.window ? durationMs(q.window) : DEFAULT_WINDOW_MS;
      const r = create(
        ListEventsResponseSchema,
        await need(deps.events.listEvents, "EventService.ListEvents")(
          create(ListEventsRequestSchema, { filter: q.filter, since: timestampFromMs(now - windowMs), until: timestampFromMs(now), pageSize, pageToken: page.pageToken }),
          contextFor(scoped, EventService, "listEvents"),
        ),
      );
      const e = r.events[0];
      return { result: { case: "events", value: create(EventListSchema, { events: r.events }) }, nextPageToken: r.nextPageToken, rows: r.events.length, first: e ? `${e.type}: ${e.message}`.slice(0, 200) : "" };
    }
    default:
      throw new InvalidArgumentError("spec.query.source", "the saved query has no source; update it with one");
  }
}

export function createSavedQueryService(deps: SavedQueryServiceDeps): ServiceImpl<typeof SavedQueryService> {
  const { store, ledger } = deps;
  const now = deps.now ?? Date.now;

  /** A saved query by id, or by name in `project` (the caller's; an all-projects admin's bare name must be unambiguous). NotFound when the caller may not see it. */
  async function find(caller: Caller, idOrName: string, project: string): Promise<SavedQueryRecord> {
    const key = idOrName.trim();
    let q = key.startsWith("sq_") ? await store.getSavedQuery(key) : undefined;
    if (!q) {
      const want = project.trim();
      if (caller.project !== null) {
        if (want && want !== caller.project) throw new NotFoundError("project", want);
        q = await store.findSavedQueryByName(caller.project, key);
      } else if (want) {
        q = await store.findSavedQueryByName(checkProjectName(want), key);
      } else {
        const matches = await store.listSavedQueries({ name: key });
        if (matches.length > 1) throw new InvalidArgumentError("id", `saved query "${key}" exists in several projects (${matches.map((m) => m.project).join(", ")}); set project or use the id`);
        q = matches[0];
      }
    }
    if (!q || !maySee(caller, q)) throw new NotFoundError("saved query", key, "list the saved queries you may see with SavedQueryService.ListSavedQueries");
    return q;
  }

  /** Firing saved_query alerts, by query id; read only when one of `qs` has its alert enabled. */
  async function firing(...qs: SavedQueryRecord[]): Promise<Set<string>> {
    const out = new Set<string>();
    if (!qs.some((q) => q.alertEnabled)) return out;
    for (const a of await store.listFiringAlerts()) if (a.rule === "saved_query" && a.subject.startsWith("query:")) out.add(a.subject.slice("query:".length));
    return out;
  }

  function toProto(q: SavedQueryRecord, fire: Set<string>): SavedQuery {
    return create(SavedQuerySchema, {
      id: q.id,
      project: q.project,
      spec: q.spec,
      ownerTokenId: q.ownerTokenId,
      ownerName: q.ownerName,
      version: BigInt(q.version),
      createTime: timestampFromMs(q.createdAt),
      updateTime: timestampFromMs(q.updatedAt),
      alertFiring: q.alertEnabled && fire.has(q.id),
      ...(q.alertEnabled && q.rowsSince !== null ? { rowsSince: timestampFromMs(q.rowsSince) } : {}),
    });
  }

  /** May `c` change `q` (UpdateSavedQuery; `del` for DeleteSavedQuery)? PermissionDenied saying who may. */
  function requireWritable(c: Caller, q: SavedQueryRecord, action: string, del: boolean): void {
    if (q.ownerTokenId === c.tokenId) return;
    if (del && c.project === null && c.role === "admin") return;
    if (!q.shared) throw new PermissionDeniedError(`${action}: saved query "${q.name}" is private to token "${q.ownerName}"; only its owner may change it`);
    if (!hasRole(c, "operator")) throw new PermissionDeniedError(`${action}: saved query "${q.name}" is shared and owned by token "${q.ownerName}"; changing it needs its owner or the operator role in project ${q.project}; token "${c.name}" is ${c.role}`);
  }

  return {
    async listSavedQueries(req, ctx) {
      const caller = callerOf(ctx);
      const want = req.project.trim();
      let project: string | undefined;
      if (caller.project !== null) project = projectFor(caller, want);
      else if (want) project = checkProjectName(want);
      const limit = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
      const after = positionOf(req.pageToken);
      const all = caller.project === null && caller.role === "admin";
      const rows = await store.listSavedQueries({
        ...(project !== undefined ? { project } : {}),
        ...(all ? {} : { visibleTo: caller.tokenId }),
        ...(req.pinnedOnly ? { pinnedOnly: true } : {}),
        ...(after ? { after } : {}),
        limit: limit + 1,
      });
      const page = rows.slice(0, limit);
      const fire = await firing(...page);
      return create(ListSavedQueriesResponseSchema, { savedQueries: page.map((q) => toProto(q, fire)), nextPageToken: pageToken(page.at(-1), rows.length > limit) });
    },

    async getSavedQuery(req, ctx) {
      const q = await find(callerOf(ctx), req.id, req.project);
      return create(GetSavedQueryResponseSchema, { savedQuery: toProto(q, await firing(q)) });
    },

    async createSavedQuery(req, ctx) {
      const caller = callerOf(ctx);
      requireOperatorFor(caller, req.spec!, "CreateSavedQuery");
      const project = projectFor(caller, req.project);
      const spec = checkSpec(req.spec!);
      const at = now();
      const rec: SavedQueryRecord = {
        id: newId("sq"),
        project,
        name: spec.name,
        ownerTokenId: caller.tokenId,
        ownerName: caller.name,
        shared: spec.shared,
        pinned: spec.pinned,
        alertEnabled: spec.alert?.enabled ?? false,
        spec,
        version: 1,
        createdAt: at,
        updatedAt: at,
        rowsSince: null,
        lastRows: 0,
        lastFirst: "",
      };
      await store.commit([
        { op: "savedQuery.insert", savedQuery: rec },
        ledger.op({ type: "query.created", project, actor: actorOf(caller), correlationId: rec.id, message: `saved query "${rec.name}" created (${rec.shared ? "shared" : "private"}${rec.alertEnabled ? ", with an alert" : ""})` }),
      ]);
      return create(CreateSavedQueryResponseSchema, { savedQuery: toProto((await store.getSavedQuery(rec.id)) ?? rec, new Set()) });
    },

    async updateSavedQuery(req, ctx) {
      const caller = callerOf(ctx);
      const cur = await find(caller, req.id, req.project);
      requireWritable(caller, cur, "UpdateSavedQuery", false);
      requireOperatorFor(caller, req.spec!, "UpdateSavedQuery");
      if (req.expectedVersion !== undefined && BigInt(cur.version) !== req.expectedVersion) {
        throw new ConflictErrorFor(cur, req.expectedVersion);
      }
      const spec = checkSpec(req.spec!);
      const alertEnabled = spec.alert?.enabled ?? false;
      // What the alert runner saw stays only while it still runs the same query.
      const sameRun = alertEnabled && cur.alertEnabled && JSON.stringify(spec.query) === JSON.stringify(cur.spec.query);
      const next: SavedQueryRecord = {
        ...cur,
        name: spec.name,
        shared: spec.shared,
        pinned: spec.pinned,
        alertEnabled,
        spec,
        version: cur.version + 1,
        updatedAt: now(),
        ...(sameRun ? {} : { rowsSince: null, lastRows: 0, lastFirst: "" }),
      };
      await store.commit([
        { op: "savedQuery.update", savedQuery: next, expectVersion: cur.version },
        ledger.op({ type: "query.updated", project: cur.project, actor: actorOf(caller), correlationId: cur.id, message: `saved query "${next.name}" updated to version ${next.version}`, payload: { version: next.version } }),
      ]);
      const stored = (await store.getSavedQuery(cur.id)) ?? next;
      return create(UpdateSavedQueryResponseSchema, { savedQuery: toProto(stored, await firing(stored)) });
    },

    async deleteSavedQuery(req, ctx) {
      const caller = callerOf(ctx);
      const cur = await find(caller, req.id, req.project);
      requireWritable(caller, cur, "DeleteSavedQuery", true);
      await store.commit([
        { op: "savedQuery.delete", id: cur.id },
        ledger.op({ type: "query.deleted", project: cur.project, actor: actorOf(caller), correlationId: cur.id, message: `saved query "${cur.name}" deleted${cur.alertEnabled ? "; its alert resolves" : ""}` }),
      ]);
      return create(DeleteSavedQueryResponseSchema, {});
    },

    async runSavedQuery(req, ctx) {
      const caller = callerOf(ctx);
      const q = await find(caller, req.id, req.project);
      const savedQuery = toProto(q, await firing(q));
      if (isAggregate(q.spec)) {
        const aggregate = await deps.aggregate(caller, aggregateRequestOf(q));
        return create(RunSavedQueryResponseSchema, { savedQuery, result: { case: "aggregate", value: aggregate } });
      }
      const r = await runRecords(deps, caller, q, { pageSize: req.pageSize, pageToken: req.pageToken }, now());
      return create(RunSavedQueryResponseSchema, { savedQuery, result: r.result, nextPageToken: r.nextPageToken });
    },
  };
}

class ConflictErrorFor extends BerthError {
  constructor(q: SavedQueryRecord, expected: bigint) {
    super(Code.Aborted, `saved query "${q.name}" is at version ${q.version}, not ${expected}: someone changed it since you read it; read it again and retry`);
  }
}
