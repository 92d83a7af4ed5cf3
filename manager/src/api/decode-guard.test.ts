import { toBinary, create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ListServersRequestSchema } from "@berth/proto/berth/v1/server_pb.js";
import { startTestManager, type TestManager } from "../../testing/fuzz-kit.js";

describe("undecodable request messages answer InvalidArgument", () => {
  let tm: TestManager;
  beforeAll(async () => {
    tm = await startTestManager();
  });
  afterAll(async () => tm?.close());

  const post = (path: string, type: string, body: Uint8Array, extra: Record<string, string> = {}) =>
    fetch(`${tm.url}/berth.v1.ServerService/${path}`, { method: "POST", headers: { "content-type": type, authorization: `Bearer ${tm.adminToken}`, ...extra }, body });
  const framed = (b: Uint8Array) => {
    const out = Buffer.alloc(5 + b.length);
    out.writeUInt32BE(b.length, 1);
    Buffer.from(b).copy(out, 5);
    return out;
  };

  it("Connect with protobuf bytes that are not the message: 400 invalid_argument naming the type, not 500 internal", async () => {
    const res = await post("CreateServer", "application/proto", new Uint8Array([0]));
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/^request: not a valid berth\.v1\.CreateServerRequest message \(.+\); check the client's protobuf definitions$/);
  });

  it("gRPC-Web too; a valid message passes untouched; a client cannot set the marker itself", async () => {
    const bad = await post("ListServers", "application/grpc-web+proto", framed(new Uint8Array([0xff, 0xff])), { "x-grpc-web": "1" });
    expect(Buffer.from(await bad.arrayBuffer()).toString("latin1")).toMatch(/grpc-status:\s*3/);
    const good = await post("ListServers", "application/proto", toBinary(ListServersRequestSchema, create(ListServersRequestSchema, { pageSize: 5 })), {
      "x-berth-undecodable-request": "forged",
    });
    expect(good.status).toBe(200);
  });

  it("an oversized body still answers resource_exhausted", async () => {
    const res = await post("CreateServer", "application/proto", new Uint8Array(5 * 1024 * 1024).fill(1));
    expect(((await res.json()) as { code: string }).code).toBe("resource_exhausted");
  });
});
