import { FLEET_PAGE, forEachPage } from "../store/pages.js";
import { turns } from "../turns.js";
import type { AlertRecord } from "../domain/records.js";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { ConflictError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import {
  alertKey,
  DEFAULT_THRESHOLDS,
  hostConditions,
  orphanConditions,
  backupConditions,
  overdueConditions,
  transferConditions,
  savedQueryConditions,
  type SavedQueryAlertView,
  type TransferFailureView,
  type BackupFailureView,
  type BackupPolicyView,
  RULE_REASON,
  serverConditions,
  type AlertCondition,
  type AlertThresholds,
  type HostView,
  type OrphanView,
  type ServerView,
} from "./rules.js";
import type { WebhookNotifier } from "./webhook.js";

/** What the evaluator decided in one step. */
export interface StepResult {
  /** Conditions seen but not yet held for their `forMs`: key → since when. */
  pending: Map<string, number>;
  /** New alerts to fire. */
  fire: AlertCondition[];
  /** Firing alerts whose condition still holds. */
  stillFiring: { id: string; condition: AlertCondition }[];
  /** Firing alerts whose condition cleared: resolve them. */
  resolve: string[];
}

/**
 * One evaluation, a pure function of the current conditions, the firing
 * alerts (key → alert id), what was pending before, and the time:
 * - a condition with a firing alert keeps it firing (no second alert);
 * - a new condition is pending until it has held for its `forMs`, then fires;
 * - a firing alert whose condition is gone resolves; a pending one is forgotten.
 * So an alert fires again only after its condition cleared and came back.
 */
export function step(input: { now: number; conditions: AlertCondition[]; firing: Map<string, string>; pending: Map<string, number> }): StepResult {
  const { now, conditions, firing, pending } = input;
  const out: StepResult = { pending: new Map(), fire: [], stillFiring: [], resolve: [] };
  const seen = new Set<string>();
  for (const c of conditions) {
    const key = alertKey(c);
    if (seen.has(key)) continue;
    seen.add(key);
    const id = firing.get(key);
    if (id !== undefined) {
      out.stillFiring.push({ id, condition: c });
      continue;
    }
    const since = pending.get(key) ?? now;
    if (now - since >= c.forMs) out.fire.push(c);
    else out.pending.set(key, since);
  }
  for (const [key, id] of firing) if (!seen.has(key)) out.resolve.push(id);
  return out;
}

export interface AlertEvaluatorConfig {
  thresholds: AlertThresholds;
  /** How often the rules run (default 5 s); relevant ledger events also trigger a run. */
  intervalMs: number;
  /** Resolved alerts are kept this long (default: the event retention, 30 days). */
  historyMs: number;
}

export const DEFAULT_EVALUATOR: AlertEvaluatorConfig = {
  thresholds: DEFAULT_THRESHOLDS,
  intervalMs: 5000,
  historyMs: 30 * 24 * 3600_000,
};

export interface AlertEvaluatorDeps {
  store: Store;
  /** Builds the events of each run's batch; they reach listeners once committed (Ledger.follow). */
  ledger: Pick<Ledger, "op" | "subscribe">;
  /** Whether a host's agent is connected with its inventory stored (AgentHub.isConnected). */
  isConnected: (hostId: string) => boolean;
  notifier?: WebhookNotifier;
  /** Orphan findings (OrphanDetector.alertViews); without it the orphan rule never fires. */
  orphans?: () => OrphanView[] | Promise<OrphanView[]>;
  /** Servers whose newest finished backup failed (backups/health.ts). */
  backupFailures?: () => BackupFailureView[];
  /** Servers whose backup policy sets alert_after_hours, with their newest success (backups/overdue.ts). */
  backupPolicies?: () => BackupPolicyView[];
  /** The servers whose latest transfer failed (transfers/health.ts). */
  transferFailures?: () => TransferFailureView[];
  /** Saved queries with an alert and what their runner last saw (query/saved-alerts.ts savedQueryAlertViews). */
  savedQueries?: () => Promise<SavedQueryAlertView[]>;
  log: Logger;
  now?: () => number;
}

/** Ledger events after which the rules are worth re-running at once. */
const TRIGGERS = /^(phase\.changed|data\.lost|host\.|orphan\.|query\.(created|updated|deleted)|server\.(deleted|restored|purged|reassigned))/;
/** Coalesces a burst of trigger events into one run. */
const TRIGGER_DELAY_MS = 100;
/** Triggered runs come at most this often: a busy fleet must not turn the rules into a hot loop. */
const MIN_GAP_MS = 1000;

/**
 * Runs (triggered or periodic) take at most about this share of the manager's
 * time. A run reads the whole fleet (every server, every observed container),
 * so its cost grows with the fleet: 250 ms at 10,000 servers, seconds at
 * 100,000. Without a bound, a busy fleet (a phase change every second) would
 * spend the manager's whole event loop on alert rules; with it, runs come at
 * most every 10 × the last run's duration (docs/benchmarks.md).
 */
const MAX_TIME_SHARE = 0.1;

/**
 * Runs the alert rules continuously: on a timer and shortly after any event
 * that can change their outcome. Fired and resolved alerts are stored, put in
 * the ledger (`alert.fired` / `alert.resolved`) and sent to the webhooks
 * unless muted. Pending conditions are kept in memory: after a manager
 * restart a condition must hold for its full threshold again before it fires
 * (alerts already firing stay firing).
 *
 * Runs never overlap: each reads the fleet and the firing alerts, decides
 * (`step`), and commits what changed as one batch; a second run started
 * before the first committed would decide from the same firing alerts and
 * fire them twice. So runs form a chain, and a timer or trigger that comes
 * while one is waiting to start adds nothing (the waiting run sees its change).
 */
export class AlertEvaluator {
  private pending = new Map<string, number>();
  /** The last run asked for; the next one starts after it. */
  private chain: Promise<unknown> = Promise.resolve();
  /** A timer or trigger run is waiting for its turn. */
  private queued = false;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private lastRunAt = 0;
  /** How long the last run took (ms), which spaces the next one (MAX_TIME_SHARE). */
  private lastRunMs = 0;
  private readonly now: () => number;

  constructor(
    private readonly deps: AlertEvaluatorDeps,
    private readonly config: AlertEvaluatorConfig = DEFAULT_EVALUATOR,
  ) {
    this.now = deps.now ?? Date.now;
  }

  start(): void {
    // Conditions seen before a stop (e.g. while another manager led) are stale: each must
    // hold for its full `forMs` again from what this run sees.
    this.pending = new Map();
    this.timer = setInterval(() => {
      if (Date.now() >= this.nextRunAllowedAt(0)) this.safeEvaluate();
    }, this.config.intervalMs);
    this.timer.unref();
    this.unsubscribe = this.deps.ledger.subscribe((_id, e) => {
      if (!TRIGGERS.test(e.type) || this.soon) return;
      const delay = Math.max(TRIGGER_DELAY_MS, this.nextRunAllowedAt(MIN_GAP_MS) - Date.now());
      this.soon = setTimeout(() => {
        this.soon = undefined;
        this.safeEvaluate();
      }, delay);
      this.soon.unref();
    });
  }

  /** No run before this: `minGapMs` after the last start, and at most MAX_TIME_SHARE of the time. */
  private nextRunAllowedAt(minGapMs: number): number {
    return this.lastRunAt + Math.max(minGapMs, this.lastRunMs / MAX_TIME_SHARE);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = this.soon = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /**
   * Every rule's conditions now. The server rules run a page of servers at a
   * time, each page in its slot of the event-loop turn: at 10,000 servers
   * the whole evaluation in one step held the loop for 80–90 ms
   * (docs/benchmarks.md), and it grows with the fleet.
   */
  private async conditions(): Promise<AlertCondition[]> {
    const { store, isConnected } = this.deps;
    const { thresholds } = this.config;
    const hostViews: HostView[] = (await store.listHosts()).map((h) => ({
      id: h.id,
      name: h.name,
      connected: isConnected(h.id),
      dataRootFreeBytes: h.facts.dataRootFreeBytes,
      dataRootTotalBytes: h.facts.dataRootTotalBytes,
    }));
    const hosts = new Map(hostViews.map((h) => [h.id, h]));
    const out = hostConditions(hostViews, thresholds);
    await forEachPage(
      (page) => store.serverFacts(page),
      (facts) => {
        const views: ServerView[] = facts.map((s) => ({
          id: s.id,
          name: s.name,
          project: s.project,
          hostId: s.hostId,
          desired: desiredFromJson(s.desiredState),
          phase: Phase[s.phase as keyof typeof Phase] ?? Phase.UNSPECIFIED,
          reason: s.reason,
          generation: s.generation,
          observedGeneration: s.observedGeneration,
          retired: s.purging,
          recentCrashes: s.recentCrashes,
          diskQuotaBytes: s.diskQuotaBytes,
          dataSizeBytes: s.dataSizeBytes,
          ...(s.lastKnownPhase ? { lastKnownPhase: Phase[s.lastKnownPhase as keyof typeof Phase] ?? Phase.UNSPECIFIED, lastKnownReason: s.lastKnownReason } : {}),
        }));
        for (const c of serverConditions(views, hosts, thresholds)) out.push(c);
      },
    );
    for (const c of orphanConditions((await this.deps.orphans?.()) ?? [], hosts)) out.push(c);
    for (const c of backupConditions(this.deps.backupFailures?.() ?? [])) out.push(c);
    for (const c of overdueConditions(this.deps.backupPolicies?.() ?? [], this.now())) out.push(c);
    for (const c of transferConditions(this.deps.transferFailures?.() ?? [])) out.push(c);
    for (const c of savedQueryConditions((await this.deps.savedQueries?.()) ?? [], this.now())) out.push(c);
    return out;
  }

  /**
   * One run of every rule, after any run already asked for; resolves with what
   * changed (for tests and logs). Rejects when the store does; a run whose
   * batch lost a race (an alert resolved meanwhile) changes nothing and
   * resolves empty: the next run decides again.
   */
  evaluate(): Promise<{ fired: AlertRecord[]; resolved: AlertRecord[] }> {
    const run = this.chain.then(() => this.runOnce());
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async runOnce(): Promise<{ fired: AlertRecord[]; resolved: AlertRecord[] }> {
    const { store, ledger, notifier, log } = this.deps;
    const [conditions, firingRecords] = await Promise.all([this.conditions(), store.listFiringAlerts()]);
    const now = this.now();
    const firing = new Map(firingRecords.map((a) => [alertKey(a), a.id]));
    const byId = new Map(firingRecords.map((a) => [a.id, a]));
    const r = step({ now, conditions, firing, pending: this.pending });
    // One read per alert that fires: thousands at once when a host with thousands of servers goes.
    const mutes: (number | null)[] = [];
    for (let i = 0; i < r.fire.length; i += FLEET_PAGE) {
      if (i > 0) await turns.slot();
      for (const m of await Promise.all(r.fire.slice(i, i + FLEET_PAGE).map((c) => store.latestMute(c.rule, c.subject)))) mutes.push(m);
    }

    const ops: WriteOp[] = [];
    const fired: AlertRecord[] = [];
    const resolved: AlertRecord[] = [];
    for (const { id, condition } of r.stillFiring) {
      const a = byId.get(id)!;
      // last_seen has a resolution of seconds; no write per alert per run.
      if (a.message !== condition.message || a.severity !== condition.severity || now - a.lastSeen >= 5000) {
        ops.push({ op: "alert.touch", id, lastSeen: now, message: condition.message, severity: condition.severity });
      }
      // A stage of the same alert (crash_loop: warning, then critical): one alert, its acknowledgement kept, the change in the ledger.
      if (a.severity !== condition.severity) {
        ops.push(
          ledger.op({
            type: "alert.severity_changed",
            project: a.project,
            hostId: a.hostId,
            serverId: a.serverId,
            reason: RULE_REASON[condition.rule],
            actor: "alerts",
            correlationId: a.id,
            message: `${a.severity} → ${condition.severity}: ${condition.message}`,
            payload: { rule: a.rule, subject: a.subject, from: a.severity, to: condition.severity },
          }),
        );
      }
    }
    for (const id of r.resolve) {
      const a = byId.get(id)!;
      // Rejects the batch (ConflictError) when the alert is no longer firing.
      ops.push({ op: "alert.resolve", id, at: now });
      resolved.push({ ...a, state: "resolved", resolvedAt: now, lastSeen: now });
      ops.push(
        ledger.op({
          type: "alert.resolved",
          project: a.project,
          hostId: a.hostId,
          serverId: a.serverId,
          reason: RULE_REASON[a.rule as keyof typeof RULE_REASON] ?? a.rule,
          actor: "alerts",
          correlationId: a.id,
          message: `resolved after ${Math.round((now - a.firstSeen) / 1000)} s: ${a.message}`,
          payload: { rule: a.rule, subject: a.subject, severity: a.severity },
        }),
      );
    }
    r.fire.forEach((c, i) => {
      const muted = mutes[i] ?? null;
      const rec: AlertRecord = {
        id: newId("alr"),
        rule: c.rule,
        subject: c.subject,
        project: c.project,
        hostId: c.hostId,
        serverId: c.serverId,
        severity: c.severity,
        state: "firing",
        message: c.message,
        firstSeen: now,
        lastSeen: now,
        resolvedAt: null,
        acknowledgedBy: "",
        acknowledgedAt: null,
        mutedUntil: muted !== null && muted > now ? muted : null,
      };
      ops.push({ op: "alert.insert", alert: rec });
      fired.push(rec);
      ops.push(
        ledger.op({
          type: "alert.fired",
          project: c.project,
          hostId: c.hostId,
          serverId: c.serverId,
          reason: RULE_REASON[c.rule],
          actor: "alerts",
          correlationId: rec.id,
          message: c.message,
          payload: { rule: c.rule, subject: c.subject, severity: c.severity, ...(rec.mutedUntil ? { mutedUntil: new Date(rec.mutedUntil).toISOString() } : {}) },
        }),
      );
    });

    // Notifications are queued in the batch that fires or resolves their alert (alerts/webhook.ts):
    // stored exactly when the change is, sent by the leader's webhook sender after it.
    for (const a of fired) if (!isMuted(a, now)) ops.push(...(notifier?.enqueueOps("alert.fired", a) ?? []));
    for (const a of resolved) if (!isMuted(a, now)) ops.push(...(notifier?.enqueueOps("alert.resolved", a) ?? []));
    if (ops.length > 0) {
      try {
        // Committed whether or not there is a notifier (`notifier?.f(await x)` would skip the commit too).
        const { droppedDeliveries } = await store.commit(ops);
        notifier?.noteDropped(droppedDeliveries);
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
        // Another path changed an alert this run decided on. Pending stays as it was, so
        // what was due to fire fires at the next run, decided from what is stored then.
        log.debug({ err }, "alert evaluation lost a race with another change; deciding again at the next run");
        return { fired: [], resolved: [] };
      }
    }
    this.pending = r.pending;

    for (const a of fired) {
      log.warn({ alert: a.id, rule: a.rule, subject: a.subject, severity: a.severity, server: a.serverId || undefined, host: a.hostId || undefined }, `alert fired: ${a.message}`);
    }
    for (const a of resolved) log.info({ alert: a.id, rule: a.rule, subject: a.subject }, "alert resolved");
    if (fired.length > 0 || resolved.length > 0) notifier?.wake();
    // After the notifications: they must not wait for, or fail with, housekeeping.
    await store.pruneResolvedAlerts(now - this.config.historyMs, 100);
    return { fired, resolved };
  }

  /** A timer or trigger run: joins the chain unless one is already waiting; failures are logged. */
  private safeEvaluate(): void {
    if (this.queued) return;
    this.queued = true;
    let t0 = 0;
    const run = this.chain.then(() => {
      this.queued = false;
      this.lastRunAt = Date.now();
      t0 = performance.now();
      return this.runOnce();
    });
    this.chain = run
      .catch((err: unknown) => this.deps.log.error({ err }, "alert evaluation failed; retrying at the next run"))
      .finally(() => {
        this.lastRunMs = performance.now() - t0;
      });
  }
}

/** A desired state as protobuf JSON writes it ("DESIRED_STATE_RUNNING"), or as a number. */
export function desiredFromJson(v: string | number | undefined): DesiredState {
  if (typeof v === "number") return v in DesiredState ? (v as DesiredState) : DesiredState.UNSPECIFIED;
  if (!v) return DesiredState.UNSPECIFIED;
  return DesiredState[v.replace(/^DESIRED_STATE_/, "") as keyof typeof DesiredState] ?? DesiredState.UNSPECIFIED;
}

export function isMuted(a: Pick<AlertRecord, "mutedUntil">, now: number): boolean {
  return a.mutedUntil !== null && a.mutedUntil > now;
}
