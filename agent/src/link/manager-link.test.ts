import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AgentMessageSchema, ManagerMessageSchema, type AgentMessage, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { Backoff } from "./backoff.js";
import { ManagerLink, type LinkHandlers } from "./manager-link.js";

/**
 * A manager that welcomes every agent, then refuses the stream at once (as
 * one did with every inventory over its message cap). Counts the dials.
 */
async function refusingManager(): Promise<{ port: number; dials: number[]; server: grpc.Server }> {
  return fakeManager((call) => {
    call.write(create(ManagerMessageSchema, { body: { case: "welcome", value: { managerId: "mgr_x", hostId: "host_x" } } }));
    setTimeout(() => call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details: "message too large" }), 20);
  });
}

/** A gRPC server on a free loopback port whose Connect does `onConnect`; counts the dials. */
async function fakeManager(onConnect: (call: grpc.ServerDuplexStream<AgentMessage, ManagerMessage>) => void): Promise<{ port: number; dials: number[]; server: grpc.Server }> {
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
        onConnect(call);
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

  it("reconnectMaxMs caps the default backoff (--reconnect-max): the delays stop growing at the cap", async () => {
    const m = await refusingManager();
    server = m.server;
    link = new ManagerLink(
      `http://127.0.0.1:${m.port}`,
      { hostId: "host_x", secret: "s" },
      { onOpen: () => {}, onMessage: () => {}, onClose: () => {}, onRevoked: () => {} },
      pino({ level: "silent" }),
      { reconnectMaxMs: 100 },
    );
    link.start();
    // Uncapped (0.5 s doubling to 30 s, jittered), 10 dials take about a minute on average; capped at 100 ms, about a second.
    await vi.waitFor(() => expect(m.dials.length).toBeGreaterThanOrEqual(10), { timeout: 8_000, interval: 20 });
    expect(() => new ManagerLink("http://127.0.0.1:1", { hostId: "h", secret: "s" }, { onOpen: () => {}, onMessage: () => {}, onClose: () => {}, onRevoked: () => {} }, pino({ level: "silent" }), { reconnectMaxMs: 0 })).toThrow(RangeError);
  }, 15_000);
});

const welcoming = (managerId: string) => (call: grpc.ServerDuplexStream<AgentMessage, ManagerMessage>) => {
  call.write(create(ManagerMessageSchema, { body: { case: "welcome", value: { managerId, hostId: "host_x" } } }));
};

/** A loopback port nothing listens on (bound, then released): connections to it are refused. */
async function deadPort(): Promise<number> {
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  server.forceShutdown();
  return port;
}

describe("ManagerLink with several managers", () => {
  const links: ManagerLink[] = [];
  const servers: grpc.Server[] = [];
  afterEach(() => {
    for (const l of links.splice(0)) l.stop();
    for (const s of servers.splice(0)) s.forceShutdown();
  });

  /** A link over `urls` whose backoff would wait a minute: any backoff before a failover shows as a timeout. */
  function linkTo(urls: string[], opts: { welcomeTimeoutMs?: number } = {}) {
    const welcomes: string[] = [];
    const revoked: string[] = [];
    const handlers: LinkHandlers = {
      onOpen: () => {},
      onMessage: (m) => m.body.case === "welcome" && welcomes.push(m.body.value.managerId),
      onClose: () => {},
      onRevoked: (reason) => revoked.push(reason),
    };
    const link = new ManagerLink(urls, { hostId: "host_x", secret: "s" }, handlers, pino({ level: "silent" }), {
      backoff: new Backoff(60_000, 60_000, () => 1),
      ...opts,
    });
    links.push(link);
    link.start();
    return { link, welcomes, revoked };
  }

  it("a dead first manager: the second is dialled at once, without waiting the backoff", async () => {
    const b = await fakeManager(welcoming("mgr_b"));
    servers.push(b.server);
    const t0 = Date.now();
    const { link, welcomes } = linkTo([`http://127.0.0.1:${await deadPort()}`, `http://127.0.0.1:${b.port}`]);
    await vi.waitFor(() => expect(welcomes).toEqual(["mgr_b"]), { timeout: 5_000, interval: 20 });
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(link.managerUrl).toBe(`http://127.0.0.1:${b.port}`);
  });

  it("its manager's stream ends: the next manager takes over at once", async () => {
    const a = await fakeManager(welcoming("mgr_a"));
    const b = await fakeManager(welcoming("mgr_b"));
    servers.push(a.server, b.server);
    const { link, welcomes } = linkTo([`http://127.0.0.1:${a.port}`, `http://127.0.0.1:${b.port}`]);
    await vi.waitFor(() => expect(welcomes).toEqual(["mgr_a"]), { timeout: 5_000, interval: 20 });
    a.server.forceShutdown();
    await vi.waitFor(() => expect(welcomes).toEqual(["mgr_a", "mgr_b"]), { timeout: 5_000, interval: 20 });
    expect(link.managerUrl).toBe(`http://127.0.0.1:${b.port}`);
  });

  it("a manager that accepts the stream but never welcomes: the next one after the welcome timeout", async () => {
    const silent = await fakeManager(() => {});
    const b = await fakeManager(welcoming("mgr_b"));
    servers.push(silent.server, b.server);
    const t0 = Date.now();
    const { welcomes } = linkTo([`http://127.0.0.1:${silent.port}`, `http://127.0.0.1:${b.port}`], { welcomeTimeoutMs: 300 });
    await vi.waitFor(() => expect(welcomes).toEqual(["mgr_b"]), { timeout: 5_000, interval: 20 });
    expect(silent.dials.length).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it("a manager refusing the credential (Unauthenticated) stops the link: it never hops to the next manager", async () => {
    const refusing = await fakeManager((call) => call.emit("error", { code: grpc.status.UNAUTHENTICATED, details: "this host was removed from berth" }));
    const b = await fakeManager(welcoming("mgr_b"));
    servers.push(refusing.server, b.server);
    const { link, revoked } = linkTo([`http://127.0.0.1:${refusing.port}`, `http://127.0.0.1:${b.port}`]);
    await vi.waitFor(() => expect(revoked).toEqual(["this host was removed from berth"]), { timeout: 5_000, interval: 20 });
    // Give a hop every chance to happen: it would be immediate.
    await new Promise((r) => setTimeout(r, 300));
    expect(b.dials).toEqual([]);
    expect(link.connected).toBe(false);
  });
});
