import { AlertEvaluator, DEFAULT_EVALUATOR } from "../alerts/evaluator.js";
import { DEFAULT_THRESHOLDS, type BackupFailureView, type BackupPolicyView, type OrphanView, type SavedQueryAlertView, type TransferFailureView } from "../alerts/rules.js";
import { WebhookNotifier } from "../alerts/webhook.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";
import type { Ledger } from "./ledger.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

/** Event retention, alert thresholds and webhook receivers (all optional; defaults in DESIGN.md). */
export interface LedgerConfig {
  /** Events older than this are pruned (default 30 days). */
  eventMaxAgeSeconds?: number;
  /** At most this many of the newest events are kept (default 1,000,000). */
  eventMaxRows?: number;
  /** Finished commands older than this are pruned, except each server's latest (default 7 days). */
  commandMaxAgeSeconds?: number;
  /** Enrollment tokens used or expired longer ago than this are pruned (default 1 day). */
  enrollmentTokenMaxAgeSeconds?: number;
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

/** The ledger's background work (alert rules, webhooks, retention) over the store contract. */
export interface LedgerServices {
  evaluator: AlertEvaluator;
  notifier: WebhookNotifier;
  retention: EventRetention;
  start(): void;
  stop(): void;
}

export function createLedgerServices(deps: {
  store: Store;
  ledger: Ledger;
  isConnected: (hostId: string) => boolean;
  log: Logger;
  managerId: string;
  config?: LedgerConfig | undefined;
  /** Orphans the `orphan_found` rule alerts on (OrphanDetector.alertViews). */
  orphans?: () => OrphanView[] | Promise<OrphanView[]>;
  backupFailures?: () => BackupFailureView[];
  /** Servers whose backup policy sets alert_after_hours (backups/overdue.ts). */
  backupPolicies?: () => BackupPolicyView[];
  transferFailures?: () => TransferFailureView[];
  /** Saved queries with an alert (query/saved-alerts.ts savedQueryAlertViews). */
  savedQueries?: () => Promise<SavedQueryAlertView[]>;
}): LedgerServices {
  const c = deps.config ?? {};
  const maxAgeMs = c.eventMaxAgeSeconds !== undefined ? c.eventMaxAgeSeconds * 1000 : DEFAULT_RETENTION.maxAgeMs;
  const retention = new EventRetention(
    deps.store,
    {
      ...DEFAULT_RETENTION,
      maxAgeMs,
      maxRows: c.eventMaxRows ?? DEFAULT_RETENTION.maxRows,
      ...(c.commandMaxAgeSeconds !== undefined ? { commandMaxAgeMs: c.commandMaxAgeSeconds * 1000 } : {}),
      ...(c.enrollmentTokenMaxAgeSeconds !== undefined ? { enrollmentTokenMaxAgeMs: c.enrollmentTokenMaxAgeSeconds * 1000 } : {}),
    },
    deps.log,
    Date.now,
  );
  const notifier = new WebhookNotifier({ urls: c.webhookUrls ?? [], secret: c.webhookSecret }, { store: deps.store, ledger: deps.ledger, log: deps.log, managerId: deps.managerId });
  const evaluator = new AlertEvaluator(
    { store: deps.store, ledger: deps.ledger, isConnected: deps.isConnected, notifier, log: deps.log, ...(deps.orphans ? { orphans: deps.orphans } : {}), ...(deps.backupFailures ? { backupFailures: deps.backupFailures } : {}), ...(deps.backupPolicies ? { backupPolicies: deps.backupPolicies } : {}), ...(deps.transferFailures ? { transferFailures: deps.transferFailures } : {}), ...(deps.savedQueries ? { savedQueries: deps.savedQueries } : {}) },
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
    evaluator,
    notifier,
    retention,
    // Started and stopped again each time this manager gains and loses the leader lease.
    start() {
      notifier.open();
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
