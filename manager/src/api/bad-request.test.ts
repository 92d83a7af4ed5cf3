/**
 * A refused create or update says everything wrong with it at once: the
 * message lists every problem in words, and a google.rpc.BadRequest detail
 * carries each one with its field, over gRPC and the Connect protocol (what
 * the dashboard speaks) alike. Errors about a host name it as operators know it.
 */
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { MAX_ERROR_MESSAGE } from "../errors.js";
import { bearer, ScriptedAgent, startTestManager, type TestManager } from "../../testing/fuzz-kit.js";

let tm: TestManager;
let agent: ScriptedAgent;
let hostName: string;

beforeAll(async () => {
  tm = await startTestManager();
  agent = await ScriptedAgent.enroll(tm);
  agent.connect();
  for (let i = 0; i < 250 && !tm.manager.hub.isConnected(agent.hostId); i++) await new Promise((r) => setTimeout(r, 20));
  const { hosts } = await createClient(HostService, tm.transport()).listHosts({});
  hostName = hosts.find((h) => h.id === agent.hostId)!.name;
  expect(hostName).not.toBe(agent.hostId);
});

afterAll(async () => {
  await agent?.close();
  await tm?.close();
});

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}

const violations = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })));

/** A spec that breaks a field rule (name), another (a port of 0) and a rule spanning fields (one host port twice). */
const BAD_SPEC = {
  name: "Bad Name",
  image: "busybox:1",
  ports: [
    { hostPort: 0, containerPort: 80 },
    { hostPort: 9000, containerPort: 90 },
    { hostPort: 9000, containerPort: 91 },
  ],
};

describe("InvalidArgument carries every field violation (google.rpc.BadRequest)", () => {
  const transports: [string, () => Transport][] = [
    ["gRPC", () => tm.transport()],
    ["Connect (binary, as the dashboard)", () => createConnectTransport({ baseUrl: tm.url, httpVersion: "2", useBinaryFormat: true, interceptors: [bearer(tm.adminToken)] })],
  ];

  for (const [protocol, transport] of transports) {
    it(`CreateServer over ${protocol}: every problem, each on its field, and the message lists them`, async () => {
      const servers = createClient(ServerService, transport());
      const err = await refusal(servers.createServer({ spec: BAD_SPEC }));
      expect(err.code).toBe(Code.InvalidArgument);
      const got = violations(err);
      expect(got.map((v) => v.field).sort()).toEqual(["spec.name", "spec.ports[0].host_port", "spec.ports[2].host_port"]);
      for (const v of got) {
        expect(v.description).not.toBe("");
        // The human message names each of them too.
        expect(err.rawMessage).toContain(v.field === "spec.name" ? v.description : v.field);
      }
      expect(got.find((v) => v.field === "spec.ports[2].host_port")?.description).toMatch(/already used by ports\[1\]/);
      expect(await tm.manager.store.allServerIds()).toEqual([]);
    });
  }

  it("UpdateServer: every problem too; a single-field refusal carries its one violation", async () => {
    const servers = createClient(ServerService, tm.transport());
    const { server } = await servers.createServer({ spec: { name: "keep", image: "busybox:1", hostId: agent.hostId, desiredState: 3 /* STOPPED */ } });
    const bad = await refusal(servers.updateServer({ id: server!.id, spec: { ...BAD_SPEC, name: "keep", image: "Not An Image" } }));
    expect(violations(bad).map((v) => v.field).sort()).toEqual(["spec.image", "spec.ports[0].host_port", "spec.ports[2].host_port"]);

    // A check in the handler (not a field rule) is one violation, on its field.
    const moved = await refusal(servers.updateServer({ id: server!.id, spec: { name: "keep", image: "busybox:1", hostId: "host_elsewhere" } }));
    expect(moved.code).toBe(Code.InvalidArgument);
    expect(violations(moved)).toEqual([{ field: "spec.host_id", description: expect.stringContaining(`it is on ${hostName}`) }]);
    // The host by its name, not its id.
    expect(moved.rawMessage).not.toContain(agent.hostId);
  });

  it("a port conflict names the host by its name", async () => {
    const servers = createClient(ServerService, tm.transport());
    const ports = [{ hostPort: 27015, containerPort: 27015 }];
    await servers.createServer({ spec: { name: "first", image: "busybox:1", hostId: agent.hostId, ports, desiredState: 3 } });
    const err = await refusal(servers.createServer({ spec: { name: "second", image: "busybox:1", hostId: agent.hostId, ports, desiredState: 3 } }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toBe(`port conflict on host ${hostName}: host port 27015/tcp is used by server "first" (try 27016)`);
  });

  it("an install script written by hand is checked like a template's: every bad field named", async () => {
    const servers = createClient(ServerService, tm.transport());
    const err = await refusal(
      servers.createServer({ spec: { name: "inst", image: "busybox:1", hostId: agent.hostId, install: { image: "Not An Image", script: "", entrypoint: "bash -e", timeoutSeconds: 99_999 } } }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err).map((v) => v.field).sort()).toEqual(["spec.install.entrypoint", "spec.install.image", "spec.install.script", "spec.install.timeout_seconds"]);
    expect(await tm.manager.store.findServerByName("default", "inst")).toBeUndefined();
  });
});

describe("a refusal whose message is clipped inside an emoji is still answered", () => {
  // Message clipped at MAX_ERROR_MESSAGE code units; a clip between the halves of a surrogate
  // pair left a lone surrogate that connect-es' grpc-message encoding (encodeURIComponent)
  // throws on: the call was never answered and the client waited out its deadline.
  const transports: [string, () => Transport][] = [
    ["gRPC", () => tm.transport()],
    ["gRPC-web", () => createGrpcWebTransport({ baseUrl: tm.url, httpVersion: "2", interceptors: [bearer(tm.adminToken)] })],
    ["Connect (JSON)", () => createConnectTransport({ baseUrl: tm.url, httpVersion: "2", interceptors: [bearer(tm.adminToken)] })],
  ];
  for (const [protocol, transport] of transports) {
    it(`over ${protocol}: InvalidArgument at once, the message well-formed and within bounds, at either parity of the clip point`, async () => {
      const servers = createClient(ServerService, transport());
      for (const shift of ["", "x"]) {
        // Env names that are not names: each one quoted in the message, emoji throughout.
        const env = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`${i === 0 ? shift : ""}${"😀".repeat(12)}${i}`, "v"]));
        const err = await refusal(servers.createServer({ spec: { name: "emoji", image: "busybox:1", env } }, { signal: AbortSignal.timeout(10_000) }));
        expect(err.code, err.rawMessage).toBe(Code.InvalidArgument);
        expect(err.rawMessage.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE);
        expect(err.rawMessage).toMatch(/…$/);
        expect(err.rawMessage).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/);
      }
      expect(await tm.manager.store.findServerByName("default", "emoji")).toBeUndefined();
    });
  }
});

