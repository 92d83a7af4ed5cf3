import type { AlertRecord } from "../domain/records.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AcknowledgeAlertResponseSchema,
  AlertSchema,
  AlertService,
  AlertState,
  ListAlertsResponseSchema,
  MuteAlertResponseSchema,
  Severity,
  type Alert,
} from "@berth/proto/berth/v1/alert_pb.js";
import { actorOf, callerOf, canSee, requireRole, type Caller } from "../auth/caller.js";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError } from "../errors.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";

export interface AlertServiceDeps {
  store: Store;
  ledger: Ledger;
  now?: () => number;
}

/** Project-less alerts a project-scoped token may see: they are about the shared hosts its servers run on. */
export const SHARED_RULES = ["host_offline", "disk_low"] as const;
const MAX_LIST = 1000;
const MAX_MUTE_S = 30 * 24 * 3600;

const SEVERITY: Record<string, Severity> = { info: Severity.INFO, warning: Severity.WARNING, critical: Severity.CRITICAL };

export function alertToProto(a: AlertRecord): Alert {
  return create(AlertSchema, {
    id: a.id,
    rule: a.rule,
    subject: a.subject,
    severity: SEVERITY[a.severity] ?? Severity.UNSPECIFIED,
    state: a.state === "firing" ? AlertState.FIRING : AlertState.RESOLVED,
    firstSeen: timestampFromMs(a.firstSeen),
    lastSeen: timestampFromMs(a.lastSeen),
    acknowledgedBy: a.acknowledgedBy,
    ...(a.mutedUntil !== null ? { mutedUntil: timestampFromMs(a.mutedUntil) } : {}),
    message: a.message,
    project: a.project,
  });
}

/**
 * AlertService: alerts raised by the rules (`alerts/rules.ts`). A
 * project-scoped token sees its project's alerts and the host alerts
 * (offline, disk); acknowledging or muting a host alert concerns every
 * project on that host, so it needs an all-projects token.
 */
export function createAlertService(deps: AlertServiceDeps): ServiceImpl<typeof AlertService> {
  const { store, ledger } = deps;
  const now = deps.now ?? Date.now;

  function visible(caller: Caller, a: AlertRecord): boolean {
    if (a.project) return canSee(caller, a.project);
    return caller.project === null || (SHARED_RULES as readonly string[]).includes(a.rule);
  }

  /** The alert to change: visible to the caller (else NotFound) and in its project. */
  async function findForChange(caller: Caller, id: string, action: string): Promise<AlertRecord> {
    if (!id.trim()) throw new InvalidArgumentError("id", "required; list alerts with AlertService.ListAlerts");
    const a = await store.getAlert(id.trim());
    if (!a || !visible(caller, a)) throw new NotFoundError("alert", id, "list alerts with AlertService.ListAlerts");
    if (!a.project && caller.project !== null) {
      throw new PermissionDeniedError(`${action} of a host alert affects every project on the host; it needs an all-projects token (token "${caller.name}" is scoped to project "${caller.project}")`);
    }
    return a;
  }

  /** The alert as it is after `a` changed: gone meanwhile (its host removed) is NotFound. */
  async function reread(a: AlertRecord): Promise<AlertRecord> {
    const now = await store.getAlert(a.id);
    if (!now) throw new NotFoundError("alert", a.id, "list alerts with AlertService.ListAlerts");
    return now;
  }

  return {
    async listAlerts(req, ctx) {
      const caller = callerOf(ctx);
      const rows = await store.listAlerts({ includeResolved: req.includeResolved, project: caller.project, sharedRules: SHARED_RULES, limit: MAX_LIST });
      return create(ListAlertsResponseSchema, { alerts: rows.map(alertToProto) });
    },

    async acknowledgeAlert(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "AcknowledgeAlert");
      const a = await findForChange(caller, req.id, "AcknowledgeAlert");
      const actor = actorOf(caller);
      const at = now();
      await store.commit([
        { op: "alert.acknowledge", id: a.id, by: actor, at },
        ledger.op({
          type: "alert.acknowledged",
          project: a.project,
          hostId: a.hostId,
          serverId: a.serverId,
          actor,
          correlationId: a.id,
          message: `${a.rule} on ${a.subject} acknowledged by ${caller.name}`,
        }),
      ]);
      return create(AcknowledgeAlertResponseSchema, { alert: alertToProto(await reread(a)) });
    },

    async muteAlert(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "MuteAlert");
      if (req.durationSeconds > MAX_MUTE_S) throw new InvalidArgumentError("duration_seconds", `at most ${MAX_MUTE_S} (30 days); 0 unmutes`);
      const a = await findForChange(caller, req.id, "MuteAlert");
      const at = now();
      const until = req.durationSeconds > 0 ? at + req.durationSeconds * 1000 : null;
      await store.commit([
        { op: "alert.mute", id: a.id, until },
        ledger.op({
          type: "alert.muted",
          project: a.project,
          hostId: a.hostId,
          serverId: a.serverId,
          actor: actorOf(caller),
          correlationId: a.id,
          message: until !== null ? `${a.rule} on ${a.subject} muted for ${req.durationSeconds} s by ${caller.name}` : `${a.rule} on ${a.subject} unmuted by ${caller.name}`,
          payload: { mutedUntil: until !== null ? new Date(until).toISOString() : null },
        }),
      ]);
      return create(MuteAlertResponseSchema, { alert: alertToProto(await reread(a)) });
    },
  };
}
