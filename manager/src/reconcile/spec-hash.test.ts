import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol, ServerSpecSchema, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { describe, expect, it } from "vitest";
import { specHash } from "./spec-hash.js";

const base = (over: Partial<Exclude<MessageInitShape<typeof ServerSpecSchema>, ServerSpec>> = {}) =>
  create(ServerSpecSchema, {
    name: "mc",
    image: "busybox:1",
    command: ["sh", "-c", "x"],
    env: { B: "2", A: "1" },
    ports: [create(PortMappingSchema, { hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP })],
    dataMountPath: "/data",
    ...over,
  });

describe("specHash", () => {
  it("is unchanged for a spec without the later fields, so upgrading recreates no container", () => {
    // The hash this spec had before cap_add and the log limits existed.
    expect(specHash(base())).toBe("add46dd0242d4ed4");
  });

  it.each([
    ["a capability given back", { capAdd: ["NET_RAW"] }],
    ["a log size", { logMaxSizeBytes: 1 << 20 }],
    ["a log file count", { logMaxFiles: 5 }],
    ["a ready pattern (the container's berth.ready-pattern label)", { readyPattern: "Done" }],
    ["a stop signal (Docker's StopSignal)", { stopSignal: "SIGINT" }],
  ])("changes with %s (they shape the container)", (_name, over) => {
    expect(specHash(base(over))).not.toBe(specHash(base()));
  });

  it("ignores labels (berth's, not the container's): changing them asks for no new container", () => {
    expect(specHash(base({ labels: { tier: "prod", "example.com/game": "mc" } }))).toBe(specHash(base()));
  });

  it("ignores the order capabilities are listed in", () => {
    expect(specHash(base({ capAdd: ["SYS_CHROOT", "NET_RAW"] }))).toBe(specHash(base({ capAdd: ["NET_RAW", "SYS_CHROOT"] })));
  });
});
