import { createHash, createHmac } from "node:crypto";
import { newId } from "../ids.js";
import type { AlertRecord, WebhookDeliveryRecord } from "../domain/records.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import { ConflictError } from "../errors.js";
import type { Store, WriteOp } from "../store/store.js";

export interface WebhookConfig {
  /** Receivers: every alert notification is POSTed to each. */
  urls: string[];
  /** With a secret, each request carries `X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body>`. */
  secret?: string | undefined;
  /** Attempts per delivery, the first included (default 5). */
  maxAttempts?: number;
  /** Delay before the second attempt; doubles for each next one (default 1 s). */
  backoffBaseMs?: number;
  /** Per-attempt timeout (default 5 s). */
  timeoutMs?: number;
  /** Pending deliveries kept at most (default 1000); past it the oldest are dropped, logged and counted. */
  maxPending?: number;
  /** The pause after a pass that could not read or record (the database is away; default 5 s). */
  troublePauseMs?: number;
}

/** Pending deliveries kept at most unless configured (each a row of a few KB). */
export const DEFAULT_MAX_PENDING = 1000;
/** Deliveries attempted at once per pass. */
const PASS_SIZE = 16;
/** The longest the sender sleeps between looks at the database (a safety net; wake-ups come from notify). */
const MAX_SLEEP_MS = 30_000;
/** The pause after a pass whose reads or writes failed (the database is away). */
const TROUBLE_PAUSE_MS = 5_000;

/** A delivery's row key. */
const rowKey = (d: { id: string; urlKey: string }) => `${d.id} ${d.urlKey}`;

/** How a receiver's URL is named in the database: its SHA-256, so a token in it is not stored. */
export function urlKey(url: string): string {
  return createHash("sha256").update(url).digest("hex");
}

export type AlertNotificationType = "alert.fired" | "alert.resolved";

/** The JSON body a receiver gets. */
export interface AlertNotification {
  type: AlertNotificationType;
  /** Unique per notification; repeated unchanged on every retry of it. */
  delivery: string;
  managerId: string;
  sentAt: string;
  alert: {
    id: string;
    rule: string;
    subject: string;
    severity: string;
    state: string;
    message: string;
    project: string;
    hostId: string;
    serverId: string;
    firstSeen: string;
    lastSeen: string;
    resolvedAt: string | null;
    acknowledgedBy: string;
  };
}

export const SIGNATURE_HEADER = "X-Berth-Signature";

/** `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`: what receivers recompute. */
export function signBody(body: string, secret: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** Delay before attempt `attempt` (2, 3, ...): base, 2 base, 4 base, ... */
export function retryDelayMs(attempt: number, baseMs: number): number {
  return baseMs * 2 ** Math.max(0, attempt - 2);
}

/** Status codes worth retrying; any other 4xx is the receiver refusing the request itself. */
export function retryable(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** A URL as shown in events and logs: no credentials, no query string (tokens often hide there). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(invalid url)";
  }
}

/**
 * Delivers alert notifications to the configured receivers, retrying with
 * exponential backoff, and records every attempt in the ledger
 * (`webhook.delivered` / `webhook.failed`).
 *
 * Deliveries are rows in the database (store.ts webhook.*), one per
 * notification and receiver: `notify` queues them, and a sender loop on the
 * leader (ledger/services.ts opens this only while this manager holds the
 * leader lease) attempts the due ones and records each outcome in the same
 * batch as its ledger event. So a retry survives a manager restart, and a new
 * leader picks up what the old one left: `open()` starts with whatever is
 * pending. The `delivery` id is in the stored body, the same on every retry
 * and from every manager. Delivery is at least once: a leader that dies
 * between a receiver's answer and recording it leaves the row for the next
 * leader to send again (receivers deduplicate on X-Berth-Delivery). The queue
 * is bounded (`maxPending`): past it the oldest are dropped, logged and
 * counted (`dropped`).
 */
export class WebhookNotifier {
  private readonly inflight = new Set<AbortController>();
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** The sender loop's current pass (one at a time), and whether another was asked for meanwhile. */
  private pass: Promise<void> | undefined;
  private again = false;
  private droppedCount = 0;
  /**
   * Outcomes of attempts made but not yet recorded (the database refused the
   * write), by row key: recorded before anything else is attempted, and their
   * rows are not sent again meanwhile (a receiver that answered is not
   * called again every pass while the disk is full).
   */
  private readonly unrecorded = new Map<string, { d: WebhookDeliveryRecord; ops: WriteOp[] }>();

  constructor(
    private readonly config: WebhookConfig,
    private readonly deps: {
      /** Where deliveries are queued and each attempt recorded (its outcome and event, one commit each). */
      store: Pick<Store, "commit" | "dueWebhookDeliveries" | "nextWebhookDeliveryAt">;
      ledger: Pick<Ledger, "op">;
      log: Logger;
      managerId: string;
      fetch?: typeof fetch;
      now?: () => number;
    },
  ) {}

  get enabled(): boolean {
    return this.config.urls.length > 0;
  }

  /** Pending deliveries dropped because the queue was full (since this manager started). */
  get dropped(): number {
    return this.droppedCount;
  }

  /**
   * The operations that queue `type` of `alert` for every receiver (none when
   * no receiver is configured), to commit in the batch that fires or resolves
   * it; call `wake()` once it committed.
   */
  enqueueOps(type: AlertNotificationType, alert: AlertRecord): WriteOp[] {
    if (!this.enabled) return [];
    const now = this.now();
    const body: AlertNotification = {
      type,
      delivery: newId("dlv"),
      managerId: this.deps.managerId,
      sentAt: new Date(now).toISOString(),
      alert: {
        id: alert.id,
        rule: alert.rule,
        subject: alert.subject,
        severity: alert.severity,
        state: alert.state,
        message: alert.message,
        project: alert.project,
        hostId: alert.hostId,
        serverId: alert.serverId,
        firstSeen: new Date(alert.firstSeen).toISOString(),
        lastSeen: new Date(alert.lastSeen).toISOString(),
        resolvedAt: alert.resolvedAt !== null ? new Date(alert.resolvedAt).toISOString() : null,
        acknowledgedBy: alert.acknowledgedBy,
      },
    };
    const json = JSON.stringify(body);
    const maxPending = this.config.maxPending ?? DEFAULT_MAX_PENDING;
    return [...new Set(this.config.urls)].map((url) => ({
      op: "webhook.enqueue" as const,
      delivery: { id: body.delivery, urlKey: urlKey(url), body: json, createdAt: now, nextAttemptAt: now },
      maxPending,
    }));
  }

  /**
   * Queues `type` of `alert` for every receiver in a batch of its own and
   * wakes the sender. Resolves once queued; never rejects (a queue the
   * database refuses is logged: that notification is lost).
   */
  async notify(type: AlertNotificationType, alert: AlertRecord): Promise<void> {
    if (this.closed) return;
    const ops = this.enqueueOps(type, alert);
    if (ops.length === 0) return;
    try {
      this.noteDropped((await this.deps.store.commit(ops)).droppedDeliveries);
    } catch (err) {
      this.deps.log.error({ err, alert: alert.id, notification: type }, "could not queue a webhook notification; it will not be sent");
      return;
    }
    this.wake();
  }

  /** Logs and counts deliveries a queueing batch dropped (CommitResult.droppedDeliveries). */
  noteDropped(dropped: readonly { id: string }[] | undefined): void {
    if (!dropped?.length) return;
    this.droppedCount += dropped.length;
    this.deps.log.warn(
      { dropped: dropped.length, deliveries: [...new Set(dropped.map((d) => d.id))].slice(0, 10), maxPending: this.config.maxPending ?? DEFAULT_MAX_PENDING },
      "webhook queue full: dropped the oldest pending deliveries",
    );
  }

  /** Looks for due deliveries now (after queueing some); cheap when a pass is already running. */
  wake(): void {
    if (this.closed) return;
    if (this.pass) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.again = false;
    this.pass = this.run().finally(() => {
      this.pass = undefined;
      // Woken after the last look at the database: look again.
      if (this.again) this.wake();
    });
  }

  /** Starts sending (this manager leads: cluster/leader.ts), beginning with what is pending in the database. */
  open(): void {
    this.closed = false;
    this.wake();
  }

  /** Stops sending and aborts requests in flight; what is pending stays for the next leader. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const c of this.inflight) c.abort();
  }

  /** Resolves when the sender is idle (tests). */
  async idle(): Promise<void> {
    while (this.pass) await this.pass;
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  /** Passes over the due deliveries until none is left, then sleeps until the next is due. */
  private async run(): Promise<void> {
    let trouble = false;
    const pause = this.config.troublePauseMs ?? TROUBLE_PAUSE_MS;
    try {
      do {
        this.again = false;
        for (const [key, u] of this.unrecorded) {
          if ((await this.record(u.d, u.ops)) === "unrecorded") break;
          this.unrecorded.delete(key);
        }
        if (this.unrecorded.size > 0) {
          trouble = true;
          break;
        }
        const due = await this.deps.store.dueWebhookDeliveries(this.now(), PASS_SIZE);
        const outcomes = await Promise.all(due.map((d) => this.attempt(d)));
        if (outcomes.includes("unrecorded")) {
          // The row is still due: trying it again at once would hammer the receiver while the database is away.
          trouble = true;
          this.again = false;
          break;
        }
        if (due.length === PASS_SIZE) this.again = true;
      } while (this.again && !this.closed);
    } catch (err) {
      trouble = true;
      this.deps.log.warn({ err }, `could not read pending webhook deliveries; trying again in ${pause / 1000} s`);
    }
    if (this.closed) return;
    let delay = pause;
    if (!trouble) {
      try {
        const next = await this.deps.store.nextWebhookDeliveryAt();
        delay = next === undefined ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, Math.max(0, next - this.now()));
      } catch {
        // delay stays the pause
      }
    }
    if (this.closed) return;
    const t = setTimeout(() => {
      if (this.timer === t) this.timer = undefined;
      this.wake();
    }, delay);
    t.unref();
    this.timer = t;
  }

  /** One attempt of one delivery; records its outcome. Never rejects. */
  private async attempt(d: WebhookDeliveryRecord): Promise<"recorded" | "unrecorded" | "stopped"> {
    const url = this.config.urls.find((u) => urlKey(u) === d.urlKey);
    const attempt = d.attempts + 1;
    if (url === undefined) {
      // The receiver was removed from the configuration since this was queued.
      this.deps.log.warn({ delivery: d.id, attempts: d.attempts }, "dropping a pending webhook delivery: its receiver is no longer configured");
      return this.record(d, [{ op: "webhook.done", id: d.id, urlKey: d.urlKey, attempt }]);
    }
    let body: AlertNotification;
    try {
      body = JSON.parse(d.body) as AlertNotification;
    } catch {
      this.deps.log.error({ delivery: d.id }, "dropping a pending webhook delivery whose stored body is not JSON");
      return this.record(d, [{ op: "webhook.done", id: d.id, urlKey: d.urlKey, attempt }]);
    }
    const maxAttempts = this.config.maxAttempts ?? 5;
    const shown = redactUrl(url);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "user-agent": "berth-manager",
      "x-berth-event": body.type,
      "x-berth-delivery": body.delivery,
    };
    if (this.config.secret) headers[SIGNATURE_HEADER] = signBody(d.body, this.config.secret);
    const ctl = new AbortController();
    this.inflight.add(ctl);
    const timer = setTimeout(() => ctl.abort(), this.config.timeoutMs ?? 5000);
    let status = 0;
    let error = "";
    try {
      const res = await (this.deps.fetch ?? fetch)(url, { method: "POST", headers, body: d.body, signal: ctl.signal });
      status = res.status;
      await res.arrayBuffer().catch(() => undefined);
    } catch (err) {
      error = ctl.signal.aborted ? "timed out" : errorText(err);
    } finally {
      clearTimeout(timer);
      this.inflight.delete(ctl);
    }
    // Stopped meanwhile (leadership lost): the row stays as it was, for the next leader.
    if (this.closed) return "stopped";
    const base = { correlationId: body.alert.id, project: "", actor: "alerts" };
    const payload = { url: shown, attempt, delivery: body.delivery, notification: body.type };
    if (status >= 200 && status < 300) {
      return this.record(d, [
        { op: "webhook.done", id: d.id, urlKey: d.urlKey, attempt },
        this.deps.ledger.op({ ...base, type: "webhook.delivered", reason: "Delivered", message: `${body.type} for ${body.alert.subject} delivered to ${shown} (HTTP ${status}, attempt ${attempt})`, payload: { ...payload, status } }),
      ]);
    }
    const willRetry = attempt < maxAttempts && (status === 0 || retryable(status));
    const what = status ? `HTTP ${status}` : error;
    this.deps.log.warn({ url: shown, attempt, status, error, willRetry, alert: body.alert.id, delivery: body.delivery }, "webhook delivery failed");
    const event = this.deps.ledger.op({
      ...base,
      type: "webhook.failed",
      reason: status ? "HttpError" : "RequestFailed",
      message: `${body.type} for ${body.alert.subject} to ${shown}: ${what} (attempt ${attempt} of ${maxAttempts}${willRetry ? ", retrying" : ", giving up"})`,
      payload: { ...payload, ...(status ? { status } : { error }), willRetry },
    });
    const outcome: WriteOp = willRetry
      ? { op: "webhook.retry", id: d.id, urlKey: d.urlKey, attempt, nextAttemptAt: this.now() + retryDelayMs(attempt + 1, this.config.backoffBaseMs ?? 1000), lastError: what }
      : { op: "webhook.done", id: d.id, urlKey: d.urlKey, attempt };
    return this.record(d, [outcome, event]);
  }

  /** The attempt's outcome and event in one batch; kept to record again when the database refuses it. */
  private async record(d: WebhookDeliveryRecord, ops: WriteOp[]): Promise<"recorded" | "unrecorded"> {
    try {
      await this.deps.store.commit(ops);
      this.unrecorded.delete(rowKey(d));
      return "recorded";
    } catch (err) {
      if (err instanceof ConflictError) {
        // Another manager (a leader that had not yet stopped) recorded this attempt first: its record stands.
        this.deps.log.debug({ err, delivery: d.id }, "a webhook attempt was recorded by someone else first");
        return "recorded";
      }
      this.deps.log.error({ err, delivery: d.id }, "could not record a webhook attempt; recording it again before anything else is sent");
      this.unrecorded.set(rowKey(d), { d, ops });
      return "unrecorded";
    }
  }
}

function errorText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
