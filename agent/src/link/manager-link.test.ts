import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AgentMessageSchema, ManagerMessageSchema, type AgentMessage, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { Backoff } from "./backoff.js";
import { ManagerLink } from "./manager-link.js";

/**
 * A manager that welcomes every agent, then refuses the stream at once (as
 * one did with every inventory over its message cap). Counts the dials.
 */
async function refusingManager(): Promise<{ port: number; dials: number[]; server: grpc.Server }> {
  const server = new grpc.Server();
  const dials: number[] = [];
  server.addService(
    {
      connect: {
        path: "/berth.v1.AgentService/Connect",
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: AgentMessage) => Buffer.from(toBinary(AgentMessageSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(AgentMessageSchema, b),
        responseSerialize: (m: ManagerMessage) => Buffer.from(toBinary(ManagerMessageSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(ManagerMessageSchema, b),
      },
    },
    {
      connect: (call: grpc.ServerDuplexStream<AgentMessage, ManagerMessage>) => {
        dials.push(Date.now());
        call.write(create(ManagerMessageSchema, { body: { case: "welcome", value: { managerId: "mgr_x", hostId: "host_x" } } }));
        setTimeout(() => call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details: "message too large" }), 20);
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, dials, server };
}

describe("ManagerLink reconnects", () => {
  let link: ManagerLink | undefined;
  let server: grpc.Server | undefined;
  afterEach(() => {
    link?.stop();
    server?.forceShutdown();
  });

  it("a welcome followed by failure does not reset the backoff: the delays keep growing", async () => {
    const m = await refusingManager();
    server = m.server;
    // No jitter: the delays are the ceilings 100, 200, 400, 800 ms.
    const base = 100;
    link = new ManagerLink(
      `http://127.0.0.1:${m.port}`,
      { hostId: "host_x", secret: "s" },
      { onOpen: () => {}, onMessage: () => {}, onClose: () => {}, onRevoked: () => {} },
      pino({ level: "silent" }),
      { backoff: new Backoff(base, 30_000, () => 1) },
    );
    link.start();
    // It keeps redialling: a fourth dial comes (after 100 + 200 + 400 ms of delays when they grow).
    await vi.waitFor(() => expect(m.dials.length).toBeGreaterThanOrEqual(4), { timeout: 10_000, interval: 20 });
    const dials = m.dials.slice(0, 4);
    // Reset on every welcome, it redialled every ~100 ms (6 or more dials in the first 700 ms); growing, 3.
    expect(dials.filter((t) => t - dials[0]! < 7 * base).length, `dials at ${dials.map((t) => t - dials[0]!).join(", ")} ms`).toBeLessThanOrEqual(3);
    // The delays grew past the first ones (100, 200, 400 ms ...); reset, every one was 100 ms.
    const gaps = dials.slice(1).map((t, i) => t - dials[i]!);
    expect(Math.max(...gaps), `gaps ${gaps.join(", ")} ms`).toBeGreaterThanOrEqual(2 * base);
  }, 15_000);
});
