import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { NetworkInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { PreconditionError } from "../errors.js";
import { planDestroy, refuseAdoption } from "./actions.js";
import { classifyOrphans, type OrphanInput } from "./classify.js";
import { MAX_NETWORKS_PER_HOST, NetworkInventory, type ObservedNetwork } from "./network-inventory.js";

const NOW = 1_700_000_000_000;
const ME = "mgr_me";

function net(o: Partial<ObservedNetwork> & { project?: string; manager?: string }): ObservedNetwork {
  return {
    hostId: o.hostId ?? "host_a",
    id: o.id ?? "n1",
    name: o.name ?? "berth-p-01234567",
    labels: o.labels ?? { "berth.manager": o.manager ?? ME, "berth.project": o.project ?? "p" },
    createdMs: o.createdMs ?? NOW - 10 * 60_000,
    containers: o.containers ?? 0,
  };
}

function input(networks: ObservedNetwork[], o: Partial<OrphanInput> = {}): OrphanInput {
  return {
    managerId: ME,
    now: NOW,
    graceMs: 60_000,
    includeUnmanaged: false,
    hosts: [
      { id: "host_a", name: "a", removedAt: null, connected: true, dataRoot: "/r" },
      { id: "host_b", name: "b", removedAt: null, connected: false, dataRoot: "/r" },
    ],
    servers: [{ id: "srv_known", project: "p", name: "known", hostId: "host_a", image: "img:1", createdAt: NOW - 1e6 }],
    containers: [],
    dataRootEntries: [],
    busyServerIds: new Set(),
    busyContainerIds: new Set(),
    networks,
    ...o,
  };
}

const found = (i: OrphanInput) => classifyOrphans(i).filter((f) => f.kind === OrphanKind.NETWORK).map((f) => `${f.hostId} ${f.networkName} ${f.project}`);

describe("classifyOrphans: project networks", () => {
  it.each([
    ["a network of a project with a server on that host", [net({ project: "p" })], []],
    ["a network of a project without a server on that host", [net({ project: "q", name: "berth-q-1" })], ["host_a berth-q-1 q"]],
    ["the project's server is on another host", [net({ project: "p", hostId: "host_a" })], ["host_a berth-p-01234567 p"], [{ id: "srv_x", project: "p", name: "x", hostId: "host_c", image: "i", createdAt: 0 }]],
    ["younger than the grace period", [net({ project: "q", createdMs: NOW - 5_000 })], []],
    ["another manager's network", [net({ project: "q", manager: "mgr_other" })], []],
    ["a network without berth labels", [net({ labels: {} })], []],
    ["on a host that is offline (its report is not current)", [net({ project: "q", hostId: "host_b" })], []],
  ] as const)("%s", (_what, networks, want, servers?) => {
    expect(found(input([...networks], servers ? { servers: [...servers] } : {}))).toEqual(want);
  });

  it("a soft-deleted server still holds its project's network", () => {
    // Deleted servers stay in the records (and keep their container) until purged.
    expect(found(input([net({ project: "p" })]))).toEqual([]);
  });

  it("says what to do, and that attached containers must go first", () => {
    const [f] = classifyOrphans(input([net({ project: "q", containers: 2 })]));
    expect(f!.reason).toMatch(/no server on this host/);
    expect(f!.reason).toMatch(/2 container\(s\) still attached/);
    expect(f!.id).toMatch(/^orp_/);
  });
});

describe("network orphans: destroy and adopt", () => {
  const [f] = classifyOrphans(input([net({ project: "q", id: "nid", name: "berth-q-1" })]));

  it("DestroyOrphan removes the network and nothing else", () => {
    const p = planDestroy(f!, "a", { removeData: true, force: false });
    expect(p.actions).toEqual([{ what: "network", networkId: "nid" }]);
    expect(p.removed).toEqual(["network berth-q-1 of project q on host a"]);
  });

  it("AdoptOrphan refuses: a network has nothing to adopt", () => {
    expect(() => refuseAdoption(f!, false)).toThrow(PreconditionError);
  });
});

describe("NetworkInventory", () => {
  it("keeps at most MAX_NETWORKS_PER_HOST per host, replaced by each inventory", () => {
    const inv = new NetworkInventory();
    const many = Array.from({ length: MAX_NETWORKS_PER_HOST + 10 }, (_, i) => create(NetworkInfoSchema, { id: `n${i}`, name: `berth-p-${i}`, createdTime: timestampFromMs(NOW) }));
    inv.replace("host_a", many);
    expect(inv.list()).toHaveLength(MAX_NETWORKS_PER_HOST);
    inv.replace("host_a", many.slice(0, 1));
    expect(inv.list().map((n) => n.name)).toEqual(["berth-p-0"]);
    inv.forget("host_a", "n0");
    expect(inv.list()).toEqual([]);
  });

  it("drops entries a host made up (no id, oversized names)", () => {
    const inv = new NetworkInventory();
    inv.replace("host_a", [create(NetworkInfoSchema, { id: "", name: "x" }), create(NetworkInfoSchema, { id: "a", name: "y".repeat(300) })]);
    expect(inv.list()).toEqual([]);
  });
});
