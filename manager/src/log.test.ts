import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { formatRecord, prettyStream } from "./log.js";

describe("pretty logs", () => {
  it("turns a record into one readable line with its fields", () => {
    const at = new Date(2026, 0, 2, 3, 4, 5, 6).getTime();
    const line = formatRecord(
      { level: 30, time: at, pid: 1, name: "berth-manager", msg: "phase changed", server: "srv_a", host: "host_b", to: "RUNNING", cause: "command succeeded" },
      false,
    );
    expect(line).toBe('03:04:05.006 INFO  berth-manager: phase changed server=srv_a host=host_b to=RUNNING cause="command succeeded"\n');
  });

  it("prints an error's stack below the line, and colours only when asked", () => {
    const line = formatRecord({ level: 50, time: 0, msg: "reconcile failed", err: { message: "boom", stack: "Error: boom\n    at x" } }, true);
    expect(line).toContain("\x1b[31mERROR\x1b[0m");
    expect(line).toContain("\n    Error: boom\n        at x");
  });

  it("works as a pino destination", () => {
    const out: string[] = [];
    const log = pino({ name: "t" }, prettyStream({ write: (s) => out.push(s) }, false));
    log.warn({ host: "host_1" }, "agent silent");
    expect(out.join("")).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN  t: agent silent host=host_1\n$/);
  });
});
