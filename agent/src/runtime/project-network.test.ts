import { create } from "@bufbuild/protobuf";
import { NetworkInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { describe, expect, it } from "vitest";
import type { CreateContainerSpec } from "./container-runtime.js";
import { containerConfig } from "./docker-runtime.js";
import { foreignNetworkRefusal, isProjectNetwork, networkFieldsRefusal } from "./project-network.js";

const OK = { network: "berth-alpha-0123abcd", project: "alpha", aliases: ["web", "srv_abcd2345"], managerId: "mgr_a" };

describe("networkFieldsRefusal: what a command may name as a container's network", () => {
  it.each([
    ["a berth project network", OK, undefined],
    ["the host's network", { ...OK, network: "host" }, /not a berth project network/],
    ["Docker's default bridge", { ...OK, network: "bridge" }, /not a berth project network/],
    ["no network at all", { ...OK, network: "none" }, /not a berth project network/],
    ["an operator's own network", { ...OK, network: "db-internal" }, /not a berth project network/],
    ["a container's namespace", { ...OK, network: "container:abc" }, /not a berth project network/],
    ["no project", { ...OK, project: "" }, /without its project/],
    ["an alias that is not a DNS label", { ...OK, aliases: ["a b"] }, /not a DNS label/],
  ])("%s", (_what, f, want) => {
    const got = networkFieldsRefusal(f);
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toMatch(want);
  });
});

describe("foreignNetworkRefusal: an existing network of that name", () => {
  const net = (labels: Record<string, string>) => create(NetworkInfoSchema, { name: "berth-alpha-0123abcd", labels });
  it.each([
    ["the project's own", { "berth.manager": "mgr_a", "berth.project": "alpha" }, undefined],
    ["made outside berth", {}, /not made by berth/],
    ["another project's", { "berth.manager": "mgr_a", "berth.project": "beta" }, /project "beta"/],
    ["another manager's", { "berth.manager": "mgr_b", "berth.project": "alpha" }, /manager mgr_b/],
  ])("%s", (_what, labels, want) => {
    const got = foreignNetworkRefusal(net(labels), "mgr_a", "alpha");
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toMatch(want);
  });

  it("only berth's own project networks count as removable", () => {
    expect(isProjectNetwork(net({ "berth.manager": "mgr_a", "berth.project": "alpha" }), "mgr_a")).toBe(true);
    expect(isProjectNetwork(net({ "berth.manager": "mgr_b", "berth.project": "alpha" }), "mgr_a")).toBe(false);
    expect(isProjectNetwork(create(NetworkInfoSchema, { name: "bridge", labels: { "berth.manager": "mgr_a", "berth.project": "alpha" } }), "mgr_a")).toBe(false);
  });
});

describe("containerConfig with a project network", () => {
  const spec: CreateContainerSpec = {
    name: "berth-web-abcd2345",
    image: "app:1",
    command: [],
    env: {},
    labels: {},
    ports: [],
    dataDir: "/var/lib/berth/srv_abcd2345",
    mountPath: "/data",
    network: { name: "berth-alpha-0123abcd", aliases: ["web", "srv_abcd2345"] },
  };

  it("joins that network alone, reachable by the server's name and id", () => {
    const c = containerConfig(spec);
    expect(c.HostConfig?.NetworkMode).toBe("berth-alpha-0123abcd");
    expect(c.NetworkingConfig).toEqual({ EndpointsConfig: { "berth-alpha-0123abcd": { Aliases: ["web", "srv_abcd2345"] } } });
  });

  it("refuses any other network mode", () => {
    for (const name of ["host", "none", "bridge", "container:x"]) {
      expect(() => containerConfig({ ...spec, network: { name, aliases: [] } })).toThrow(/not a berth project network/);
    }
  });
});
