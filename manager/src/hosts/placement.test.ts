import { afterEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { PortMappingSchema, Protocol, ServerSpecSchema, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { NotFoundError, PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";
import { expectTyped, newServer, rejection, testStore } from "../../testing/store.js";
import { pickTransferHost, placeServer, requireSchedulable } from "./placement.js";

const tcp = (hostPort: number): PortMapping => create(PortMappingSchema, { hostPort, containerPort: hostPort, protocol: Protocol.TCP });
const spec = (o: { hostId?: string; ports?: PortMapping[] } = {}) => create(ServerSpecSchema, { name: "new", image: "busybox", ...o });

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

/**
 * Hosts host_a (no servers), host_b (one, publishing 25565) and host_c (two), named box-a, box-b, box-c,
 * all connected; host_off (no servers) offline. `cordoned` are cordoned.
 */
async function setup(cordoned: string[] = []) {
  const store = await testStore();
  cleanup.push(() => store.close());
  const connected = ["host_a", "host_b", "host_c"];
  const presence = { isConnected: (id: string) => connected.includes(id), connectedHostIds: () => [...connected] };
  await store.commit([
    ...["host_a", "host_b", "host_c", "host_off"].map((id, i) => ({ op: "host.insert" as const, id, name: id.replace("host_", "box-"), secretHash: "", createdAt: i + 1 })),
    { op: "server.insert", server: newServer({ id: "srv_b1", hostId: "host_b", spec: { ports: [tcp(25565)] } }) },
    { op: "server.insert", server: newServer({ id: "srv_c1", hostId: "host_c" }) },
    { op: "server.insert", server: newServer({ id: "srv_c2", hostId: "host_c" }) },
    ...cordoned.map((id) => ({ op: "host.schedule" as const, id, schedule: { unschedulable: true } })),
  ]);
  return { store, presence, connected };
}

const server = async (store: Store, id: string) => (await store.getServer(id))!;

describe("placeServer (CreateServer)", () => {
  it("picks the connected host with the fewest servers and the ports free, skipping cordoned hosts", async () => {
    const open = await setup();
    expect(await placeServer(open.store, open.presence, spec(), "default")).toBe("host_a");
    const cordoned = await setup(["host_a"]);
    expect(await placeServer(cordoned.store, cordoned.presence, spec(), "default")).toBe("host_b");
    // host_b publishes 25565 already.
    expect(await placeServer(cordoned.store, cordoned.presence, spec({ ports: [tcp(25565)] }), "default")).toBe("host_c");
  });

  it("refuses an explicit cordoned host with what to do; an unknown one is NotFound", async () => {
    const { store, presence } = await setup(["host_a"]);
    const err = await rejection(placeServer(store, presence, spec({ hostId: "host_a" }), "default"));
    expectTyped(err, PreconditionError, Code.FailedPrecondition);
    expect((err as Error).message).toBe("host box-a is cordoned (HostService.CordonHost/DrainHost): no new servers are placed on it; UncordonHost it or choose another host");
    expect(await placeServer(store, presence, spec({ hostId: "host_c" }), "default")).toBe("host_c");
    expectTyped(await rejection(placeServer(store, presence, spec({ hostId: "host_nope" }), "default")), NotFoundError, Code.NotFound);
  });

  it("every connected host cordoned, or none with the ports free: FailedPrecondition saying which", async () => {
    const all = await setup(["host_a", "host_b", "host_c"]);
    expect((await rejection(placeServer(all.store, all.presence, spec(), "default")) as Error).message).toMatch(/every connected host is cordoned \(3\); UncordonHost one/);
    const some = await setup(["host_a", "host_c"]);
    expect((await rejection(placeServer(some.store, some.presence, spec({ ports: [tcp(25565)] }), "default")) as Error).message).toMatch(/port conflict on host box-b:/);
  });
});

describe("pickTransferHost", () => {
  it("another connected, schedulable host with the server's ports free, the least loaded; undefined when none", async () => {
    const { store, presence, connected } = await setup(["host_a"]);
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_move", hostId: "host_c", spec: { ports: [tcp(25565)] } }) }]);
    const s = await server(store, "srv_move");
    // host_a is cordoned, host_b has 25565 taken, host_c is its own: nowhere.
    expect(await pickTransferHost(store, presence, s, "host_c")).toBeUndefined();
    await store.commit([{ op: "host.schedule", id: "host_a", schedule: { unschedulable: false } }]);
    expect(await pickTransferHost(store, presence, s, "host_c")).toBe("host_a");
    // Without ports, the least-loaded: host_a (0) before host_b (1); an offline host never.
    const free = await server(store, "srv_c1");
    expect(await pickTransferHost(store, presence, free, "host_c")).toBe("host_a");
    connected.splice(connected.indexOf("host_a"), 1);
    expect(await pickTransferHost(store, presence, free, "host_c")).toBe("host_b");
    // The excluded host is never chosen, nor the server's own.
    expect(await pickTransferHost(store, presence, free, "host_b")).toBeUndefined();
    // Servers on their way to a host count there: load, and ports.
    connected.push("host_a");
    expect(await pickTransferHost(store, presence, free, "host_c", [{ hostId: "host_a", server: await server(store, "srv_c2") }, { hostId: "host_a", server: await server(store, "srv_b1") }])).toBe("host_b");
    expect(await pickTransferHost(store, presence, s, "host_c", [{ hostId: "host_a", server: await server(store, "srv_b1") }])).toBeUndefined();
  });
});

describe("requireSchedulable", () => {
  it("passes a schedulable host, refuses a cordoned one with FailedPrecondition", async () => {
    const { store } = await setup(["host_a"]);
    const b = (await store.getHost("host_b"))!;
    expect(() => requireSchedulable(b)).not.toThrow();
    const a = (await store.getHost("host_a"))!;
    expect(() => requireSchedulable(a)).toThrow(PreconditionError);
    expect(() => requireSchedulable({ ...a, schedule: { unschedulable: false } })).not.toThrow();
  });
});
