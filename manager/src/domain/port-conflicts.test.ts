import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { describeConflicts, findPortConflicts, MAX_CONFLICTS_LISTED, repickPorts, suggestFreePorts, type PortOwner } from "./port-conflicts.js";

const tcp = (hostPort: number): PortMapping => create(PortMappingSchema, { hostPort, containerPort: hostPort, protocol: Protocol.TCP });
const udp = (hostPort: number): PortMapping => create(PortMappingSchema, { hostPort, containerPort: hostPort, protocol: Protocol.UDP });
/** Protocol left unspecified: means tcp. */
const dflt = (hostPort: number): PortMapping => create(PortMappingSchema, { hostPort, containerPort: hostPort });

describe("findPortConflicts", () => {
  it.each([
    ["tcp vs udp on the same port is not a conflict", [tcp(25565)], [{ name: "a", project: "p", ports: [udp(25565)] }], []],
    ["udp vs tcp on the same port is not a conflict", [udp(25565)], [{ name: "a", project: "p", ports: [tcp(25565)] }], []],
    ["tcp vs tcp conflicts", [tcp(25565)], [{ name: "mc-1", project: "p", ports: [tcp(25565)] }], [{ port: 25565, protocol: "tcp", usedBy: "mc-1", project: "p" }]],
    ["udp vs udp conflicts", [udp(19132)], [{ name: "bedrock", project: "p", ports: [udp(19132)] }], [{ port: 19132, protocol: "udp", usedBy: "bedrock", project: "p" }]],
    ["unspecified protocol counts as tcp (wanted)", [dflt(80)], [{ name: "web", project: "p", ports: [tcp(80)] }], [{ port: 80, protocol: "tcp", usedBy: "web", project: "p" }]],
    ["unspecified protocol counts as tcp (other)", [tcp(80)], [{ name: "web", project: "p", ports: [dflt(80)] }], [{ port: 80, protocol: "tcp", usedBy: "web", project: "p" }]],
    ["unspecified is not udp", [dflt(53)], [{ name: "dns", project: "p", ports: [udp(53)] }], []],
    ["different ports do not conflict", [tcp(8080)], [{ name: "web", project: "p", ports: [tcp(8081), tcp(80)] }], []],
    ["no other servers", [tcp(8080), udp(8080)], [], []],
    [
      "every conflict is reported, in the wanted order, with its owner",
      [udp(19132), tcp(8080), tcp(25565), tcp(9999)],
      [
        { name: "mc-1", project: "p", ports: [tcp(25565), udp(19132)] },
        { name: "web", project: "p", ports: [tcp(8080)] },
      ],
      [
        { port: 19132, protocol: "udp", usedBy: "mc-1", project: "p" },
        { port: 8080, protocol: "tcp", usedBy: "web", project: "p" },
        { port: 25565, protocol: "tcp", usedBy: "mc-1", project: "p" },
      ],
    ],
  ] as [string, PortMapping[], PortOwner[], unknown[]][])("%s", (_label, wanted, others, want) => {
    expect(findPortConflicts(wanted, others)).toEqual(want);
  });
});

describe("suggestFreePorts", () => {
  it("suggests the next free port on the same protocol", () => {
    const others = [{ name: "mc-1", project: "p", ports: [tcp(25565)] }];
    const wanted = [tcp(25565)];
    expect(suggestFreePorts(findPortConflicts(wanted, others), others, wanted)).toEqual([25566]);
  });

  it("skips ports taken by other servers and by the request itself", () => {
    const others = [
      { name: "mc-1", project: "p", ports: [tcp(25565), tcp(25566)] },
      { name: "mc-2", project: "p", ports: [tcp(25568)] },
    ];
    const wanted = [tcp(25565), tcp(25567)];
    const conflicts = findPortConflicts(wanted, others);
    expect(conflicts.map((c) => c.port)).toEqual([25565]);
    // 25566 (mc-1), 25567 (wanted), 25568 (mc-2) are taken.
    expect(suggestFreePorts(conflicts, others, wanted)).toEqual([25569]);
  });

  it("only ports on the same protocol count as taken", () => {
    const others = [{ name: "x", project: "p", ports: [tcp(7000), udp(7001)] }];
    const wanted = [tcp(7000)];
    expect(suggestFreePorts(findPortConflicts(wanted, others), others, wanted)).toEqual([7001]);
  });

  it("never suggests the same port twice", () => {
    const others = [{ name: "web", project: "p", ports: [tcp(8080), tcp(8081), tcp(8082)] }];
    const wanted = [tcp(8080), tcp(8081)];
    const suggestions = suggestFreePorts(findPortConflicts(wanted, others), others, wanted);
    expect(suggestions).toEqual([8083, 8084]);
  });

  it("answers 0 when nothing above the port is free", () => {
    const others = [{ name: "top", project: "p", ports: [tcp(65535)] }];
    const wanted = [tcp(65535)];
    expect(suggestFreePorts(findPortConflicts(wanted, others), others, wanted)).toEqual([0]);
  });
});

describe("describeConflicts", () => {
  it("lists every conflict with its suggestion", () => {
    const others = [
      { name: "mc-1", project: "p", ports: [tcp(25565)] },
      { name: "dns", project: "p", ports: [udp(53)] },
    ];
    const wanted = [tcp(25565), udp(53), tcp(53)];
    const conflicts = findPortConflicts(wanted, others);
    const msg = describeConflicts(conflicts, suggestFreePorts(conflicts, others, wanted), "p");
    expect(msg).toBe('host port 25565/tcp is used by server "mc-1" (try 25566); host port 53/udp is used by server "dns" (try 54)');
  });

  it("leaves out a missing suggestion", () => {
    expect(describeConflicts([{ port: 65535, protocol: "udp", usedBy: "x", project: "p" }], [0], "p")).toBe('host port 65535/udp is used by server "x"');
  });

  it("is empty without conflicts", () => {
    expect(describeConflicts([], [], "p")).toBe("");
  });

  it("does not name a server of another project to the caller, but does to an all-projects caller", () => {
    const others = [{ name: "beta-secret-name", project: "beta", ports: [tcp(8080)] }];
    const conflicts = findPortConflicts([tcp(8080)], others);
    expect(describeConflicts(conflicts, [8081], "alpha")).toBe("host port 8080/tcp is used by a server in another project (try 8081)");
    expect(describeConflicts(conflicts, [8081], null)).toBe('host port 8080/tcp is used by server "beta-secret-name" (try 8081)');
  });

  it("spells out the first few conflicts and counts the rest", () => {
    const ports = Array.from({ length: 100 }, (_, i) => tcp(9000 + i));
    const conflicts = findPortConflicts(ports, [{ name: "big", project: "p", ports }]);
    const msg = describeConflicts(conflicts, [], "p");
    expect(msg.match(/host port/g)).toHaveLength(MAX_CONFLICTS_LISTED);
    expect(msg).toMatch(/; and 95 more ports in use$/);
  });
});

describe("repickPorts", () => {
  it("moves only the clashing host ports, each to the nearest free one, and keeps the rest", () => {
    const others = [{ name: "a", project: "p", ports: [tcp(8080), tcp(8081)] }];
    expect(repickPorts([tcp(8080), tcp(9000)], others)?.map((p) => p.hostPort)).toEqual([8082, 9000]);
    expect(repickPorts([tcp(9000)], others)?.map((p) => p.hostPort)).toEqual([9000]);
  });
  it("answers undefined when a clashing port has no free one above it", () => {
    expect(repickPorts([tcp(65535)], [{ name: "a", project: "p", ports: [tcp(65535)] }])).toBeUndefined();
  });
});
