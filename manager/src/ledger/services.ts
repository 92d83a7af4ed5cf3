import { AlertEvaluator, DEFAULT_EVALUATOR } from "../alerts/evaluator.js";
import { DEFAULT_THRESHOLDS, type OrphanView } from "../alerts/rules.js";
import { WebhookNotifier } from "../alerts/webhook.js";
import type { Logger } from "../log.js";
import { AlertStore } from "../store/alert-store.js";
import type { Db } from "../store/database.js";
import { EventStore } from "../store/event-store.js";
import type { Store } from "../store/store.js";
import type { Ledger } from "./ledger.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

/** Event retention, alert thresholds and webhook receivers (all optional; defaults in DESIGN.md). */
export interface LedgerConfig {
  /** Events older than this are pruned (default 30 days). */
  eventMaxAgeSeconds?: number;
  /** At most this many of the newest events are kept (default 1,000,000). */
  eventMaxRows?: number;
  /** A host offline longer than this raises `host_offline` (default 30). */
  alertHostOfflineSeconds?: number;
  /** A server not converged longer than this raises `server_not_converged` (default 120). */
  alertNotConvergedSeconds?: number;
  /** A data root with less free space than this percentage raises `disk_low` (default 10). */
  alertDiskFreePercent?: number;
  /** How often the alert rules run besides after relevant events (default 5). */
  alertIntervalSeconds?: number;
  /** Alert notifications are POSTed to each of these. */
  webhookUrls?: string[];
  /** HMAC-SHA256 key for the `X-Berth-Signature` header. */
  webhookSecret?: string;
}

/** The ledger's readers and background work, built over the manager's database. */
export interface LedgerServices {
  events: EventStore;
  alerts: AlertStore;
  evaluator: AlertEvaluator;
  notifier: WebhookNotifier;
  retention: EventRetention;
  start(): void;
  stop(): void;
}

export function createLedgerServices(deps: {
  db: Db;
  store: Store;
  ledger: Ledger;
  isConnected: (hostId: string) => boolean;
  log: Logger;
  managerId: string;
  config?: LedgerConfig | undefined;
  /** Orphans the `orphan_found` rule alerts on (OrphanDetector.alertViews). */
  orphans?: () => OrphanView[];
}): LedgerServices {
  const c = deps.config ?? {};
  const events = new EventStore(deps.db);
  const alerts = new AlertStore(deps.db);
  const maxAgeMs = c.eventMaxAgeSeconds !== undefined ? c.eventMaxAgeSeconds * 1000 : DEFAULT_RETENTION.maxAgeMs;
  const retention = new EventRetention(events, { ...DEFAULT_RETENTION, maxAgeMs, maxRows: c.eventMaxRows ?? DEFAULT_RETENTION.maxRows }, deps.log);
  const notifier = new WebhookNotifier({ urls: c.webhookUrls ?? [], secret: c.webhookSecret }, { ledger: deps.ledger, log: deps.log, managerId: deps.managerId });
  const evaluator = new AlertEvaluator(
    { store: deps.store, alerts, ledger: deps.ledger, isConnected: deps.isConnected, notifier, log: deps.log, ...(deps.orphans ? { orphans: deps.orphans } : {}) },
    {
      thresholds: {
        hostOfflineMs: c.alertHostOfflineSeconds !== undefined ? c.alertHostOfflineSeconds * 1000 : DEFAULT_THRESHOLDS.hostOfflineMs,
        notConvergedMs: c.alertNotConvergedSeconds !== undefined ? c.alertNotConvergedSeconds * 1000 : DEFAULT_THRESHOLDS.notConvergedMs,
        diskFreeFraction: c.alertDiskFreePercent !== undefined ? c.alertDiskFreePercent / 100 : DEFAULT_THRESHOLDS.diskFreeFraction,
      },
      intervalMs: c.alertIntervalSeconds !== undefined ? c.alertIntervalSeconds * 1000 : DEFAULT_EVALUATOR.intervalMs,
      historyMs: maxAgeMs,
    },
  );
  return {
    events,
    alerts,
    evaluator,
    notifier,
    retention,
    start() {
      retention.start();
      evaluator.start();
    },
    stop() {
      evaluator.stop();
      retention.stop();
      notifier.close();
    },
  };
}

/** The manager's command-line flags for `LedgerConfig` (spread into parseArgs options). */
export const LEDGER_FLAGS = {
  "event-retention": { type: "string" },
  "event-max-rows": { type: "string" },
  "alert-host-offline": { type: "string" },
  "alert-not-converged": { type: "string" },
  "alert-disk-free": { type: "string" },
  "alert-interval": { type: "string" },
  webhook: { type: "string", multiple: true },
  "webhook-secret": { type: "string" },
} as const;

export const LEDGER_USAGE = `  --event-retention S    seconds events are kept [BERTH_EVENT_RETENTION] 2592000 (30 days)
  --event-max-rows N     newest events kept at most [BERTH_EVENT_MAX_ROWS] 1000000
  --alert-host-offline S alert when a host is offline longer [BERTH_ALERT_HOST_OFFLINE] 30
  --alert-not-converged S
                         alert when a server differs from its desired state longer
                         [BERTH_ALERT_NOT_CONVERGED] 120
  --alert-disk-free PCT  alert when a data root has less free space [BERTH_ALERT_DISK_FREE] 10
  --alert-interval S     how often alert rules run (also after each change)
                         [BERTH_ALERT_INTERVAL] 5
  --webhook URL          POST alert notifications (JSON) here; repeatable
                         [BERTH_WEBHOOK, comma-separated]
  --webhook-secret KEY   sign webhook bodies: X-Berth-Signature: sha256=<HMAC-SHA256 hex>
                         [BERTH_WEBHOOK_SECRET]
`;

type FlagValues = { [K in keyof typeof LEDGER_FLAGS]?: (typeof LEDGER_FLAGS)[K] extends { multiple: true } ? string[] : string };

/** `LedgerConfig` from the parsed flags and environment; throws an Error naming a bad setting. */
export function ledgerConfigFromFlags(values: FlagValues, env: NodeJS.ProcessEnv = process.env): LedgerConfig {
  const num = (flag: keyof typeof LEDGER_FLAGS, envName: string, check: (n: number) => boolean, rule: string): number | undefined => {
    const raw = (values[flag] as string | undefined) ?? env[envName];
    if (raw === undefined || raw === "") return undefined;
    const n = Number(raw);
    if (!check(n)) throw new Error(`invalid --${flag} (${envName}) "${raw}": must be ${rule}`);
    return n;
  };
  const whole = (n: number) => Number.isInteger(n) && n >= 1;
  const out: LedgerConfig = {};
  const set = <K extends keyof LedgerConfig>(k: K, v: LedgerConfig[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set("eventMaxAgeSeconds", num("event-retention", "BERTH_EVENT_RETENTION", whole, "a whole number of seconds >= 1"));
  set("eventMaxRows", num("event-max-rows", "BERTH_EVENT_MAX_ROWS", whole, "a whole number >= 1"));
  set("alertHostOfflineSeconds", num("alert-host-offline", "BERTH_ALERT_HOST_OFFLINE", whole, "a whole number of seconds >= 1"));
  set("alertNotConvergedSeconds", num("alert-not-converged", "BERTH_ALERT_NOT_CONVERGED", whole, "a whole number of seconds >= 1"));
  set("alertDiskFreePercent", num("alert-disk-free", "BERTH_ALERT_DISK_FREE", (n) => Number.isFinite(n) && n >= 0 && n <= 100, "a percentage from 0 to 100"));
  set("alertIntervalSeconds", num("alert-interval", "BERTH_ALERT_INTERVAL", whole, "a whole number of seconds >= 1"));
  const urls = [...(values.webhook ?? []), ...(env.BERTH_WEBHOOK ?? "").split(",")].map((u) => u.trim()).filter(Boolean);
  for (const u of urls) {
    let parsed: URL;
    try {
      parsed = new URL(u);
    } catch {
      throw new Error(`invalid --webhook "${u}": not a URL`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error(`invalid --webhook "${u}": use an http:// or https:// URL`);
  }
  if (urls.length) out.webhookUrls = urls;
  const secret = values["webhook-secret"] ?? env.BERTH_WEBHOOK_SECRET;
  if (secret) out.webhookSecret = secret;
  return out;
}
