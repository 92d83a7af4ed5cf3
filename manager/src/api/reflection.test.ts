import { execFile } from "node:child_process";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary, getExtension, toBinary } from "@bufbuild/protobuf";
import { field, file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import type { Client, ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { Health } from "@berth/proto/grpc/health/v1/health_pb.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
} from "@berth/proto/grpc/reflection/v1/reflection_pb.js";
import type { ServerReflectionResponse } from "@berth/proto/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "@berth/proto/grpc/reflection/v1alpha/reflection_pb.js";
import { HealthStatus, ServingStatus, registerHealth } from "./health.js";
import { registerReflection } from "./reflection.js";

const BUF = fileURLToPath(new URL("../../../node_modules/.bin/buf", import.meta.url));

let server: http2.Http2Server;
const sessions = new Set<http2.ServerHttp2Session>();
let baseUrl: string;
let reflection: Client<typeof ServerReflection>;
let health: Client<typeof Health>;
const status = new HealthStatus();

beforeAll(async () => {
  const routes = (router: ConnectRouter): void => {
    registerHealth(router, status);
    // No methods implemented: connect answers each with Unimplemented, which
    // is enough to prove a reflection-driven client built a valid request.
    router.service(ServerService, {});
    registerReflection(router);
  };
  server = http2.createServer(connectNodeAdapter({ routes }));
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const transport = createGrpcTransport({ baseUrl });
  reflection = createClient(ServerReflection, transport);
  health = createClient(Health, transport);
});

afterAll(async () => {
  // close() waits for open sessions, and the client transport keeps its
  // session alive, so end them explicitly.
  for (const session of sessions) session.destroy();
  await new Promise<void>((resolve, reject) =>
    server.close((error) => (error ? reject(error) : resolve())),
  );
});

/** Runs `buf curl` over gRPC; resolves with its exit code and output. */
function bufCurl(...args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      BUF,
      ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args],
      { timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
        resolve({ code, output: stdout + stderr });
      },
    );
  });
}

/** Sends `requests` on one ServerReflectionInfo stream and collects the answers. */
async function reflect(
  ...requests: MessageInitShape<typeof ServerReflectionRequestSchema>[]
): Promise<ServerReflectionResponse[]> {
  async function* send() {
    yield* requests;
  }
  const responses: ServerReflectionResponse[] = [];
  for await (const response of reflection.serverReflectionInfo(send())) responses.push(response);
  return responses;
}

function fileNames(response: ServerReflectionResponse): string[] {
  expect(response.messageResponse.case).toBe("fileDescriptorResponse");
  if (response.messageResponse.case !== "fileDescriptorResponse") return [];
  return response.messageResponse.value.fileDescriptorProto.map(
    (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
  );
}

describe("buf curl through reflection", () => {
  it("lists services", async () => {
    const { code, output } = await bufCurl("--list-services", baseUrl);
    expect(code, output).toBe(0);
    expect(output.trim().split("\n").sort()).toEqual([
      "berth.v1.ServerService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
  });

  it("lists methods", async () => {
    const { code, output } = await bufCurl("--list-methods", baseUrl);
    expect(code, output).toBe(0);
    const methods = output.trim().split("\n");
    expect(methods).toContain("berth.v1.ServerService/GetServer");
    expect(methods).toContain("berth.v1.ServerService/WatchServers");
    expect(methods).toContain("grpc.health.v1.Health/Watch");
  });

  it("calls a berth method with a schema learned from reflection", async () => {
    const { code, output } = await bufCurl(
      "-d",
      '{"id":"x"}',
      `${baseUrl}/berth.v1.ServerService/GetServer`,
    );
    expect(code, output).not.toBe(0);
    expect(output).toMatch(/unimplemented/i);
  });

  it("works over the v1alpha reflection protocol too", async () => {
    const { code, output } = await bufCurl(
      "--reflect-protocol",
      "grpc-v1alpha",
      "--list-methods",
      baseUrl,
    );
    expect(code, output).toBe(0);
    expect(output).toContain("berth.v1.ServerService/GetServer");
  });

  it("checks health", async () => {
    const { code, output } = await bufCurl("-d", "{}", `${baseUrl}/grpc.health.v1.Health/Check`);
    expect(code, output).toBe(0);
    expect(output).toContain('"status": "SERVING"');
  });
});

describe("reflection protocol", () => {
  it("answers an unknown symbol with NOT_FOUND and keeps the stream open", async () => {
    const [missing, found] = await reflect(
      { host: "h", messageRequest: { case: "fileContainingSymbol", value: "berth.v1.Nope" } },
      { messageRequest: { case: "fileByFilename", value: "berth/v1/server.proto" } },
    );
    expect(missing.validHost).toBe("h");
    expect(missing.originalRequest?.messageRequest).toEqual({
      case: "fileContainingSymbol",
      value: "berth.v1.Nope",
    });
    expect(missing.messageResponse.case).toBe("errorResponse");
    expect(missing.messageResponse.value).toMatchObject({ errorCode: Code.NotFound });
    expect(fileNames(found)[0]).toBe("berth/v1/server.proto");
  });

  it("returns the file containing a message with its imports", async () => {
    const [response] = await reflect({
      messageRequest: { case: "fileContainingSymbol", value: "berth.v1.Server" },
    });
    expect(fileNames(response)).toEqual([
      "berth/v1/server.proto",
      "buf/validate/validate.proto",
      "google/protobuf/descriptor.proto",
      "google/protobuf/duration.proto",
      "google/protobuf/field_mask.proto",
      "google/protobuf/timestamp.proto",
    ]);
  });

  it("serves protovalidate's rules: buf/validate/validate.proto, and each field's rule in its options", async () => {
    const [response] = await reflect({
      messageRequest: { case: "fileContainingSymbol", value: "berth.v1.PortMapping" },
    });
    expect(response.messageResponse.case).toBe("fileDescriptorResponse");
    if (response.messageResponse.case !== "fileDescriptorResponse") return;
    const files = response.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
    // The same rule definitions the manager's validator evaluates.
    const served = files.find((f) => f.name === "buf/validate/validate.proto")!;
    expect(toBinary(FileDescriptorProtoSchema, served)).toEqual(toBinary(FileDescriptorProtoSchema, file_buf_validate_validate.proto));
    const portMapping = files.find((f) => f.name === "berth/v1/server.proto")!.messageType.find((m) => m.name === "PortMapping")!;
    const hostPort = portMapping.field.find((f) => f.name === "host_port")!;
    const rules = getExtension(hostPort.options!, field);
    expect(rules.type).toMatchObject({ case: "uint32", value: { greaterThan: { case: "gte", value: 1 }, lessThan: { case: "lte", value: 65535 } } });
  });

  it("resolves methods, fields and enum values", async () => {
    const responses = await reflect(
      ...[
        "berth.v1.ServerService.GetServer",
        "berth.v1.Server.spec",
        "berth.v1.Protocol",
        "berth.v1.PROTOCOL_TCP",
      ].map((value) => ({ messageRequest: { case: "fileContainingSymbol" as const, value } })),
    );
    for (const response of responses) expect(fileNames(response)[0]).toBe("berth/v1/server.proto");
  });

  it("reports extension numbers and unknown extensions", async () => {
    const [numbers, missingType, missingExtension] = await reflect(
      { messageRequest: { case: "allExtensionNumbersOfType", value: "berth.v1.Server" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "berth.v1.Nope" } },
      {
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "berth.v1.Server", extensionNumber: 100 },
        },
      },
    );
    expect(numbers.messageResponse).toMatchObject({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "berth.v1.Server", extensionNumber: [] },
    });
    expect(missingType.messageResponse.value).toMatchObject({ errorCode: Code.NotFound });
    expect(missingExtension.messageResponse.value).toMatchObject({ errorCode: Code.NotFound });
  });

  it("lists services over v1alpha", async () => {
    const client = createClient(
      ServerReflectionV1Alpha,
      createGrpcTransport({ baseUrl }),
    );
    async function* send() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
    }
    const responses = [];
    for await (const response of client.serverReflectionInfo(send())) responses.push(response);
    expect(responses).toHaveLength(1);
    const [response] = responses;
    expect(response.messageResponse.case).toBe("listServicesResponse");
    if (response.messageResponse.case !== "listServicesResponse") return;
    expect(response.messageResponse.value.service.map((s) => s.name)).toContain(
      "berth.v1.ServerService",
    );
  });
});

describe("health", () => {
  it("rejects unknown services in Check", async () => {
    await expect(health.check({ service: "berth.v1.Nope" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
  });

  it("streams status changes in Watch until cancelled", async () => {
    const abort = new AbortController();
    const seen: ServingStatus[] = [];
    const stream = health.watch({ service: "berth.v1.ServerService" }, { signal: abort.signal });
    try {
      for await (const { status: current } of stream) {
        seen.push(current);
        if (current === ServingStatus.SERVICE_UNKNOWN) {
          status.set("berth.v1.ServerService", ServingStatus.SERVING);
        } else if (current === ServingStatus.SERVING) {
          status.set("berth.v1.ServerService", ServingStatus.NOT_SERVING);
        } else {
          abort.abort();
        }
      }
    } catch (error) {
      // Cancelling our own call surfaces as Canceled; anything else is a failure.
      expect(error).toMatchObject({ code: Code.Canceled });
    }
    expect(seen).toEqual([
      ServingStatus.SERVICE_UNKNOWN,
      ServingStatus.SERVING,
      ServingStatus.NOT_SERVING,
    ]);
    expect((await health.check({ service: "berth.v1.ServerService" })).status).toBe(
      ServingStatus.NOT_SERVING,
    );
  });
});
