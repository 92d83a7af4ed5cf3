/**
 * Metrics, health and readiness of one manager, wired together: the write
 * probe decides grpc.health.v1's status and /readyz, and feeds
 * berth_database_writable; the ledger, the RPC interceptor and the
 * reconciler feed the counters. `buildManager` creates one and calls
 * `start()` once it listens, `stop()` when it closes.
 */
import type { Interceptor } from "@connectrpc/connect";
import { HealthStatus, ServingStatus } from "../api/health.js";
import type { Handler } from "../http/listen.js";
import { probeRoutes } from "../http/probes.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import { StallWatch } from "./stall-watch.js";
import type { Store } from "../store/store.js";
import { ManagerMetrics, type MetricsSources } from "./metrics.js";
import { WriteProbe } from "./write-probe.js";

export interface ObservabilityDeps {
  /** Probed for writes (the store contract's probeWrite). */
  store: Pick<Store, "probeWrite">;
  ledger: Ledger;
  health: HealthStatus;
  log: Logger;
  sources: MetricsSources;
  version: string;
  /** Seconds between write probes (default 5). */
  probeIntervalSeconds?: number | undefined;
  metricsToken?: string | undefined;
}

export interface Observability {
  readonly metrics: ManagerMetrics;
  readonly probe: WriteProbe;
  /** Counts RPCs and open streams; put it first (outermost). */
  readonly interceptor: Interceptor;
  /** For ReconcilerDeps.observeReconcile. */
  readonly observeReconcile: (ms: number, ok: boolean) => void;
  /** /healthz, /readyz and /metrics in front of `fallback`. */
  routes(fallback: Handler): Handler;
  /** Undefined when ready, else why not. */
  notReadyReason(): string | undefined;
  /** The port is bound: probe now and every interval; health follows the probe. */
  start(): void;
  /** Shutting down: NOT_SERVING from now on. */
  stop(): void;
}

export function createObservability(deps: ObservabilityDeps): Observability {
  const { health, log } = deps;
  const stalls = new StallWatch(log);
  const metrics = new ManagerMetrics(deps.sources, deps.version);
  deps.ledger.subscribe(metrics.onEvent);
  let state: "starting" | "listening" | "stopping" = "starting";

  const probe = new WriteProbe(deps.store, {
    intervalMs: (deps.probeIntervalSeconds ?? 5) * 1000,
    onResult(r, previous) {
      metrics.observeWriteProbe(r.ok, r.seconds);
      if (!r.ok && (previous === undefined || previous.ok || previous.error !== r.error)) {
        log.error({ error: r.error }, "database not writable; health is NOT_SERVING until a write succeeds");
      } else if (r.ok && previous && !previous.ok) {
        log.info({ seconds: r.seconds }, "database writable again; health is SERVING");
      }
      updateHealth();
    },
  });

  function notReadyReason(): string | undefined {
    if (state === "starting") return "starting (migrations, not listening yet)";
    if (state === "stopping") return "shutting down";
    const last = probe.last;
    if (!last) return "database not probed yet";
    if (!last.ok) return `database not writable: ${last.error}`;
    return undefined;
  }

  function updateHealth(): void {
    health.set("", notReadyReason() === undefined ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  }

  health.set("", ServingStatus.NOT_SERVING);
  return {
    metrics,
    probe,
    interceptor: metrics.interceptor,
    observeReconcile: metrics.observeReconcile,
    routes: (fallback) => probeRoutes({ notReadyReason, metrics: (names) => metrics.render(names), metricsToken: deps.metricsToken }, fallback),
    notReadyReason,
    start() {
      state = "listening";
      probe.start();
      metrics.eventLoop.start();
      stalls.start();
    },
    stop() {
      state = "stopping";
      probe.stop();
      metrics.eventLoop.stop();
      stalls.stop();
      updateHealth();
    },
  };
}
