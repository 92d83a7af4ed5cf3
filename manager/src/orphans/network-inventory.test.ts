import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { NetworkInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { NetworkInventory } from "./network-inventory.js";

const net = (id: string, createdMs = 0) => create(NetworkInfoSchema, { id, name: `berth-${id}`, ...(createdMs ? { createdTime: timestampFromMs(createdMs) } : {}) });

describe("NetworkInventory", () => {
  it("keeps each host's last report, with its creation time in ms", () => {
    const inv = new NetworkInventory();
    inv.replace("host_a", [net("n1", 1_700_000_000_123), net("n2")]);
    expect(inv.list().map((n) => [n.hostId, n.id, n.createdMs])).toEqual([
      ["host_a", "n1", 1_700_000_000_123],
      ["host_a", "n2", 0],
    ]);
  });

  it("drop forgets a removed host's networks, and only its", () => {
    const inv = new NetworkInventory();
    inv.replace("host_a", [net("n1")]);
    inv.replace("host_b", [net("n2")]);
    inv.drop("host_a");
    expect(inv.list().map((n) => n.id)).toEqual(["n2"]);
  });
});
