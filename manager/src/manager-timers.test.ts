import { describe, expect, it } from "vitest";
import { createLogger } from "./log.js";
import { buildManager } from "./manager.js";

describe("buildManager: the agent link's timers", () => {
  const log = createLogger("silent", "test");

  it("refuses an agent timeout shorter than two heartbeats, before opening anything", async () => {
    await expect(buildManager({ listen: "127.0.0.1:0", dbPath: ":memory:", heartbeatIntervalSeconds: 5, agentTimeoutSeconds: 9, log })).rejects.toThrow(
      new RangeError("agent timeout (9 s) must be at least twice the heartbeat interval (5 s), which must be above 0"),
    );
    await expect(buildManager({ listen: "127.0.0.1:0", dbPath: ":memory:", heartbeatIntervalSeconds: 0, log })).rejects.toThrow(RangeError);
    // The default heartbeat (5 s) and a shorter timeout.
    await expect(buildManager({ listen: "127.0.0.1:0", dbPath: ":memory:", agentTimeoutSeconds: 4, log })).rejects.toThrow(/agent timeout \(4 s\)/);
  });
});
