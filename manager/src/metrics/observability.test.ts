import pino from "pino";
import { describe, expect, it, vi } from "vitest";
import { HealthStatus } from "../api/health.js";
import type { Ledger } from "../ledger/ledger.js";
import { createObservability } from "./observability.js";

function observability() {
  return createObservability({
    store: { probeWrite: async () => {} },
    ledger: { subscribe: () => () => {} } as unknown as Ledger,
    health: new HealthStatus(),
    log: pino({ level: "silent" }),
    sources: { hosts: async () => [], serverCounts: async () => [], firingAlerts: async () => [], queueDepth: () => 0 },
    version: "0.0.0",
    probeIntervalSeconds: 3600,
  });
}

describe("createObservability: the event-loop delay follows the manager's life", () => {
  it("measures once listening (a second at a time) and stops measuring on shutdown", async () => {
    const o = observability();
    expect(o.metrics.eventLoop.sample()).toBeUndefined();
    o.start();
    try {
      // Evidence, not a sleep: the first second closes on its own timer.
      await vi.waitFor(async () => expect((await o.metrics.render(["berth_event_loop_delay_seconds"])).body).toMatch(/^berth_event_loop_delay_seconds_count [1-9]/m), {
        timeout: 4_000,
        interval: 50,
      });
    } finally {
      o.stop();
    }
    expect(o.metrics.eventLoop.sample()).toBeUndefined();
  });
});
