import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { afterHealthy, afterStreamEnd, isUnreachable, type FailoverDecision, type RotationState } from "./failover.js";

const at = (index: number, failedInRound = 0): RotationState => ({ index, failedInRound });
const dial = (index: number, failedInRound: number, backoff: boolean): FailoverDecision => ({ kind: "dial", state: at(index, failedInRound), backoff });

describe("afterStreamEnd: the next manager to dial", () => {
  it.each<[string, RotationState, number, number | undefined, FailoverDecision]>([
    // One URL: every failure waits the backoff, exactly as before several URLs existed.
    ["one URL, unreachable: backoff, same URL", at(0), 1, status.UNAVAILABLE, dial(0, 0, true)],
    ["one URL, stream ended cleanly: backoff", at(0), 1, undefined, dial(0, 0, true)],
    // Several: the next URL at once until each failed in a row, then one backoff for the round.
    ["first of two dead: the second at once", at(0), 2, status.UNAVAILABLE, dial(1, 1, false)],
    ["both failed in a row: backoff, back to the first", at(1, 1), 2, status.UNAVAILABLE, dial(0, 0, true)],
    ["healthy stream on the second ends: the first at once", at(1), 2, undefined, dial(0, 1, false)],
    ["welcome timeout (cancelled): the next at once", at(0), 3, status.CANCELLED, dial(1, 1, false)],
    ["second failure of three: the third at once", at(1, 1), 3, status.UNAVAILABLE, dial(2, 2, false)],
    ["third failure of three: backoff, wrap to the first", at(2, 2), 3, status.DEADLINE_EXCEEDED, dial(0, 0, true)],
    ["round began mid-list: wraps, backoff after the last of the round", at(0, 2), 3, status.UNAVAILABLE, dial(1, 0, true)],
    ["a refusal of another kind is a failure like any", at(0), 2, status.RESOURCE_EXHAUSTED, dial(1, 1, false)],
    // Revoked: stop on any manager, never hop to another.
    ["Unauthenticated stops", at(0), 2, status.UNAUTHENTICATED, { kind: "stop" }],
    ["PermissionDenied (a proxy's 403) is a failure like any: the next at once", at(1, 1), 3, status.PERMISSION_DENIED, dial(2, 2, false)],
    ["Unauthenticated with one URL stops", at(0), 1, status.UNAUTHENTICATED, { kind: "stop" }],
  ])("%s", (_name, state, urls, code, expected) => {
    expect(afterStreamEnd(state, urls, code)).toEqual(expected);
  });

  it("one backoff per round: three dead managers, nine failures, three delays", () => {
    let state = at(0);
    const waits: boolean[] = [];
    for (let i = 0; i < 9; i++) {
      const d = afterStreamEnd(state, 3, status.UNAVAILABLE);
      if (d.kind !== "dial") throw new Error("stopped");
      waits.push(d.backoff);
      state = d.state;
    }
    expect(waits).toEqual([false, false, true, false, false, true, false, false, true]);
  });

  it("a healthy stream starts a new round from where it is", () => {
    expect(afterHealthy(at(1, 1))).toEqual(at(1, 0));
  });
});

describe("isUnreachable: enroll tries the next manager", () => {
  it.each([
    [status.UNAVAILABLE, true],
    [status.DEADLINE_EXCEEDED, true],
    [status.UNAUTHENTICATED, false],
    [status.INVALID_ARGUMENT, false],
    [undefined, false],
  ])("code %s → %s", (code, expected) => {
    expect(isUnreachable(code)).toBe(expected);
  });
});
