/**
 * SavedQueryService through a whole manager in-process (startTestManager:
 * real auth, request validation and store, on SQLite and PostgreSQL) with a
 * scripted agent for a host: who may create, see, change and delete which
 * saved query; names unique per project; versions; filters compiled at
 * create; RunSavedQuery's records with the caller's rights and its
 * aggregate through an injected function and through the manager's own.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { AggregateResponseSchema, QuerySource, QueryView, SavedQueryService, type AggregateRequest, type SavedQuerySpecSchema } from "@berth/proto/berth/v1/query_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { ScriptedAgent, startTestManager, type TestManager } from "../../testing/fuzz-kit.js";
import type { Caller } from "../auth/caller.js";

let tm: TestManager;
let ownAggregate: TestManager;
let agent: ScriptedAgent;
const tokens: Record<string, string> = {};
const aggregateCalls: { caller: Caller; req: AggregateRequest }[] = [];

beforeAll(async () => {
  tm = await startTestManager({
    aggregate: async (caller, req) => {
      aggregateCalls.push({ caller, req });
      return create(AggregateResponseSchema, { groups: [{ key: ["PHASE_RUNNING"], total: 2n, counts: [2n] }], matched: 2n, scanned: 2n });
    },
  });
  agent = await ScriptedAgent.enroll(tm);
  agent.connect();
  const access = createClient(AccessService, tm.transport());
  for (const [name, role, project] of [
    ["viewer", Role.VIEWER, "default"],
    ["viewer-2", Role.VIEWER, "default"],
    ["operator", Role.OPERATOR, "default"],
    ["games-operator", Role.OPERATOR, "games"],
  ] as const) {
    tokens[name] = (await access.createToken({ name, role, project })).secret;
  }
});

afterAll(async () => {
  await agent?.close();
  await tm?.close();
  await ownAggregate?.close();
});

const client = (token?: string, m: TestManager = tm) => createClient(SavedQueryService, m.transport(token));

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}
const fields = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

let seq = 0;
type SpecInit = Exclude<MessageInitShape<typeof SavedQuerySpecSchema>, { $typeName: string }>;
function spec(o: SpecInit = {}): SpecInit {
  return { name: `q-${++seq}`, query: { source: QuerySource.HOSTS, filter: "host.name != ''" }, ...o };
}

describe("SavedQueryService: who may do what", () => {
  it("a viewer creates a private query, owned by its token; it sees it, another viewer does not (NotFound)", async () => {
    const { savedQuery } = await client(tokens.viewer).createSavedQuery({ spec: spec({ description: "mine" }) });
    expect(savedQuery?.ownerName).toBe("viewer");
    expect(savedQuery?.ownerTokenId).toMatch(/^tok_/);
    expect(savedQuery?.project).toBe("default");
    expect(savedQuery?.version).toBe(1n);
    expect((await client(tokens.viewer).getSavedQuery({ id: savedQuery!.spec!.name })).savedQuery?.id).toBe(savedQuery!.id);
    expect((await refusal(client(tokens["viewer-2"]).getSavedQuery({ id: savedQuery!.id }))).code).toBe(Code.NotFound);
    expect((await refusal(client(tokens["viewer-2"]).runSavedQuery({ id: savedQuery!.id }))).code).toBe(Code.NotFound);
    expect((await client(tokens["viewer-2"]).listSavedQueries({})).savedQueries.map((q) => q.id)).not.toContain(savedQuery!.id);
    expect((await client(tokens.viewer).listSavedQueries({})).savedQueries.map((q) => q.id)).toContain(savedQuery!.id);
    // An all-projects admin lists and deletes anything.
    expect((await client().listSavedQueries({})).savedQueries.map((q) => q.id)).toContain(savedQuery!.id);
    await client().deleteSavedQuery({ id: savedQuery!.id });
    expect((await refusal(client(tokens.viewer).getSavedQuery({ id: savedQuery!.id }))).code).toBe(Code.NotFound);
  });

  it("a shared query or one with an alert needs the operator role (PermissionDenied saying so)", async () => {
    const shared = await refusal(client(tokens.viewer).createSavedQuery({ spec: spec({ shared: true }) }));
    expect(shared.code).toBe(Code.PermissionDenied);
    expect(shared.rawMessage).toMatch(/shared saved query.*needs the operator role/);
    const alert = await refusal(client(tokens.viewer).createSavedQuery({ spec: spec({ alert: { enabled: true } }) }));
    expect(alert.code).toBe(Code.PermissionDenied);
    expect(alert.rawMessage).toMatch(/alert.*needs the operator role/);
    // Nor may a viewer share its private one later.
    const { savedQuery } = await client(tokens.viewer).createSavedQuery({ spec: spec() });
    expect((await refusal(client(tokens.viewer).updateSavedQuery({ id: savedQuery!.id, spec: { ...spec({ name: savedQuery!.spec!.name }), shared: true } }))).code).toBe(Code.PermissionDenied);
  });

  it("a shared query: every viewer of the project sees it; its owner or an operator changes it; a viewer may not; another project does not see it", async () => {
    const { savedQuery } = await client(tokens.operator).createSavedQuery({ spec: spec({ shared: true, pinned: true }) });
    expect((await client(tokens.viewer).getSavedQuery({ id: savedQuery!.id })).savedQuery?.spec?.shared).toBe(true);
    expect((await client(tokens.viewer).listSavedQueries({ pinnedOnly: true })).savedQueries.map((q) => q.id)).toContain(savedQuery!.id);
    const denied = await refusal(client(tokens.viewer).updateSavedQuery({ id: savedQuery!.id, spec: { ...spec({ name: savedQuery!.spec!.name, shared: true }) } }));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.rawMessage).toContain("operator role");
    expect((await refusal(client(tokens.viewer).deleteSavedQuery({ id: savedQuery!.id }))).code).toBe(Code.PermissionDenied);
    // A project-scoped token of another project: NotFound, by id and by name.
    expect((await refusal(client(tokens["games-operator"]).getSavedQuery({ id: savedQuery!.id }))).code).toBe(Code.NotFound);
    expect((await refusal(client(tokens["games-operator"]).getSavedQuery({ id: savedQuery!.spec!.name, project: "default" }))).code).toBe(Code.NotFound);
    expect((await client(tokens["games-operator"]).listSavedQueries({})).savedQueries).toEqual([]);
    await client(tokens.operator).deleteSavedQuery({ id: savedQuery!.spec!.name });
  });

  it("a private query of another token may not be changed even by an operator of the project", async () => {
    const { savedQuery } = await client(tokens.viewer).createSavedQuery({ spec: spec() });
    expect((await refusal(client(tokens.operator).updateSavedQuery({ id: savedQuery!.id, spec: spec() }))).code).toBe(Code.NotFound);
    expect((await refusal(client().updateSavedQuery({ id: savedQuery!.id, spec: spec() }))).code).toBe(Code.PermissionDenied);
  });
});

describe("SavedQueryService: names, versions, filters", () => {
  it("refuses a name taken in the project (AlreadyExists) and a stale expected_version (Aborted); an update moves the version", async () => {
    const s = spec();
    const { savedQuery } = await client(tokens.operator).createSavedQuery({ spec: s });
    const clash = await refusal(client(tokens.viewer).createSavedQuery({ spec: { ...s } }));
    expect(clash.code).toBe(Code.AlreadyExists);
    expect(clash.rawMessage).toContain(`a saved query named "${s.name}" already exists in project "default"`);
    const up = await client(tokens.operator).updateSavedQuery({ id: savedQuery!.id, spec: { ...s, description: "v2" }, expectedVersion: 1n });
    expect(up.savedQuery?.version).toBe(2n);
    expect(up.savedQuery?.spec?.description).toBe("v2");
    const stale = await refusal(client(tokens.operator).updateSavedQuery({ id: savedQuery!.id, spec: s, expectedVersion: 1n }));
    expect(stale.code).toBe(Code.Aborted);
    expect(stale.rawMessage).toContain("is at version 2, not 1");
  });

  it("compiles the filter: a bad one is InvalidArgument on spec.query.filter; a bad group_by on its element", async () => {
    const bad = await refusal(client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.SERVERS, filter: "server.spec.nope == 1" } }) }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(fields(bad)).toEqual(["spec.query.filter"]);
    expect(bad.rawMessage).toContain("has no field 'nope'");
    const syntax = await refusal(client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.EVENTS, filter: "event.type ==" } }) }));
    expect(fields(syntax)).toEqual(["spec.query.filter"]);
    const group = await refusal(client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.EVENTS, groupBy: ["event.reason", "event.("] } }) }));
    expect(group.code).toBe(Code.InvalidArgument);
    expect(fields(group)).toEqual(["spec.query.group_by[1]"]);
  });
});

describe("RunSavedQuery", () => {
  it("returns records as the list RPC of its source does, with the caller's rights", async () => {
    const { savedQuery } = await client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.HOSTS, filter: "host.name != ''" } }) });
    const hosts = await client(tokens.viewer).runSavedQuery({ id: savedQuery!.id });
    expect(hosts.result.case).toBe("hosts");
    expect(hosts.result.case === "hosts" && hosts.result.value.hosts.length).toBe(1);
    // Events within the window, newest first: this query's own creation is one of them.
    const ev = await client(tokens.operator).createSavedQuery({ spec: spec({ shared: true, query: { source: QuerySource.EVENTS, filter: 'event.type.startsWith("query.")', window: { seconds: 3600n } } }) });
    const events = await client(tokens.viewer).runSavedQuery({ id: ev.savedQuery!.id, pageSize: 1 });
    expect(events.result.case).toBe("events");
    const list = events.result.case === "events" ? events.result.value.events : [];
    expect(list).toHaveLength(1);
    expect(list[0]?.type).toBe("query.created");
    expect(list[0]?.correlationId).toBe(ev.savedQuery!.id);
    expect(events.nextPageToken).not.toBe("");
    const next = await client(tokens.viewer).runSavedQuery({ id: ev.savedQuery!.id, pageSize: 100, pageToken: events.nextPageToken });
    expect(next.result.case === "events" && next.result.value.events.every((e) => e.id < list[0]!.id)).toBe(true);
    // Servers: none in this manager.
    const srv = await client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.SERVERS, filter: "server.status.phase == PHASE_STOPPED" } }) });
    const servers = await client(tokens.viewer).runSavedQuery({ id: srv.savedQuery!.id });
    expect(servers.result).toEqual({ case: "servers", value: expect.objectContaining({ servers: [] }) });
  });

  it("an aggregate (group_by or a chart view) runs through the injected aggregate with the caller, in the query's project", async () => {
    const { savedQuery } = await client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.SERVERS, groupBy: ["server.status.phase"] } }) });
    const r = await client(tokens.viewer).runSavedQuery({ id: savedQuery!.id });
    expect(r.result.case).toBe("aggregate");
    expect(r.result.case === "aggregate" && r.result.value.groups[0]?.key).toEqual(["PHASE_RUNNING"]);
    const call = aggregateCalls.at(-1)!;
    expect(call.caller.name).toBe("viewer");
    expect(call.req.project).toBe("default");
    expect(call.req.query?.groupBy).toEqual(["server.status.phase"]);
    const chart = await client(tokens.viewer).createSavedQuery({ spec: spec({ query: { source: QuerySource.EVENTS, view: QueryView.CHART } }) });
    expect((await client(tokens.viewer).runSavedQuery({ id: chart.savedQuery!.id })).result.case).toBe("aggregate");
  });

  it("with the manager's own Aggregate (no fake), an aggregate saved query counts what is there", async () => {
    ownAggregate = await startTestManager();
    await ScriptedAgent.enroll(ownAggregate, "agg-host");
    const { savedQuery } = await client(undefined, ownAggregate).createSavedQuery({ spec: spec({ query: { source: QuerySource.HOSTS, groupBy: ["host.name"] } }) });
    const r = await client(undefined, ownAggregate).runSavedQuery({ id: savedQuery!.id });
    expect(r.result.case).toBe("aggregate");
    const groups = r.result.case === "aggregate" ? r.result.value.groups : [];
    expect(groups.map((g) => [g.key, g.total])).toEqual([[["agg-host"], 1n]]);
  });
});
