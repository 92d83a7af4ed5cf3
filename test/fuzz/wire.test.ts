/**
 * Fuzzing a real manager process over the wire: random bytes in every
 * protocol's framing, Connect JSON with wrong types, oversized bodies, and a
 * smaller run of descriptor-built requests over gRPC. Each answer carries a
 * precise code, never Internal or Unknown, and the process survives all of it.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { Health } from "@berth/proto/grpc/health/v1/health_pb.js";
import { assertEachSeed, hostileString, messageArb, PRECISE, seedsLabel } from "../../manager/testing/fuzz-kit.js";
import { startManager, tempDir, type ManagerProc } from "../harness/processes.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 25);
const SERVICES: DescService[] = [ServerService, HostService, OrphanService, EventService, AlertService, AccessService, BackupService, FileService];
const METHODS = SERVICES.flatMap((s) => s.methods.filter((m) => m.methodKind !== "bidi_streaming").map((m) => ({ s, m })));
/** Connect's code names (lowercase, underscores) that are not precise. */
const VAGUE = new Set(["internal", "unknown"]);

describe(`fuzz over the wire: a real manager process${seedsLabel()}`, () => {
  let dir: string;
  let manager: ManagerProc;

  beforeAll(async () => {
    dir = await tempDir("wire-fuzz");
    manager = await startManager({ dir, args: ["--rate-limit", "100000", "--rate-burst", "100000"] });
  });

  afterAll(async () => {
    await manager?.stop();
  });

  const path = (s: DescService, m: DescMethod) => `${manager.url}/${s.typeName}/${m.name}`;

  /** The code of an answer in any of the three protocols; "ok" when it succeeded (or a stream is open). */
  async function answerCode(res: Response): Promise<string> {
    const type = res.headers.get("content-type") ?? "";
    // A stream that was accepted stays open: read what comes within a moment.
    const chunks: Uint8Array[] = [];
    const reader = res.body!.getReader();
    const until = Date.now() + 1_000;
    for (;;) {
      const r = await Promise.race([reader.read(), new Promise<undefined>((ok) => setTimeout(() => ok(undefined), Math.max(0, until - Date.now())))]);
      if (!r || r.done) break;
      chunks.push(r.value);
    }
    await reader.cancel().catch(() => {});
    const body = Buffer.concat(chunks);
    if (type.startsWith("application/json")) return res.ok ? "ok" : String((JSON.parse(body.toString()) as { code?: string }).code);
    if (res.status === 200 && body.length === 0) return "ok";
    if (type.startsWith("application/proto")) return "ok";
    const header = res.headers.get("grpc-status");
    if (header !== null) return header === "0" ? "ok" : Code[Number(header)]!.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
    // gRPC-Web: the status is in a trailer frame (flag 0x80) at the end of the body.
    const trailer = /grpc-status:\s*(\d+)/i.exec(body.toString("latin1"));
    if (trailer) return trailer[1] === "0" ? "ok" : Code[Number(trailer[1])]!.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
    if (type.startsWith("application/connect+")) {
      const end = /"code"\s*:\s*"([a-z_]+)"/.exec(body.toString("latin1"));
      return end ? end[1]! : "ok";
    }
    return `http ${res.status} ${type}`;
  }

  const post = (url: string, contentType: string, body: Uint8Array | string, extra: Record<string, string> = {}) =>
    fetch(url, { method: "POST", headers: { "content-type": contentType, authorization: `Bearer ${manager.adminToken}`, ...extra }, body, signal: AbortSignal.timeout(3_000) });

  const frame = (payload: Uint8Array, flags = 0) => {
    const out = Buffer.alloc(5 + payload.length);
    out[0] = flags;
    out.writeUInt32BE(payload.length, 1);
    Buffer.from(payload).copy(out, 5);
    return out;
  };

  it("random bytes as a Connect (application/proto), gRPC-Web or Connect-streaming body: a precise code", async () => {
    await assertEachSeed(
      fc.asyncProperty(fc.constantFrom(...METHODS), fc.uint8Array({ maxLength: 200 }), fc.constantFrom("proto", "grpc-web", "grpc-web-unframed", "connect-stream"), async ({ s, m }, bytes, how) => {
        const streaming = m.methodKind === "server_streaming";
        if (how === "proto" && streaming) how = "connect-stream";
        // An accepted watch may not answer before its first event: that is an open stream, not a hang.
        const res = await send().catch((err: unknown) => {
          if (streaming && (err as Error).name === "TimeoutError") return undefined;
          throw err;
        });
        if (!res) return;
        const code = await answerCode(res);
        expect(VAGUE.has(code), `${s.typeName}/${m.name} (${how}) answered ${code}`).toBe(false);
        function send() {
          return (
          how === "proto" ? post(path(s, m), "application/proto", bytes) :
          how === "grpc-web" ? post(path(s, m), "application/grpc-web+proto", frame(bytes), { "x-grpc-web": "1" }) :
          how === "grpc-web-unframed" ? post(path(s, m), "application/grpc-web+proto", bytes, { "x-grpc-web": "1" }) :
          post(path(s, m), "application/connect+proto", frame(bytes), { "connect-protocol-version": "1", "connect-timeout-ms": "500" }));
        }
      }),
      { numRuns: RUNS * 8 },
    );
  }, 120_000);

  it("Connect JSON with wrong types, broken JSON and random JSON values: InvalidArgument (or a precise refusal)", async () => {
    const unary = METHODS.filter(({ m }) => m.methodKind === "unary");
    const wrongValue = fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), fc.string(), fc.array(fc.integer(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }), fc.constant(1e400));
    const body = fc.oneof(
      // Every field of the request with a value of the wrong type.
      fc.constantFrom(...unary).chain(({ s, m }) =>
        fc.record(Object.fromEntries(m.input.fields.map((f) => [f.jsonName, wrongValue])), { requiredKeys: [] }).map((o) => ({ s, m, text: JSON.stringify(o) })),
      ),
      fc.tuple(fc.constantFrom(...unary), fc.jsonValue()).map(([{ s, m }, v]) => ({ s, m, text: JSON.stringify(v) })),
      fc.tuple(fc.constantFrom(...unary), fc.constantFrom("{", "{\"spec\":", "[1,2", "nul", "\u0000", '{"id":"\\ud800"}', '{"pageSize":"NaN"}', '{"spec":{"ports":[{"hostPort":-1}]}}', '{"spec":{"env":{"A":5}}}')).map(([{ s, m }, text]) => ({ s, m, text })),
    );
    await assertEachSeed(
      fc.asyncProperty(body, async ({ s, m, text }) => {
        const code = await answerCode(await post(path(s, m), "application/json", text));
        expect(VAGUE.has(code), `${s.typeName}/${m.name} ${text.slice(0, 120)} answered ${code}`).toBe(false);
      }),
      { numRuns: RUNS * 8 },
    );
  }, 120_000);

  it("oversized bodies answer ResourceExhausted, in every protocol", async () => {
    const big = new Uint8Array(5 * 1024 * 1024).fill(0x41);
    const m = ServerService.method.createServer;
    expect(await answerCode(await post(path(ServerService, m), "application/proto", big))).toBe("resource_exhausted");
    expect(await answerCode(await post(path(ServerService, m), "application/json", `{"spec":{"name":"${"a".repeat(5 * 1024 * 1024)}"}}`))).toBe("resource_exhausted");
    expect(await answerCode(await post(path(ServerService, m), "application/grpc-web+proto", frame(big), { "x-grpc-web": "1" }))).toBe("resource_exhausted");
  });

  it("descriptor-built hostile requests over gRPC (HTTP/2): a precise code", async () => {
    await assertEachSeed(
      fc.asyncProperty(fc.constantFrom(...METHODS).chain(({ s, m }) => messageArb(m.input, hostileString(["default"]), 2).map((req) => ({ s, m, req }))), async ({ s, m, req }) => {
        const client = createClient(s, manager.transport(manager.adminToken)) as unknown as Record<string, (r: unknown, o: object) => unknown>;
        const signal = AbortSignal.timeout(m.methodKind === "server_streaming" ? 300 : 10_000);
        try {
          if (m.methodKind === "server_streaming") for await (const _ of client[m.localName]!(req, { signal }) as AsyncIterable<unknown>) break;
          else await client[m.localName]!(req, { signal });
        } catch (err) {
          const e = ConnectError.from(err);
          if (signal.aborted && m.methodKind === "server_streaming") return;
          expect(PRECISE.has(e.code), `${m.name} answered ${Code[e.code]}: ${e.rawMessage}`).toBe(true);
        }
      }),
      { numRuns: RUNS * 4 },
    );
  }, 120_000);

  it("an error quoting a huge id still arrives over gRPC, as NotFound (its message capped to fit a trailer)", async () => {
    const alerts = createClient(AlertService, manager.transport(manager.adminToken));
    const err = await alerts.muteAlert({ id: "c".repeat(70_000) }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.NotFound);
    expect(err!.rawMessage.length).toBeLessThanOrEqual(1024);
  });

  it("the process survived all of it and still answers", async () => {
    expect(manager.child.exitCode).toBeNull();
    const health = await createClient(Health, manager.transport(undefined)).check({});
    expect(health.status).toBe(1);
    await manager.servers.listServers({});
    expect(manager.log()).not.toMatch(/"level":(50|60).*unexpected error/);
  });
});
