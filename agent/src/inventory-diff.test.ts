import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ContainerInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { describe, expect, it } from "vitest";
import { diffContainers } from "./inventory-diff.js";

function c(id: string, state: string, extra: { hash?: string; exit?: number; startedMs?: number; env?: Record<string, string> } = {}) {
  return create(ContainerInfoSchema, {
    id,
    name: `n-${id}`,
    state,
    exitCode: extra.exit ?? 0,
    labels: { "berth.server": `srv_${id}`, "berth.spec-hash": extra.hash ?? "h1" },
    env: extra.env ?? {},
    ...(extra.startedMs ? { startedTime: timestampFromMs(extra.startedMs) } : {}),
  });
}

describe("diffContainers", () => {
  it("is empty when the events kept the picture right", () => {
    expect(diffContainers([c("a", "running"), c("b", "exited")], [c("b", "exited"), c("a", "running")])).toEqual([]);
  });

  it("names a missed stop with the fields that changed", () => {
    expect(diffContainers([c("a", "running")], [c("a", "exited", { exit: 137 })])).toEqual([
      { id: "a", server: "srv_a", what: "changed", details: ["state running→exited", "exit 0→137"] },
    ]);
  });

  it("sees a restart that ended in the same state (a new start time)", () => {
    const d = diffContainers([c("a", "running", { startedMs: 1_000_000 })], [c("a", "running", { startedMs: 2_000_000 })]);
    expect(d).toEqual([{ id: "a", server: "srv_a", what: "changed", details: ["started 1000→2000"] }]);
  });

  it("reports containers created or removed behind the event stream's back", () => {
    expect(diffContainers([c("gone", "exited")], [c("new", "created")])).toEqual([
      { id: "gone", server: "srv_gone", what: "vanished", details: [] },
      { id: "new", server: "srv_new", what: "appeared", details: ["state created"] },
    ]);
  });

  it("ignores fields berth does not act on", () => {
    expect(diffContainers([c("a", "running", { env: { A: "1" } })], [c("a", "running", { env: { A: "2" } })])).toEqual([]);
  });

  it("sees a different spec hash", () => {
    expect(diffContainers([c("a", "running", { hash: "h1" })], [c("a", "running", { hash: "h2" })])[0]?.details).toEqual(["spec-hash h1→h2"]);
  });
});
