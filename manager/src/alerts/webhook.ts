import { createHmac } from "node:crypto";
import { newId } from "../ids.js";
import type { EventInput, AlertRecord } from "../domain/records.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

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
 * POSTs alert notifications to the configured receivers, retrying with
 * exponential backoff, and records every attempt in the ledger
 * (`webhook.delivered` / `webhook.failed`). Deliveries live in memory: a
 * notification still retrying when the manager stops is not sent again.
 */
export class WebhookNotifier {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inflight = new Set<AbortController>();
  private closed = false;

  constructor(
    private readonly config: WebhookConfig,
    private readonly deps: {
      /** Where each attempt is recorded (its event, one commit each). */
      store: Pick<Store, "commit">;
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

  notify(type: AlertNotificationType, alert: AlertRecord): void {
    if (this.closed || !this.enabled) return;
    const now = this.deps.now ?? Date.now;
    const body: AlertNotification = {
      type,
      delivery: newId("dlv"),
      managerId: this.deps.managerId,
      sentAt: new Date(now()).toISOString(),
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
    // attempt() never rejects: it records and logs its own failures.
    for (const url of this.config.urls) void this.attempt(url, json, body, 1);
  }

  /** Takes notifications again after close() (this manager leads again: cluster/leader.ts). */
  open(): void {
    this.closed = false;
  }

  /** Stops retries and aborts requests in flight. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of this.inflight) c.abort();
  }

  private async attempt(url: string, json: string, body: AlertNotification, attempt: number): Promise<void> {
    if (this.closed) return;
    const maxAttempts = this.config.maxAttempts ?? 5;
    const shown = redactUrl(url);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "user-agent": "berth-manager",
      "x-berth-event": body.type,
      "x-berth-delivery": body.delivery,
    };
    if (this.config.secret) headers[SIGNATURE_HEADER] = signBody(json, this.config.secret);
    const ctl = new AbortController();
    this.inflight.add(ctl);
    const timer = setTimeout(() => ctl.abort(), this.config.timeoutMs ?? 5000);
    let status = 0;
    let error = "";
    try {
      const res = await (this.deps.fetch ?? fetch)(url, { method: "POST", headers, body: json, signal: ctl.signal });
      status = res.status;
      await res.arrayBuffer().catch(() => undefined);
    } catch (err) {
      error = ctl.signal.aborted ? "timed out" : errorText(err);
    } finally {
      clearTimeout(timer);
      this.inflight.delete(ctl);
    }
    if (this.closed) return;
    const base = { correlationId: body.alert.id, project: "", actor: "alerts" };
    const payload = { url: shown, attempt, delivery: body.delivery, notification: body.type };
    if (status >= 200 && status < 300) {
      await this.record({ ...base, type: "webhook.delivered", reason: "Delivered", message: `${body.type} for ${body.alert.subject} delivered to ${shown} (HTTP ${status}, attempt ${attempt})`, payload: { ...payload, status } });
      return;
    }
    const willRetry = attempt < maxAttempts && (status === 0 || retryable(status));
    const what = status ? `HTTP ${status}` : error;
    await this.record({
      ...base,
      type: "webhook.failed",
      reason: status ? "HttpError" : "RequestFailed",
      message: `${body.type} for ${body.alert.subject} to ${shown}: ${what} (attempt ${attempt} of ${maxAttempts}${willRetry ? ", retrying" : ", giving up"})`,
      payload: { ...payload, ...(status ? { status } : { error }), willRetry },
    });
    this.deps.log.warn({ url: shown, attempt, status, error, willRetry, alert: body.alert.id }, "webhook delivery failed");
    if (!willRetry || this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      void this.attempt(url, json, body, attempt + 1);
    }, retryDelayMs(attempt + 1, this.config.backoffBaseMs ?? 1000));
    t.unref();
    this.timers.add(t);
  }

  /** The attempt's event; a database that refuses it costs the record, not the delivery or its retries. */
  private async record(e: EventInput): Promise<void> {
    try {
      await this.deps.store.commit([this.deps.ledger.op(e)]);
    } catch (err) {
      this.deps.log.error({ err, type: e.type, alert: e.correlationId }, "could not record a webhook attempt in the ledger; the delivery itself is unaffected");
    }
  }
}

function errorText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
