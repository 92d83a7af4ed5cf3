import { describe, expect, it } from "vitest";
import { exitCauseOf, KILL_EXPLAINS_DIE_MS, signalNumber, type KillSeen } from "./exit-cause.js";

const NOW = 1_700_000_000_000;
const kill = (signal: number | undefined, agoMs = 100): KillSeen => ({ at: NOW - agoMs, signal });

describe("exitCauseOf", () => {
  it.each([
    ["no kill at all", [], 1, "crash"],
    ["docker stop (TERM), clean exit", [kill(15)], 0, "stopped_externally"],
    ["docker stop escalated to KILL", [kill(15, 10_000), kill(9)], 137, "stopped_externally"],
    ["docker kill (KILL)", [kill(9)], 137, "stopped_externally"],
    ["Ctrl-C style INT", [kill(2)], 130, "stopped_externally"],
    ["an unknown signal counts as a stop", [kill(undefined)], 1, "stopped_externally"],
    ["HUP to reload, then a crash with code 1", [kill(1)], 1, "crash"],
    ["USR1, then a crash with code 2", [kill(10)], 2, "crash"],
    ["HUP that the process did not handle: it died of it (128+1)", [kill(1)], 129, "stopped_externally"],
    ["a stop request too long ago", [kill(15, KILL_EXPLAINS_DIE_MS)], 143, "crash"],
  ] as [string, KillSeen[], number, string][])("%s → %s", (_name, kills, exitCode, want) => {
    expect(exitCauseOf(kills, exitCode, NOW)).toBe(want);
  });

  it("reads Docker's signal attribute as a number or a name", () => {
    expect(signalNumber("15")).toBe(15);
    expect(signalNumber("SIGHUP")).toBe(1);
    expect(signalNumber("kill")).toBe(9);
    expect(signalNumber("")).toBeUndefined();
    expect(signalNumber("SIGWHAT")).toBeUndefined();
  });
});
