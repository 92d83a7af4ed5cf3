import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ConditionStatus, Phase, ServerSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { UsageSampleSchema } from "@berth/proto/berth/v1/usage_pb.js";
import { applyQuery, connectAddress, DEFAULT_QUERY, formatQuery, formatShownColumns, imageParts, OPTIONAL_COLUMNS, parseQuery, parseShownColumns, sortsByUsage } from "./table-query.js";

const hosts = new Map([
  ["host_a", "alpha"],
  ["host_b", "bravo"],
]);

function s(id: string, name: string, phase: Phase, o: { host?: string; project?: string; changed?: number; deleted?: boolean; port?: number } = {}): Server {
  return create(ServerSchema, {
    id,
    project: o.project ?? "default",
    spec: { name, hostId: o.host ?? "host_a", image: "busybox:1", ports: o.port ? [{ hostPort: o.port, containerPort: o.port }] : [] },
    status: { phase, lastChangeTime: timestampFromMs(o.changed ?? 0) },
    ...(o.deleted ? { deleteTime: timestampFromMs(1) } : {}),
  });
}

const all = [
  s("srv_3", "web-10", Phase.RUNNING, { changed: 30 }),
  s("srv_1", "web-2", Phase.STOPPED, { host: "host_b", changed: 10, port: 8080 }),
  s("srv_2", "db", Phase.FAILED, { project: "data", changed: 20 }),
  s("srv_4", "old", Phase.DELETED, { deleted: true }),
  s("srv_5", "web-2", Phase.RUNNING, { project: "other", changed: 30 }),
];
const names = (l: Server[]) => l.map((x) => `${x.spec?.name}/${x.id}`);

describe("table query", () => {
  it("round-trips through the URL, leaving defaults out", () => {
    const q = { ...DEFAULT_QUERY, host: "host_b", phases: [Phase.FAILED, Phase.DATA_LOST], q: "web 80", showDeleted: true, sort: "phase" as const, desc: true };
    const search = formatQuery(q, "?server=srv_1");
    expect(search).toContain("server=srv_1");
    expect(search).toContain("phase=Failed%2CDataLost");
    expect(parseQuery(search)).toEqual(q);
    expect(formatQuery(DEFAULT_QUERY)).toBe("");
    expect(parseQuery("?sort=bogus").sort).toBe("name");
  });

  it("keeps a CEL filter in ?cel= (encoded, trimmed, left out when empty), beside the other filters", () => {
    const cel = 'server.spec.labels["tier"] == "prod" && server.status.phase != PHASE_FAILED';
    const q = { ...DEFAULT_QUERY, cel, q: "web" };
    const search = formatQuery(q, "?server=srv_1");
    expect(new URLSearchParams(search).get("cel")).toBe(cel);
    expect(search).not.toContain(" ");
    expect(parseQuery(search)).toEqual(q);
    expect(formatQuery({ ...DEFAULT_QUERY, cel: "  " })).toBe("");
    expect(formatQuery({ ...DEFAULT_QUERY, cel: "" }, "?cel=old&server=srv_1")).toBe("?server=srv_1");
    expect(parseQuery("?cel=%20true%20").cel).toBe("true");
  });

  it("'Needs attention' (?phase=attention): the failing, lost, missing and unknown phases, and a server stopped outside berth, not one stopped as asked", () => {
    const outside = create(ServerSchema, { id: "srv_9", spec: { name: "killed", hostId: "host_a" }, status: { phase: Phase.STOPPED, reason: "StoppedOutsideBerth" } });
    const q = { ...DEFAULT_QUERY, attention: true };
    expect(formatQuery(q)).toBe("?phase=attention");
    expect(parseQuery("?phase=attention")).toEqual(q);
    expect(names(applyQuery([...all, outside], q, hosts))).toEqual(["db/srv_2", "killed/srv_9"]);
  });

  it("hides deleted servers unless asked, and sorts names naturally with the id as last tie-breaker", () => {
    expect(names(applyQuery(all, DEFAULT_QUERY, hosts))).toEqual(["db/srv_2", "web-2/srv_1", "web-2/srv_5", "web-10/srv_3"]);
    expect(applyQuery(all, { ...DEFAULT_QUERY, showDeleted: true }, hosts)).toHaveLength(5);
  });

  it("filters by host, project, phase and words (host names and ports included)", () => {
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, host: "host_b" }, hosts))).toEqual(["web-2/srv_1"]);
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, project: "data" }, hosts))).toEqual(["db/srv_2"]);
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, phases: [Phase.RUNNING] }, hosts))).toEqual(["web-2/srv_5", "web-10/srv_3"]);
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, q: "bravo 8080" }, hosts))).toEqual(["web-2/srv_1"]);
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, q: "WEB other" }, hosts))).toEqual(["web-2/srv_5"]);
    // Labels as key=value words.
    const labelled = [...all, create(ServerSchema, { id: "srv_6", project: "default", spec: { name: "mc", hostId: "host_a", labels: { tier: "prod", game: "mc" } }, status: { phase: Phase.RUNNING } })];
    expect(names(applyQuery(labelled, { ...DEFAULT_QUERY, q: "tier=prod" }, hosts))).toEqual(["mc/srv_6"]);
    expect(names(applyQuery(labelled, { ...DEFAULT_QUERY, q: "tier=dev" }, hosts))).toEqual([]);
  });

  it("sorts by any column, stably, both ways", () => {
    const byChanged = applyQuery(all, { ...DEFAULT_QUERY, sort: "changed" }, hosts);
    expect(names(byChanged)).toEqual(["web-2/srv_1", "db/srv_2", "web-2/srv_5", "web-10/srv_3"]);
    const desc = applyQuery(all, { ...DEFAULT_QUERY, sort: "changed", desc: true }, hosts);
    // Ties keep the name order even when descending.
    expect(names(desc)).toEqual(["web-2/srv_5", "web-10/srv_3", "db/srv_2", "web-2/srv_1"]);
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, sort: "host", desc: true }, hosts))[0]).toBe("web-2/srv_1");
  });
});

describe("usage sorts", () => {
  it("sorts by CPU or memory from the latest samples (a server without one before any figure), both ways; the URL keeps the choice", () => {
    const sample = (cpuPercent: number, memoryBytes: bigint) => create(UsageSampleSchema, { cpuPercent, memoryBytes });
    const usage = new Map([
      ["srv_3", sample(150, 100n)], // web-10
      ["srv_1", sample(2.5, 900n)], // web-2
      ["srv_2", sample(40, 50n)], // db
    ]);
    const order = (sort: "cpu" | "memory", desc = false) => names(applyQuery(all, { ...DEFAULT_QUERY, sort, desc }, hosts, usage));
    // srv_5 has no sample.
    expect(order("cpu")).toEqual(["web-2/srv_5", "web-2/srv_1", "db/srv_2", "web-10/srv_3"]);
    expect(order("cpu", true)).toEqual(["web-10/srv_3", "db/srv_2", "web-2/srv_1", "web-2/srv_5"]);
    expect(order("memory", true)).toEqual(["web-2/srv_1", "web-10/srv_3", "db/srv_2", "web-2/srv_5"]);
    // Without samples: every server ties, so the name order.
    expect(names(applyQuery(all, { ...DEFAULT_QUERY, sort: "cpu" }, hosts))).toEqual(names(applyQuery(all, DEFAULT_QUERY, hosts)));
    expect(parseQuery(formatQuery({ ...DEFAULT_QUERY, sort: "memory", desc: true }))).toMatchObject({ sort: "memory", desc: true });
    expect(sortsByUsage("cpu") && sortsByUsage("memory") && !sortsByUsage("uptime")).toBe(true);
  });
});

describe("connect address, image, uptime sort and the column choice", () => {
  it("is the host's name and the first published port; nothing without a port", () => {
    const two = create(ServerSchema, { id: "srv_7", spec: { name: "mc", hostId: "host_a", ports: [{ hostPort: 25565, containerPort: 25565 }, { hostPort: 25575, containerPort: 25575 }] } });
    expect(connectAddress(two, "alpha")).toBe("alpha:25565");
    expect(connectAddress(all[0]!, "alpha")).toBeUndefined();
  });

  it("keeps an image's tag whole and drops Docker Hub's implied prefixes", () => {
    expect(imageParts("docker.io/library/postgres:16-alpine")).toEqual({ repo: "postgres", tag: ":16-alpine" });
    expect(imageParts("registry.example.com:5000/team/game-server:1.20.4")).toEqual({ repo: "registry.example.com:5000/team/game-server", tag: ":1.20.4" });
    expect(imageParts(`ghcr.io/o/app@sha256:${"ab".repeat(32)}`)).toEqual({ repo: "ghcr.io/o/app", tag: "@abababababab" });
    expect(imageParts("busybox")).toEqual({ repo: "busybox", tag: "" });
  });

  it("sorts by uptime (shortest first; not running before any) and by connect address", () => {
    const up = (id: string, since: number | undefined, port?: number) =>
      create(ServerSchema, {
        id,
        spec: { name: id, hostId: "host_a", ports: port ? [{ hostPort: port, containerPort: 1 }] : [] },
        status: {
          phase: since === undefined ? Phase.STOPPED : Phase.RUNNING,
          conditions: since === undefined ? [] : [{ type: "ContainerRunning", status: ConditionStatus.TRUE, lastTransitionTime: timestampFromMs(since) }],
        },
      });
    const list = [up("old", 1_000, 9000), up("new", 5_000, 80), up("off", undefined)];
    expect(applyQuery(list, { ...DEFAULT_QUERY, sort: "uptime" }, hosts).map((x) => x.id)).toEqual(["off", "new", "old"]);
    expect(applyQuery(list, { ...DEFAULT_QUERY, sort: "uptime", desc: true }, hosts).map((x) => x.id)).toEqual(["old", "new", "off"]);
    expect(applyQuery(list, { ...DEFAULT_QUERY, sort: "connect" }, hosts).map((x) => x.id)).toEqual(["off", "new", "old"]);
  });

  it("keeps the chosen internal columns as a JSON list, ignoring what it does not know", () => {
    expect([...parseShownColumns(null)]).toEqual(["usage"]); // the default: usage only
    expect([...parseShownColumns("not json")]).toEqual(["usage"]);
    expect([...parseShownColumns('["generation","bogus","container"]')]).toEqual(["usage", "container", "generation"]); // stored before usage existed
    expect([...parseShownColumns('["-usage","ports"]')]).toEqual(["ports"]);
    expect(formatShownColumns(new Set(["ports", "container"] as const))).toBe('["-usage","container","ports"]');
    expect(formatShownColumns(new Set(["usage"] as const))).toBe("[]");
    expect(parseShownColumns(formatShownColumns(new Set(OPTIONAL_COLUMNS)))).toEqual(new Set(OPTIONAL_COLUMNS));
  });
});
