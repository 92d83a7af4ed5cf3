import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { Phase, ServerSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { applyQuery, DEFAULT_QUERY, formatQuery, parseQuery } from "./table-query.js";

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
