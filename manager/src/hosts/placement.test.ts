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

describe("placement by capacity (limits against what hosts offer)", () => {
  const GiB = 1024 ** 3;
  const limited = (o: { cpus?: number; memoryGiB?: number; hostId?: string } = {}) =>
    create(ServerSpecSchema, { name: "new", image: "busybox", ...(o.hostId ? { hostId: o.hostId } : {}), resources: { cpus: o.cpus ?? 0, memoryBytes: BigInt((o.memoryGiB ?? 0) * GiB) } });

  /** host_a: 4 CPUs, 8 GiB, nothing placed; host_b: 2 CPUs, 4 GiB, a server with 1 CPU / 3 GiB; host_c: size never reported. */
  async function sized() {
    const store = await testStore();
    cleanup.push(() => store.close());
    const connected = ["host_a", "host_b", "host_c"];
    const presence = { isConnected: (id: string) => connected.includes(id), connectedHostIds: () => [...connected] };
    await store.commit([
      ...["host_a", "host_b", "host_c"].map((id, i) => ({ op: "host.insert" as const, id, name: id.replace("host_", "box-"), secretHash: "", createdAt: i + 1 })),
      { op: "host.connected", id: "host_a", facts: { cpuCount: 4, memoryBytes: 8 * GiB }, at: 10 },
      { op: "host.connected", id: "host_b", facts: { cpuCount: 2, memoryBytes: 4 * GiB }, at: 10 },
      { op: "server.insert", server: newServer({ id: "srv_b1", hostId: "host_b", spec: { resources: { cpus: 1, memoryBytes: BigInt(3 * GiB) } } }) },
    ]);
    return { store, presence };
  }

  it("a named host without room is refused, naming what is short and the hosts with room", async () => {
    const { store, presence } = await sized();
    const err = await rejection(placeServer(store, presence, limited({ hostId: "host_b", memoryGiB: 2 }), "default"));
    expectTyped(err, PreconditionError, Code.FailedPrecondition);
    expect((err as Error).message).toBe("host box-b has no room for this server's limits (memory: 2 GiB asked, 1 GiB free of 4 GiB allocatable); hosts with room: box-a, box-c");
    expect(await placeServer(store, presence, limited({ hostId: "host_b", memoryGiB: 1, cpus: 1 }), "default")).toBe("host_b");
  });

  it("without a host: the one that would be least full among those with room (spread)", async () => {
    const { store, presence } = await sized();
    // box-c's size is unknown (counted as empty); box-a would be a quarter full, box-b 3/4 + more.
    expect(await placeServer(store, presence, limited({ cpus: 1, memoryGiB: 2 }), "default")).toBe("host_c");
    // No host with room at all: what is short on the least full one.
    await store.commit([{ op: "host.connected", id: "host_c", facts: { cpuCount: 1, memoryBytes: 1 * GiB }, at: 11 }]);
    expect(await placeServer(store, presence, limited({ cpus: 1, memoryGiB: 2 }), "default")).toBe("host_a");
    const err = await rejection(placeServer(store, presence, limited({ cpus: 8 }), "default"));
    expect((err as Error).message).toMatch(/^no connected host has room for this server's limits \(least full, host box-a: CPUs: 8 asked, the host has 4 \(Docker refuses a CPU limit above the host.s CPUs\)\); lower the limits/);
  });

  it("overcommit and reserve change what a host offers; cordon and drain keep the settings", async () => {
    const { store, presence } = await sized();
    const ask = limited({ hostId: "host_b", memoryGiB: 2 });
    await store.commit([{ op: "host.schedule", id: "host_b", schedule: { unschedulable: false, capacity: { cpuOvercommit: 1, memoryOvercommit: 2, reservedCpus: 0, reservedMemoryBytes: 1 * GiB } } }]);
    // 4 GiB x 2 - 1 GiB = 7 GiB offered, 3 GiB taken.
    expect(await placeServer(store, presence, ask, "default")).toBe("host_b");
    const { keepCapacity } = await import("./capacity.js");
    const host = (await store.getHost("host_b"))!;
    expect(keepCapacity({ unschedulable: true }, host.schedule).capacity?.memoryOvercommit).toBe(2);
  });

  it("servers without limits take nothing and always fit", async () => {
    const { store, presence } = await sized();
    expect(await placeServer(store, presence, spec({ hostId: "host_b" }), "default")).toBe("host_b");
  });
});
