/**
 * Property-based fuzzing of every RPC of every berth.v1 service against a
 * real in-process manager (HTTP/2, interceptors, handlers, SQLite): requests
 * built from each method's descriptor with hostile field values, sent with
 * tokens of every role (and none). Each answer is OK or a precise code —
 * never Internal or Unknown — and a refused call writes no record.
 *
 * FUZZ_RUNS=n raises the number of requests per method (default 40).
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { AgentService } from "@berth/proto/berth/v1/agent_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { hostileString, messageArb, PRECISE, recordSnapshot, ScriptedAgent, startTestManager, type TestManager } from "../testing/fuzz-kit.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 40);
const SERVICES: DescService[] = [ServerService, HostService, OrphanService, EventService, AlertService, AccessService, AgentService];

describe("fuzz: every RPC answers a precise code and a refused call writes nothing", () => {
  let tm: TestManager;
  let agent: ScriptedAgent;
  const pool: string[] = [];
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    tm = await startTestManager();
    agent = await ScriptedAgent.enroll(tm);
    agent.connect();
    const servers = createClient(ServerService, tm.transport());
    for (let i = 0; i < 100 && !tm.manager.hub.isConnected(agent.hostId); i++) await new Promise((r) => setTimeout(r, 20));
    for (const name of ["alpha", "beta", "gamma"]) {
      const { server } = await servers.createServer({ spec: { name, image: "busybox:1", hostId: agent.hostId, ports: name === "alpha" ? [{ hostPort: 8080, containerPort: 80 }] : [] } });
      pool.push(server!.id, name);
    }
    await servers.deleteServer({ id: "gamma" });
    const access = createClient(AccessService, tm.transport());
    for (const role of [Role.VIEWER, Role.OPERATOR, Role.ADMIN]) {
      const { secret } = await access.createToken({ name: `fuzz-${role}`, role, project: "default" });
      tokens[Role[role]!] = secret;
    }
    tokens.ALL_ADMIN = tm.adminToken;
    tokens.NONE = "";
    tokens.GARBAGE = "brt_notatoken";
    pool.push(agent.hostId, "default", "busybox:1", "/data");
  });

  afterAll(async () => {
    await agent?.close();
    await tm?.close();
  });

  /** Lets the reconciler and the scripted agent finish what the last call started. */
  async function quiet(): Promise<void> {
    for (let calm = 0, i = 0; calm < 3 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 2));
      calm = tm.manager.reconciler.queue.length === 0 ? calm + 1 : 0;
    }
  }

  async function invoke(service: DescService, method: DescMethod, req: unknown, token: string): Promise<ConnectError | undefined> {
    const client = createClient(service, tm.transport(token)) as unknown as Record<string, (req: unknown, opts: object) => unknown>;
    const call = client[method.localName]!;
    const signal = AbortSignal.timeout(method.methodKind === "server_streaming" ? 300 : 10_000);
    try {
      if (method.methodKind === "server_streaming") {
        // The first message (or the refusal) is the answer; then hang up.
        for await (const _ of call(req, { signal }) as AsyncIterable<unknown>) break;
      } else {
        await call(req, { signal });
      }
      return undefined;
    } catch (err) {
      const e = ConnectError.from(err);
      // Our own hang-up of a stream that had nothing to say yet.
      if (signal.aborted && method.methodKind === "server_streaming") return undefined;
      return e;
    }
  }

  for (const service of SERVICES) {
    for (const method of service.methods) {
      if (method.methodKind === "bidi_streaming") continue; // AgentService.Connect: agent-link.fuzz.test.ts
      it(`${service.typeName}.${method.name}`, async () => {
        const strings = hostileString(pool);
        await fc.assert(
          fc.asyncProperty(messageArb(method.input, strings), fc.constantFrom(...Object.keys(tokens)), async (req, who) => {
            await quiet();
            const before = recordSnapshot(tm.dbPath);
            const err = await invoke(service, method, req, tokens[who]!);
            if (!err) return;
            expect(PRECISE.has(err.code), `${method.name} as ${who} answered ${Code[err.code]}: ${err.rawMessage}`).toBe(true);
            expect(err.rawMessage.length, "an error says what is wrong").toBeGreaterThan(0);
            await quiet();
            expect(recordSnapshot(tm.dbPath), `${method.name} as ${who} refused with ${Code[err.code]} but wrote records`).toBe(before);
          }),
          { numRuns: RUNS },
        );
      }, 60_000);
    }
  }

  it("the manager still serves after all of it", async () => {
    const { servers } = await createClient(ServerService, tm.transport()).listServers({ showDeleted: true });
    expect(servers.length).toBeGreaterThan(0);
    expect(tm.manager.observability).toBeDefined();
  });
});
