import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentMessageSchema, ContainerInfoSchema, DataDirSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { INVENTORY_PART_BYTES, reportable, splitInventory } from "./report-size.js";

/** The manager refuses any message over this (manager.ts READ_MAX_BYTES). */
const MANAGER_CAP = 4 * 1024 * 1024;

const container = (i: number, extra: { env?: Record<string, string>; labels?: Record<string, string> } = {}) =>
  create(ContainerInfoSchema, {
    id: i.toString(16).padStart(64, "0"),
    name: `srv-${i}`,
    state: "running",
    labels: { "berth.server": `srv_aaaa${i}`, "berth.spec-hash": "h", ...extra.labels },
    env: extra.env ?? {},
    command: ["sh", "-c", "sleep 1"],
  });

const encoded = (value: ReturnType<typeof splitInventory>[number]) => toBinary(AgentMessageSchema, create(AgentMessageSchema, { body: { case: "inventory", value } })).length;

describe("inventories of any size reach the manager", () => {
  it("six servers with 0.9 MB of env each: the env is not reported, one small part (it was one 5.4 MB message the manager refused)", () => {
    const big = { env: { BLOB: "x".repeat(900_000) } };
    const containers = Array.from({ length: 6 }, (_, i) => reportable(container(i, big)));
    const parts = splitInventory({ containers, dataDirs: [], otherDataDirs: [], unmanaged: [], unmanagedOmitted: 0, dockerReachable: true }, "inv-1");
    expect(parts).toHaveLength(1);
    expect(parts[0]!.more).toBe(false);
    expect(encoded(parts[0]!)).toBeLessThan(10_000);
    expect(containers.every((c) => Object.keys(c.env).length === 0 && c.command.length === 0 && c.labels["berth.spec-hash"] === "h")).toBe(true);
  });

  it("a container with huge foreign labels keeps only berth's labels", () => {
    const c = reportable(container(1, { labels: { junk: "y".repeat(200_000) } }));
    expect(Object.keys(c.labels).sort()).toEqual(["berth.server", "berth.spec-hash"]);
  });

  it("5,000 containers with 2 KB of labels each: parts under the part size, every item once, in order, only the last without `more`", () => {
    const containers = Array.from({ length: 5000 }, (_, i) => reportable(container(i, { labels: { note: "z".repeat(2000) } })));
    const dataDirs = Array.from({ length: 3000 }, (_, i) => create(DataDirSchema, { serverId: `srv_b${i}`, exists: true }));
    const otherDataDirs = Array.from({ length: 3000 }, (_, i) => `stray-${i}`);
    const parts = splitInventory({ containers, dataDirs, otherDataDirs, unmanaged: [], unmanagedOmitted: 3, dockerReachable: true }, "inv-7");
    expect(parts.length).toBeGreaterThan(5);
    for (const p of parts) {
      expect(encoded(p)).toBeLessThanOrEqual(INVENTORY_PART_BYTES + 1024);
      expect(encoded(p)).toBeLessThan(MANAGER_CAP);
      expect(p.partOf).toBe("inv-7");
      expect(p.unmanagedOmitted).toBe(3);
    }
    expect(parts.map((p) => p.more)).toEqual([...parts.slice(1).map(() => true), false]);
    expect(parts.flatMap((p) => p.containers ?? []).map((c) => (c as { id: string }).id)).toEqual(containers.map((c) => c.id));
    expect(parts.flatMap((p) => p.dataDirs ?? [])).toHaveLength(3000);
    expect(parts.flatMap((p) => p.otherDataDirs ?? [])).toEqual(otherDataDirs);
  });
});
