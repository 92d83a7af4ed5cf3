/**
 * A process of simulated agents (forked by the scale benchmark, talking to
 * it over the IPC channel). Each agent is the real `Agent` — link, executor,
 * inventory, heartbeats, event reporting — over a `SimRuntime` and a
 * `SimDataRoot`, with its own gRPC connection to the manager.
 *
 *   parent → {op: "start", ...}  starts the agents        → {op: "started"}
 *   parent → {op: "churn", ...}  container events at a rate → {op: "churned", records}
 *   parent → {op: "stop"}        stops the agents and exits
 */
import { destination, pino } from "pino";
import { Agent } from "../../agent/src/agent.js";
import { SimRuntime, type SimLatencies } from "../../agent/testing/sim-runtime.js";
import { ownConnectionPerChannel } from "./own-connections.js";
import { SimDataRoot } from "./sim-data-root.js";

export interface StartMessage {
  op: "start";
  hosts: {
    hostId: string;
    secret: string;
    /**
     * The managers this agent dials, in order (as `berth-agent --manager URL1,URL2`):
     * the first one, failing over to the next when it is unreachable.
     */
    managerUrls: string[];
    /** Containers (and their servers' data directories) already on the host when its agent starts. */
    existing?: { serverId: string; name: string; image: string; labels: Record<string, string>; running: boolean }[];
  }[];
  latencies?: Partial<SimLatencies>;
  inventoryIntervalMs: number;
  heartbeatIntervalMs: number;
  logPath: string;
}

export interface ChurnMessage {
  op: "churn";
  /** Events per second this process emits, spread over `targets` round-robin. */
  rate: number;
  durationMs: number;
  targets: { hostId: string; serverId: string }[];
}

/** One emitted event: target index, exit code, wall-clock ms when it was emitted. */
export type ChurnRecord = [number, number, number];

export type FleetReply =
  | { op: "started"; ms: number }
  | { op: "churned"; records: ChurnRecord[]; missingTargets: number; lagMs: number }
  | { op: "error"; error: string };

/** Exit codes of churn events start here, far from real ones (0, 1, 137, 143). */
export const CHURN_CODE_BASE = 1000;

ownConnectionPerChannel();

const hosts = new Map<string, { agent: Agent; runtime: SimRuntime }>();

function reply(m: FleetReply): void {
  process.send?.(m);
}

async function start(m: StartMessage): Promise<void> {
  const t0 = performance.now();
  const log = pino({ level: "warn", base: { pid: process.pid } }, destination({ dest: m.logPath, sync: true }));
  for (const h of m.hosts) {
    const runtime = new SimRuntime({ latencies: m.latencies ?? {} });
    const dataRoot = new SimDataRoot(`/sim/${h.hostId}`);
    for (const c of h.existing ?? []) {
      runtime.seed({ name: c.name, image: c.image, labels: c.labels, state: c.running ? "running" : "created", mounts: [`/sim/${h.hostId}/${c.serverId}:/data`] });
      await dataRoot.ensure(c.serverId);
    }
    const agent = new Agent({
      managerUrls: h.managerUrls,
      credential: { hostId: h.hostId, secret: h.secret },
      runtime,
      dataRoot,
      log: log.child({ host: h.hostId }),
      inventoryIntervalMs: m.inventoryIntervalMs,
      heartbeatIntervalMs: m.heartbeatIntervalMs,
      // No usage reports: a simulated host has no cgroups, and thousands of them reading this
      // machine's /proc would measure the bench box, not berth (docs/benchmarks.md).
      usageIntervalMs: 0,
    });
    hosts.set(h.hostId, { agent, runtime });
  }
  // All at once: a storm, as after a manager restart or a network partition healing.
  await Promise.all([...hosts.values()].map((h) => h.agent.start()));
  reply({ op: "started", ms: performance.now() - t0 });
}

async function churn(m: ChurnMessage): Promise<void> {
  // Resolve each target's container on its simulated host.
  const resolved: { runtime: SimRuntime; containerId: string }[] = [];
  let missing = 0;
  for (const t of m.targets) {
    const h = hosts.get(t.hostId);
    const c = h && (await h.runtime.list(t.serverId))[0];
    if (!h || !c) {
      missing++;
      resolved.push({ runtime: new SimRuntime(), containerId: "" });
      continue;
    }
    resolved.push({ runtime: h.runtime, containerId: c.id });
  }
  const counters = new Int32Array(m.targets.length);
  const records: ChurnRecord[] = [];
  let sent = 0;
  let next = 0;
  let maxLag = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let last = t0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxLag = Math.max(maxLag, now - last - 5);
      last = now;
      const elapsed = Math.min(now - t0, m.durationMs);
      const due = Math.floor((elapsed / 1000) * m.rate);
      while (sent < due) {
        const i = next;
        next = (next + 1) % resolved.length;
        sent++;
        const r = resolved[i]!;
        if (!r.containerId) continue;
        const code = CHURN_CODE_BASE + ++counters[i]!;
        // The event is emitted now; the agent reports it (inspect, send) on the next turn.
        records.push([i, code, performance.timeOrigin + performance.now()]);
        r.runtime.simulateExit(r.containerId, code);
      }
      if (now - t0 >= m.durationMs) {
        clearInterval(timer);
        resolve();
      }
    }, 5);
  });
  reply({ op: "churned", records, missingTargets: missing, lagMs: maxLag });
}

process.on("message", (m: StartMessage | ChurnMessage | { op: "stop" }) => {
  const run = async () => {
    switch (m.op) {
      case "start":
        return start(m);
      case "churn":
        return churn(m);
      case "stop":
        for (const h of hosts.values()) h.agent.stop();
        setTimeout(() => process.exit(0), 200);
        return;
    }
  };
  run().catch((err: unknown) => reply({ op: "error", error: String((err as Error).stack ?? err) }));
});
process.on("disconnect", () => process.exit(0));
