import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService } from "@berth/proto/berth/v1/agent_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { createAgentService } from "./api/agent-service.js";
import { errorInterceptor } from "./api/errors.js";
import { authInterceptor } from "./auth/interceptor.js";
import { HealthStatus, registerHealth, ServingStatus } from "./api/health.js";
import { createHostService } from "./api/host-service.js";
import { registerReflection } from "./api/reflection.js";
import { createServerService } from "./api/server-service.js";
import { listen, type Listener } from "./http/listen.js";
import { staticFiles } from "./http/static-files.js";
import { Ledger } from "./ledger/ledger.js";
import { AgentHub } from "./link/agent-hub.js";
import type { Logger } from "./log.js";
import { Reconciler } from "./reconcile/reconciler.js";
import { openDatabase } from "./store/database.js";
import { Store } from "./store/store.js";

export interface ManagerConfig {
  /** host:port to listen on; port 0 picks a free one. */
  listen: string;
  /** SQLite file path, or ":memory:". */
  dbPath: string;
  /** URL agents are told to dial in enrollment commands; defaults to http://<listen>. */
  advertiseUrl?: string;
  /** Directory of the built dashboard. */
  webRoot?: string;
  heartbeatIntervalSeconds?: number;
  /** An agent silent this long is disconnected and its host marked offline. */
  agentTimeoutSeconds?: number;
  log: Logger;
}

export interface Manager {
  readonly store: Store;
  readonly managerId: string;
  readonly reconciler: Reconciler;
  readonly hub: AgentHub;
  /** Starts serving; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number; url: string }>;
  close(): Promise<void>;
}

const DEFAULT_WEB_ROOT = fileURLToPath(new URL("../../web/dist", import.meta.url));
const PLACEHOLDER_WEB_ROOT = fileURLToPath(new URL("../../web/public", import.meta.url));

/** Builds a manager without binding a port, so tests can start it on port 0. */
export function buildManager(config: ManagerConfig): Manager {
  const log = config.log;
  const health = new HealthStatus();
  health.set("", ServingStatus.NOT_SERVING);
  const store = new Store(openDatabase(config.dbPath));
  const managerId = store.managerId();
  // Nothing is connected at start, whatever the previous run left in the table.
  store.markAllHostsOffline();
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const reconciler = new Reconciler({ store, hub, log, managerId });
  const heartbeatIntervalSeconds = config.heartbeatIntervalSeconds ?? 5;
  const agentTimeoutMs = (config.agentTimeoutSeconds ?? 15) * 1000;
  let listener: Listener | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let advertiseUrl = config.advertiseUrl ?? `http://${config.listen}`;

  const routes = (router: ConnectRouter) => {
    router.service(ServerService, createServerService({ store, hub, ledger, reconciler }));
    router.service(HostService, createHostService({ store, hub, ledger, get advertiseUrl() { return advertiseUrl; } }));
    router.service(AgentService, createAgentService({ store, hub, ledger, reconciler, log, managerId, heartbeatIntervalSeconds }));
    // Declared in the contract; their issues implement them. Until then: Unimplemented.
    router.service(AccessService, {});
    router.service(EventService, {});
    router.service(AlertService, {});
    router.service(OrphanService, {});
    registerHealth(router, health);
    registerReflection(router);
  };
  const webRoot = config.webRoot ?? (existsSync(DEFAULT_WEB_ROOT) ? DEFAULT_WEB_ROOT : PLACEHOLDER_WEB_ROOT);
  const handler = connectNodeAdapter({
    routes,
    // Errors first (outermost), so failures inside auth are converted too.
    interceptors: [errorInterceptor(log), authInterceptor()],
    readMaxBytes: 4 * 1024 * 1024,
    fallback: staticFiles(webRoot),
  });

  return {
    store,
    managerId,
    reconciler,
    hub,
    async listen() {
      const [host, portText] = splitHostPort(config.listen);
      listener = await listen(host, Number(portText), handler);
      const { port } = listener.address;
      const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
      if (!config.advertiseUrl) advertiseUrl = url;
      // Servers whose hosts never reconnect still get Unknown, and deadlines still fire.
      for (const id of store.allServerIds()) reconciler.enqueue(id, "manager started");
      sweeper = setInterval(() => {
        for (const hostId of hub.closeSilent(Date.now(), agentTimeoutMs)) {
          log.warn({ host: hostId }, "agent silent; marking host offline");
        }
      }, 1000);
      sweeper.unref();
      health.set("", ServingStatus.SERVING);
      log.info({ url, managerId, db: config.dbPath }, "manager listening");
      return { host, port, url };
    },
    async close() {
      health.set("", ServingStatus.NOT_SERVING);
      if (sweeper) clearInterval(sweeper);
      reconciler.stop();
      hub.closeAll("manager shutting down");
      await listener?.close();
      store.close();
    },
  };
}

/** "127.0.0.1:7000" → ["127.0.0.1", "7000"]; "[::1]:7000" → ["::1", "7000"]. */
export function splitHostPort(s: string): [string, string] {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]*):(\d+)$/.exec(s);
  if (!m) throw new Error(`listen address "${s}" must be host:port, e.g. 127.0.0.1:7000`);
  return [m[1] || "0.0.0.0", m[2]!];
}
