import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema } from "@berth/proto/berth/v1/event_pb.js";
import { isRoutine } from "./routine.js";

const ev = (type: string, payload: object = {}) => create(EventSchema, { type, payloadJson: JSON.stringify(payload) });

describe("routine events", () => {
  it("hides bookkeeping, never a failure or a real phase change", () => {
    expect(isRoutine(ev("command.issued"))).toBe(true);
    expect(isRoutine(ev("command.succeeded"))).toBe(true);
    expect(isRoutine(ev("image.pull_progress"))).toBe(true);
    expect(isRoutine(ev("phase.changed", { from: "STARTING", to: "STARTING" }))).toBe(true);
    expect(isRoutine(ev("phase.changed", { from: "STARTING", to: "RUNNING" }))).toBe(false);
    expect(isRoutine(ev("command.failed"))).toBe(false);
    expect(isRoutine(ev("command.expired"))).toBe(false);
    expect(isRoutine(ev("drift.adopted"))).toBe(false);
    expect(isRoutine(create(EventSchema, { type: "phase.changed", payloadJson: "not json" }))).toBe(false);
  });
});
