import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConditionStatus, Phase, Protocol, ServerSchema } from "@berth/proto/berth/v1/server_pb.js";
import { HostSchema, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { EventSchema } from "@berth/proto/berth/v1/event_pb.js";
import { BerthError } from "../errors.js";
import { assertEachSeed, seedsLabel } from "../../testing/fuzz-kit.js";
import { CALL_BUDGET, ROW_MS, MAX_COMPREHENSION_NESTING, ROW_BUDGET, ROW_WALL_AFTER, compileFilter, FilterRun, type FilterKind } from "./cel.js";

const NOW = Date.parse("2026-12-01T12:00:00Z");
const HOUR = 3_600_000;

const SERVER = create(ServerSchema, {
  id: "srv_aaaaaaaaaaaa",
  project: "games",
  generation: 3n,
  createTime: timestampFromMs(NOW - 48 * HOUR),
  spec: {
    name: "mc-prod",
    hostId: "host_1",
    image: "itzg/minecraft-server:latest",
    labels: { tier: "prod", game: "minecraft" },
    ports: [
      { containerPort: 25565, hostPort: 25565, protocol: Protocol.TCP },
      { containerPort: 25565, hostPort: 25566, protocol: Protocol.UDP },
    ],
    resources: { cpus: 2, memoryBytes: 4n * 1024n ** 3n },
  },
  status: {
    phase: Phase.FAILED,
    message: "container exited with code 137",
    conditions: [{ type: "Ready", status: ConditionStatus.FALSE, reason: "OOMKilled" }],
  },
});

const HOST = create(HostSchema, {
  id: "host_1",
  name: "rack-1",
  state: HostState.ONLINE,
  dockerVersion: "27.3.1",
  cpuCount: 8,
  serverCount: 5,
  draining: false,
  lastHeartbeat: timestampFromMs(NOW - 30_000),
  conditions: [{ type: "DiskPressure", status: ConditionStatus.TRUE }],
});

const EVENT = create(EventSchema, {
  id: 42n,
  time: timestampFromMs(NOW - 2 * HOUR),
  project: "games",
  serverId: "srv_aaaaaaaaaaaa",
  hostId: "host_1",
  type: "server.phase_changed",
  reason: "Crashed",
  message: "phase RUNNING -> FAILED",
  actor: "reconciler",
  payloadJson: '{"from":"RUNNING","to":"FAILED"}',
});

const FIXTURE = { server: SERVER, host: HOST, event: EVENT };
const test = (kind: FilterKind, expr: string) => compileFilter(kind, expr).test(FIXTURE[kind], new FilterRun(NOW));

function failure(f: () => unknown): { code: Code; message: string } {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(BerthError);
    return { code: (err as BerthError).code, message: (err as BerthError).message };
  }
  throw new Error("expected a failure");
}

describe("CEL filters: evaluation against the API's messages", () => {
  const table: [FilterKind, string, boolean][] = [
    // phases, enums by bare name, by type, by full name
    ["server", "server.status.phase == PHASE_FAILED", true],
    ["server", "server.status.phase == Phase.PHASE_FAILED", true],
    ["server", "server.status.phase == berth.v1.Phase.PHASE_FAILED", true],
    ["server", "server.status.phase == PHASE_RUNNING", false],
    ["server", "server.status.phase in [PHASE_FAILED, PHASE_STOPPED]", true],
    // conditions
    ["server", 'server.status.conditions.exists(c, c.type == "Ready" && c.status == CONDITION_STATUS_FALSE)', true],
    ["server", 'server.status.conditions.exists(c, c.reason == "Evicted")', false],
    // labels
    ["server", 'server.spec.labels["tier"] == "prod"', true],
    ["server", 'server.spec.labels["tier"] == "dev"', false],
    ["server", '"game" in server.spec.labels && server.spec.labels.game == "minecraft"', true],
    ["server", "has(server.spec.labels.owner)", false],
    // a missing key is an error on this row: the row does not match, whichever way it is compared
    ["server", 'server.spec.labels["owner"] == "x"', false],
    ["server", 'server.spec.labels["owner"] != "x"', false],
    // ports, resources
    ["server", "server.spec.ports.exists(p, p.host_port == 25566 && p.protocol == PROTOCOL_UDP)", true],
    ["server", "server.spec.ports.all(p, p.container_port == 25565)", true],
    ["server", "size(server.spec.ports) == 2", true],
    ["server", "server.spec.resources.memory_bytes >= 4u * 1024u * 1024u * 1024u", true],
    ["server", "server.spec.resources.cpus > 2.0", false],
    // strings, regexes
    ["server", 'server.spec.image.startsWith("itzg/") && server.spec.name.matches("^mc-")', true],
    ["server", 'server.status.message.contains("137")', true],
    // timestamps and durations against `now`
    ["server", 'server.create_time < now - duration("24h")', true],
    ["server", 'server.create_time > now - duration("24h")', false],
    ["server", 'now - server.create_time > duration("47h")', true],
    ["server", 'server.create_time > timestamp("2026-11-01T00:00:00Z")', true],
    // hosts
    ["host", "host.state == HOST_STATE_ONLINE && !host.draining", true],
    ["host", 'host.docker_version.startsWith("27.") && host.cpu_count >= 8u', true],
    ["host", 'host.conditions.exists(c, c.type == "DiskPressure" && c.status == CONDITION_STATUS_TRUE)', true],
    ["host", 'host.last_heartbeat < now - duration("5m")', false],
    // events: type, actor, payload (a JSON string), time
    ["event", 'event.type.startsWith("server.")', true],
    ["event", 'event.actor == "reconciler" && event.reason == "Crashed"', true],
    ["event", 'event.payload_json.contains("\\"to\\":\\"FAILED\\"")', true],
    ["event", 'event.time > now - duration("24h")', true],
    ["event", 'event.time > now - duration("1h")', false],
    ["event", "event.id > 40", true],
    // errors inside one row count as false
    ["server", "1 / 0 == 1", false],
    ["server", "server.status.conditions[5].type == \"x\"", false],
  ];
  it.each(table)("%s: %s → %s", (kind, expr, want) => {
    expect(test(kind, expr)).toBe(want);
  });
});

describe("CEL filters: refused expressions", () => {
  it("a syntax error is InvalidArgument on filter with its line and column", () => {
    const e = failure(() => compileFilter("server", 'server.id == "a" &&'));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toMatch(/^filter: syntax error at line 1, column 18: found & .*docs\/explore\.md/);
    expect(failure(() => compileFilter("server", 'true &&\n  server.id ==')).message).toMatch(/syntax error at line 2, column \d+/);
  });

  it("a message never carries a lone surrogate (the parser quotes half of a pair; a gRPC status cannot carry it)", () => {
    const e = failure(() => compileFilter("server", "\uD83D\uDCA5"));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(() => encodeURIComponent(e.message)).not.toThrow();
  });

  it("an unknown field names its message, position and the fields there are", () => {
    const e = failure(() => compileFilter("server", 'server.spec.labelz["a"] == "b"'));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("berth.v1.ServerSpec has no field 'labelz' at line 1, column 12");
    expect(e.message).toContain("labels");
    // camelCase is not the CEL name
    expect(failure(() => compileFilter("event", "event.payloadJson == ''")).message).toContain("snake_case");
  });

  it("an unknown field of a loop variable over a list of messages is refused too; other loop variables are not typed", () => {
    const e = failure(() => compileFilter("server", "server.spec.ports.exists(p, p.protocl == PROTOCOL_UDP)"));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("berth.v1.PortMapping has no field 'protocl' at line 1, column 30; its fields are host_port, container_port, protocol");
    expect(failure(() => compileFilter("server", 'server.status.conditions.all(c, c.type == "Ready" || c.stauts == CONDITION_STATUS_TRUE)')).message).toContain("berth.v1.Condition has no field 'stauts'");
    // An inner variable of the same name shadows the typed one; keys of a map and mapped values are not messages.
    for (const ok of ["server.spec.ports.exists(p, [1, 2].exists(p, p > 1))", 'server.spec.labels.exists(k, k.startsWith("a"))', "server.spec.ports.map(p, p.container_port).exists(x, x > 1)"]) {
      expect(() => compileFilter("server", ok), ok).not.toThrow();
    }
  });

  it("an unknown variable says which there are", () => {
    const e = failure(() => compileFilter("host", 'server.id == "x"'));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("undeclared reference to 'server' at line 1, column 1: the variables are host and now");
  });

  it.each(["server.id", "1 + 2", "[true]", "{}", "server.spec.labels", "server.spec.ports.map(p, p.host_port)", "size(server.spec.ports)", "server.status.phase"])(
    "%s is not bool: InvalidArgument at compile time",
    (expr) => {
      const e = failure(() => compileFilter("server", expr));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.message).toMatch(/must be bool/);
    },
  );

  it("a result found not bool only when evaluated is InvalidArgument too", () => {
    const e = failure(() => test("server", 'server.spec.labels["tier"]'));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("of type string, not bool");
  });

  it("too long, too deep, comprehensions nested too deep", () => {
    expect(failure(() => compileFilter("server", `"${"a".repeat(4100)}" == ""`)).message).toContain("longer than 4096 bytes");
    expect(failure(() => compileFilter("server", `${"(".repeat(1500)}true${")".repeat(1500)}`)).message).toMatch(/nested/);
    const nested = Array.from({ length: MAX_COMPREHENSION_NESTING + 1 }, (_, i) => `[1].all(x${i}, `).join("") + "true" + ")".repeat(MAX_COMPREHENSION_NESTING + 1);
    const e = failure(() => compileFilter("server", nested));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("comprehensions");
  });
});

describe("CEL filters: cost", () => {
  const list = (n: number) => `[${Array.from({ length: n }, (_, i) => i).join(",")}]`;

  it.each([
    `${list(300)}.all(x, ${list(300)}.all(y, y >= 0))`,
    `${list(100)}.map(a, ${list(100)}.map(b, ${list(100)})).size() > 0`,
    `${list(60)}.all(a, ${list(60)}.all(b, ${list(60)}.all(c, a + b + c >= 0)))`,
  ])("a pathological expression is cut off on its row, fast: ResourceExhausted (%#)", (expr) => {
    const f = compileFilter("server", expr);
    const t0 = performance.now();
    const e = failure(() => f.test(SERVER, new FilterRun(NOW)));
    // Cut off at ROW_MS at the latest (checked at every step; a step is bounded by the expression's size).
    expect(performance.now() - t0).toBeLessThan(ROW_MS + 50);
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.message).toMatch(new RegExp(`on one record took more than (${ROW_BUDGET} steps|${ROW_MS} ms)`));
    expect(e.message).toMatch(/narrow the filter/);
  });

  it("the same comprehension within the row budget evaluates", () => {
    expect(test("server", `${list(30)}.all(x, ${list(30)}.all(y, y >= 0))`)).toBe(true);
  });

  it("a call's rows share a budget: many rows of a costly filter end in ResourceExhausted", () => {
    // 20 x 20 iterations: under ROW_WALL_AFTER steps a row, so a row's wall-clock limit never applies
    // (with 30 x 30 a row on a loaded machine could pass 75 ms and end the call for another reason).
    const f = compileFilter("server", `${list(20)}.all(x, ${list(20)}.all(y, y >= 0))`);
    const run = new FilterRun(NOW);
    let rows = 0;
    const e = failure(() => {
      for (;;) {
        f.test(SERVER, run);
        if (rows === 0) expect(ROW_BUDGET - run.meter.rowLeft).toBeLessThan(ROW_WALL_AFTER);
        rows++;
      }
    });
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.message).toMatch(new RegExp(`more than (${CALL_BUDGET} steps|\\d+ ms) in this call`));
    expect(rows).toBeGreaterThan(10);
  });

  it("compiled filters are cached", () => {
    expect(compileFilter("server", "server.id != ''")).toBe(compileFilter("server", "server.id != ''"));
    expect(compileFilter("host", "true")).not.toBe(compileFilter("server", "true"));
  });
});

describe(`CEL filters: random expressions never crash${seedsLabel()}`, () => {
  const atoms = ["server", "server.spec", "server.spec.labels", 'server.spec.labels["tier"]', "server.status.phase", "server.spec.ports", "PHASE_FAILED", "now", '"s"', "1", "1u", "2.5", "true", "null", "[1,2]", "{'a':1}", 'duration("1h")', "x", "server.nope"];
  const ops = ["==", "!=", "<", ">", "&&", "||", "+", "-", "*", "/", "%", "in", "?", ":", ".", "(", ")", "[", "]", ",", "!", "exists(x,", "all(x,", "map(x,", "size(", "matches(", "startsWith("];
  const expr = fc.oneof(
    fc.array(fc.constantFrom(...atoms, ...ops), { maxLength: 12 }).map((xs) => xs.join(" ")),
    fc.string({ maxLength: 60 }),
  );
  it("only InvalidArgument, ResourceExhausted or a bool", async () => {
    await assertEachSeed(
      fc.property(expr, (src) => {
        try {
          const v = compileFilter("server", src).test(SERVER, new FilterRun(NOW));
          expect(typeof v).toBe("boolean");
        } catch (err) {
          expect(err).toBeInstanceOf(BerthError);
          expect([Code.InvalidArgument, Code.ResourceExhausted]).toContain((err as BerthError).code);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("docs/explore.md", () => {
  const doc = readFileSync(new URL("../../../docs/explore.md", import.meta.url), "utf8");
  const examples = [...doc.matchAll(/<!-- example (server|host|event) (true|false) -->\n```cel\n([^]*?)\n```/g)].map((m) => [m[1] as FilterKind, m[3]!, m[2] === "true"] as const);
  it("has examples", () => expect(examples.length).toBeGreaterThan(8));
  it.each(examples)("%s: %s", (kind, expr, want) => {
    expect(test(kind, expr)).toBe(want);
  });
});
