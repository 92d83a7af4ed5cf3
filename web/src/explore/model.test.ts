import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { AggregateQuerySchema, QuerySource, QueryView } from "@berth/proto/berth/v1/query_pb.js";
import { Severity } from "@berth/proto/berth/v1/alert_pb.js";
import { aggregateQueryOf, DEFAULTS, formatDurationShort, formatExplore, parseDuration, parseExplore, sameQuery, stateOfQuery, type ExploreState } from "./model.js";
import { checkSaveForm, emptySaveForm, fieldOfSavePath, problemsOfRefusal, specOf, suggestName } from "./saved-model.js";

describe("explore URL ↔ state", () => {
  it("an empty query string is the servers table", () => {
    expect(parseExplore("")).toEqual(DEFAULTS);
    expect(formatExplore(DEFAULTS)).toBe("?source=servers&view=table");
  });

  it("round-trips an events chart grouped by two expressions", () => {
    const s: ExploreState = { source: "events", cel: 'event.type == "phase.changed"', view: "chart", group: ["event.reason", "event.server_id"], interval: 300, window: 86400, minTotal: 4, saved: "sq_1" };
    const url = formatExplore(s);
    expect(url).toBe("?source=events&cel=event.type+%3D%3D+%22phase.changed%22&view=chart&group=event.reason&group=event.server_id&interval=300&window=86400&min=4&saved=sq_1");
    expect(parseExplore(url)).toEqual(s);
  });

  it("a timeline is for events only; unknown values fall back to the defaults", () => {
    expect(parseExplore("?source=servers&view=timeline").view).toBe("table");
    expect(parseExplore("?source=events&view=timeline").view).toBe("timeline");
    expect(parseExplore("?source=nodes&view=pie")).toMatchObject({ source: "servers", view: "table" });
    expect(parseExplore("?source=events&view=chart&interval=-5&window=abc&min=x")).toMatchObject({ interval: 3600, window: 86400, minTotal: 0 });
  });

  it("keeps at most 3 group-by expressions, drops empty ones, trims the filter", () => {
    const s = parseExplore("?source=servers&view=chart&group=a&group=&group=b&group=c&group=d&cel=%20server.id%20");
    expect(s.group).toEqual(["a", "b", "c"]);
    expect(s.cel).toBe("server.id");
  });

  it("widens the bucket when the window would hold more than 1,000 of them", () => {
    expect(parseExplore("?source=events&view=chart&interval=60&window=2592000").interval).toBe(3600);
    expect(parseExplore("?source=events&view=chart&interval=60&window=3600").interval).toBe(60);
  });

  it("the table view does not carry the chart's fields; hosts do not carry a window", () => {
    expect(formatExplore({ ...DEFAULTS, source: "events", view: "table", group: ["event.reason"], minTotal: 3 })).toBe("?source=events&view=table");
    expect(formatExplore({ ...DEFAULTS, source: "hosts", view: "chart", group: ["host.state"] })).toBe("?source=hosts&view=chart&group=host.state");
  });

  it("sameQuery ignores the saved id only", () => {
    const a = parseExplore("?source=events&view=chart&group=event.reason");
    expect(sameQuery(a, { ...a, saved: "x" })).toBe(true);
    expect(sameQuery(a, { ...a, cel: "true" })).toBe(false);
  });
});

describe("explore state ↔ AggregateQuery", () => {
  it("an events chart becomes source, filter, group_by, interval, window, min_total and view", () => {
    const q = aggregateQueryOf({ source: "events", cel: " event.type == \"x\" ", view: "chart", group: ["event.reason", " "], interval: 3600, window: 7 * 86400, minTotal: 2, saved: "" });
    expect(q).toEqual({
      source: QuerySource.EVENTS,
      filter: 'event.type == "x"',
      groupBy: ["event.reason"],
      minTotal: 2n,
      view: QueryView.CHART,
      interval: { seconds: 3600n, nanos: 0 },
      window: { seconds: 604800n, nanos: 0 },
    });
  });

  it("servers have no interval or window", () => {
    const q = aggregateQueryOf({ ...DEFAULTS, source: "servers", view: "chart", group: ["server.status.phase"] });
    expect(q.interval).toBeUndefined();
    expect(q.window).toBeUndefined();
    expect(q.source).toBe(QuerySource.SERVERS);
  });

  it("a stored query opens as the state that made it", () => {
    const s: ExploreState = { source: "events", cel: "event.actor == \"reconciler\"", view: "chart", group: ["event.reason"], interval: 300, window: 86400, minTotal: 1, saved: "" };
    const stored = create(AggregateQuerySchema, aggregateQueryOf(s));
    expect(stateOfQuery(stored, "sq_9")).toEqual({ ...s, saved: "sq_9" });
    const hosts: ExploreState = { ...DEFAULTS, source: "hosts", cel: "host.draining" };
    expect(stateOfQuery(create(AggregateQuerySchema, aggregateQueryOf(hosts)))).toEqual(hosts);
  });

  it("a stored query without a view: a chart when grouped, else a table; a timeline of hosts is their table", () => {
    expect(stateOfQuery(create(AggregateQuerySchema, { source: QuerySource.SERVERS, groupBy: ["server.project"] })).view).toBe("chart");
    expect(stateOfQuery(create(AggregateQuerySchema, { source: QuerySource.EVENTS })).view).toBe("table");
    expect(stateOfQuery(create(AggregateQuerySchema, { source: QuerySource.HOSTS, view: QueryView.TIMELINE })).view).toBe("table");
    // Events with a window and no interval: the whole window is one bucket.
    expect(stateOfQuery(create(AggregateQuerySchema, { source: QuerySource.EVENTS, window: { seconds: 3600n } }))).toMatchObject({ interval: 0, window: 3600 });
  });
});

describe("durations", () => {
  it("parses 30s, 5m, 1h30m, 2d and bare seconds; refuses the rest", () => {
    expect(parseDuration("30s")).toBe(30);
    expect(parseDuration("5m")).toBe(300);
    expect(parseDuration("1h30m")).toBe(5400);
    expect(parseDuration("2d")).toBe(172800);
    expect(parseDuration("300")).toBe(300);
    expect(parseDuration("")).toBeUndefined();
    expect(parseDuration("5 minutes")).toBeUndefined();
    expect(parseDuration("m")).toBeUndefined();
  });
  it("formats the shortest way", () => {
    expect(formatDurationShort(300)).toBe("5m");
    expect(formatDurationShort(5400)).toBe("1h30m");
    expect(formatDurationShort(0)).toBe("0s");
  });
});

describe("save form", () => {
  const state: ExploreState = { source: "servers", cel: "server.status.restart_count > 3", view: "table", group: [], interval: 3600, window: 86400, minTotal: 0, saved: "" };

  it("makes the spec: query from the page, alert only when enabled", () => {
    const f = { ...emptySaveForm(), name: " crashy ", description: "restarts", shared: true, pinned: true };
    expect(specOf(state, f)).toEqual({ name: "crashy", description: "restarts", query: aggregateQueryOf(state), shared: true, pinned: true });
    const withAlert = specOf(state, { ...f, alert: true, fireAfter: "10m", severity: Severity.CRITICAL });
    expect(withAlert.alert).toEqual({ enabled: true, fireAfter: { seconds: 600n, nanos: 0 }, severity: Severity.CRITICAL });
  });

  it("checks the name and the fire-after duration before asking", () => {
    expect(checkSaveForm(emptySaveForm()).map((p) => p.field)).toEqual(["name"]);
    expect(checkSaveForm({ ...emptySaveForm(), name: "x", alert: true, fireAfter: "soon" }).map((p) => p.field)).toEqual(["fireAfter"]);
    expect(checkSaveForm({ ...emptySaveForm(), name: "x", alert: true, fireAfter: "5m" })).toEqual([]);
  });

  it("puts the manager's violations on the fields they name", () => {
    expect(fieldOfSavePath("spec.name")).toBe("name");
    expect(fieldOfSavePath("spec.query.filter")).toBe("cel");
    expect(fieldOfSavePath("spec.query.group_by[2]")).toBe("group");
    expect(fieldOfSavePath("spec.alert.fire_after")).toBe("fireAfter");
    expect(fieldOfSavePath("project")).toBeUndefined();
    expect(problemsOfRefusal("invalid", [{ field: "spec.name", description: "use 1-63 lowercase letters" }, { field: "project", description: "too long" }])).toEqual([
      { field: "name", message: "use 1-63 lowercase letters" },
      { field: undefined, message: "project: too long" },
    ]);
    expect(problemsOfRefusal("spec.query.filter: syntax error at line 1, column 3: x", [])).toEqual([{ field: "cel", message: "spec.query.filter: syntax error at line 1, column 3: x" }]);
    expect(problemsOfRefusal("a saved query named x already exists", [])).toEqual([{ field: undefined, message: "a saved query named x already exists" }]);
  });

  it("suggests a valid name from free text", () => {
    expect(suggestName("Crashed this week!")).toBe("crashed-this-week");
    expect(suggestName("--A__b--")).toBe("a-b");
  });
});
