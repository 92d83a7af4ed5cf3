/**
 * Rows as both engines return them, and the records they become. The schema is
 * the same on SQLite and PostgreSQL (migrations.ts), and the PostgreSQL pool
 * parses int8 as a number, so one codec serves both.
 */
import { clone, fromBinary, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { Phase, Protocol, ServerSpecSchema, ServerStatusSchema, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateSchema } from "@berth/proto/berth/v1/template_pb.js";
import type {
  TemplateRecord,
  AlertRecord,
  AlertState,
  CommandRecord,
  CommandState,
  DataDirRecord,
  EventInput,
  EventRecord,
  HostFacts,
  HostRecord,
  HostSchedule,
  LeaseRecord,
  WebhookDeliveryRecord,
  BackupPolicyFacts,
  BackupRecord,
  BackupState,
  BackupTargetConfig,
  BackupTargetRecord,
  Lifecycle,
  ObservedContainer,
  Role,
  ServerRecord,
  ServerChangeRecord,
  TokenRecord,
} from "../domain/records.js";
import { AlreadyExistsError, ConflictError } from "../errors.js";
import { LONE_SURROGATE } from "../text.js";
import { USAGE_BUCKET_MS, USAGE_SPAN_MAX_MS, type InstallLogRecord, type ServerPlacement, type UsageBucketRecord, type UsageSubjectKind, type WriteOp } from "./store.js";

/**
 * Text as every engine stores it: well-formed, without NUL.
 *
 * PostgreSQL's text cannot hold NUL (U+0000: "invalid byte sequence for
 * encoding UTF8: 0x00"), nor can jsonb hold the `\u0000` escape JSON writes
 * for it (serverFacts reads statuses as jsonb). Escaping it losslessly would
 * mean an escape layer over every text column and query parameter on one
 * engine only, for a character no berth text means, so NUL is replaced with
 * U+FFFD (the replacement character) on BOTH engines, and the same text reads
 * back whichever holds it (docs/design.md, the engine).
 *
 * A lone UTF-16 surrogate (half of a pair, what cutting a string by code units
 * in an emoji leaves) is replaced with U+FFFD too, as String.prototype
 * .toWellFormed does: in a plain column both drivers already wrote U+FFFD for
 * it, but in protobuf JSON (specs, statuses, container info) it was written
 * as a `\udXXX` escape that the decoder refuses ("invalid UTF8") on every
 * later read of the record.
 */
export function storableText(s: string): string {
  return UNSTORABLE.test(s) ? s.replace(UNSTORABLE_ALL, "\ufffd") : s;
}

const UNSTORABLE = /[\0\ud800-\udfff]/;
/** NUL, a high surrogate not followed by a low one, a low one not preceded by a high one. */
const UNSTORABLE_ALL = new RegExp(`\\0|${LONE_SURROGATE.source}`, "g");

/**
 * Which run of its container an observation saw, and how far into it: the
 * run's start time (the engine's clock, ms) × 4 plus 1 while the run goes
 * on (running, paused, restarting) or 2 once it ended (exited, dead,
 * removing). A Docker event or command result with a smaller key than the
 * stored one is older than it and is not written (observed_containers.run_key):
 * a "running" snapshot a command result took just before the container
 * crashed, arriving after the "die" event, would otherwise show a dead
 * container running until the next inventory. 0 (apply whatever is stored)
 * when the observation has no start time: a container never started, or an
 * observer that does not say (simulated agents).
 */
export function containerRunKey(c: ContainerInfo): number {
  const started = c.startedTime ? timestampMs(c.startedTime) : 0;
  if (!(started > 0)) return 0;
  const ended = c.state === "exited" || c.state === "dead" || c.state === "removing";
  return started * 4 + (ended ? 2 : 1);
}

/**
 * The end of an ordered container upsert (same text on both engines): the row
 * is left as it is when it holds a newer run than the observation.
 */
export const ORDERED_UPSERT = `
           WHERE excluded.run_key = 0 OR excluded.run_key >= observed_containers.run_key`;

/**
 * `v` with storableText applied to every string in it (values and keys, in
 * arrays, plain objects and protobuf messages; bytes left alone): what a
 * batch's operations become before either engine writes them, so what a
 * commit reports (its events) is what is stored. Objects with nothing to
 * replace are returned as they are (no copy); a copy keeps its prototype.
 */
/**
 * A batch as storable() makes it, except usage.write's buckets, passed as
 * they are: their only text is a kind and the id of a server or host the
 * manager read from the store, and walking 10,000 of them cost a flush more
 * than its inserts.
 */
export function storableBatch(batch: readonly WriteOp[]): readonly WriteOp[] {
  if (!batch.some((o) => o.op === "usage.write")) return storable(batch);
  return batch.map((o) => (o.op === "usage.write" ? o : storable(o)));
}

export function storable<T>(v: T): T {
  if (typeof v === "string") return storableText(v) as T;
  if (v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    v.forEach((x: unknown, i) => {
      const y = storable(x);
      if (y !== x) (out ??= [...v])[i] = y;
    });
    return (out ?? v) as T;
  }
  if (v instanceof Map || v instanceof Set) return v;
  let out: Record<string, unknown> | undefined;
  for (const [k, x] of Object.entries(v)) {
    const key = storableText(k);
    const y = storable(x);
    if (y === x && key === k) continue;
    out ??= Object.assign(Object.create(Object.getPrototypeOf(v) as object | null) as Record<string, unknown>, v);
    if (key !== k) delete out[k];
    out[key] = y;
  }
  return (out ?? v) as T;
}

export interface HostRow {
  id: string;
  name: string;
  secret_hash: string;
  created_at: number;
  removed_at: number | null;
  online: number;
  connected_since: number | null;
  last_heartbeat: number | null;
  facts_json: string;
  schedule_json: string;
}

/**
 * A host's schedule as stored (hosts.schedule_json, migration 13): '' for a
 * schedulable host without a drain, else its JSON. One canonical form: the
 * host.schedule operation's optimistic check compares the stored text with
 * the encoding of what the writer read.
 */
export function encodeSchedule(s: HostSchedule): string {
  if (!s.unschedulable && !s.drain && !s.capacity) return "";
  // Keys in a fixed order: a write that expects a schedule compares the text.
  return JSON.stringify({ unschedulable: s.unschedulable, ...(s.drain ? { drain: s.drain } : {}), ...(s.capacity ? { capacity: s.capacity } : {}) });
}

export function decodeSchedule(text: string): HostSchedule {
  return text === "" ? { unschedulable: false } : (JSON.parse(text) as HostSchedule);
}

export function hostFromRow(r: HostRow): HostRecord {
  return {
    id: r.id,
    name: r.name,
    secretHash: r.secret_hash,
    createdAt: r.created_at,
    removedAt: r.removed_at,
    online: r.online === 1,
    connectedSince: r.connected_since,
    lastHeartbeat: r.last_heartbeat,
    facts: JSON.parse(r.facts_json) as HostFacts,
    schedule: decodeSchedule(r.schedule_json),
  };
}

export interface ServerRow {
  id: string;
  project: string;
  name: string;
  host_id: string;
  generation: number;
  spec_json: string;
  status_json: string;
  data_initialized: number;
  lifecycle_json: string;
  created_at: number;
  updated_at: number;
  deleted_at: number | null;
  version: number;
  /** The position of the record's latest change (migration 10). */
  change_seq: number;
}

export function serverFromRow(r: ServerRow): ServerRecord {
  return {
    id: r.id,
    project: r.project,
    name: r.name,
    hostId: r.host_id,
    generation: r.generation,
    spec: fromJsonString(ServerSpecSchema, r.spec_json, { ignoreUnknownFields: true }),
    status: fromJsonString(ServerStatusSchema, r.status_json, { ignoreUnknownFields: true }),
    dataInitialized: r.data_initialized === 1,
    lifecycle: JSON.parse(r.lifecycle_json) as Lifecycle,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    deletedAt: r.deleted_at,
    version: Number(r.version),
  };
}

export interface TombstoneRow {
  server_id: string;
  project: string;
  host_id: string;
  change_seq: number;
}

/** The meta key of the position before which server changes are incomplete (tombstones dropped; store.ts serverChangesSince). */
export const SERVER_CHANGES_HORIZON = "server_changes_horizon";

/**
 * The meta key of the last server change position given (store.ts
 * serverChangeHead). A counter of its own, not MAX(change_seq): purging the
 * server with the highest position would hand that position out again.
 */
export const SERVER_CHANGE_COUNTER = "server_change_seq";

/**
 * store.ts serverChangesSince from its two reads, each in change order (at most
 * `limit` rows each): the first `limit` changes of both, in change order.
 */
export function serverChangesFromRows(live: readonly ServerRow[], gone: readonly TombstoneRow[], limit: number, decode: (r: ServerRow) => ServerRecord = serverFromRow): ServerChangeRecord[] {
  const changes: ServerChangeRecord[] = live.map((r) => ({ seq: Number(r.change_seq), serverId: r.id, server: decode(r), project: r.project, hostId: r.host_id }));
  if (gone.length === 0) return changes.slice(0, limit);
  for (const r of gone) changes.push({ seq: Number(r.change_seq), serverId: r.server_id, server: undefined, project: r.project, hostId: r.host_id });
  return changes.sort((x, y) => x.seq - y.seq).slice(0, limit);
}

export interface ObservedRow {
  host_id: string;
  container_id: string;
  server_id: string | null;
  manager_id: string | null;
  state: string;
  info_json: string;
  observed_at: number;
}

export function observedFromRow(r: ObservedRow): ObservedContainer {
  return {
    hostId: r.host_id,
    containerId: r.container_id,
    serverId: r.server_id,
    managerId: r.manager_id,
    state: r.state,
    info: fromJsonString(ContainerInfoSchema, r.info_json, { ignoreUnknownFields: true }),
    observedAt: r.observed_at,
  };
}

export interface CommandRow {
  id: string;
  server_id: string;
  host_id: string;
  payload: Buffer;
  state: CommandState;
  created_at: number;
  deadline_at: number;
  sent_at: number | null;
  finished_at: number | null;
  reason: string | null;
  message: string | null;
}

export function commandFromRow(r: CommandRow): CommandRecord {
  return {
    id: r.id,
    serverId: r.server_id,
    hostId: r.host_id,
    command: fromBinary(CommandSchema, r.payload),
    state: r.state,
    createdAt: r.created_at,
    deadlineAt: r.deadline_at,
    sentAt: r.sent_at,
    finishedAt: r.finished_at,
    reason: r.reason,
    message: r.message,
  };
}

/** A spec's host ports as reservation keys ("25565/tcp"), sorted and distinct, in one string. */
export function portKeys(ports: readonly PortMapping[]): string {
  return [...new Set(ports.map((p) => `${p.hostPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`))].sort().join(",");
}

/** portKeys of a stored spec_json (protobuf JSON: enum names, zero values omitted). */
export function portKeysOfSpecJson(json: string): string {
  const ports = (JSON.parse(json) as { ports?: { hostPort?: number; protocol?: string | number }[] }).ports ?? [];
  return [...new Set(ports.map((p) => `${p.hostPort ?? 0}/${p.protocol === "PROTOCOL_UDP" || p.protocol === Protocol.UDP ? "udp" : "tcp"}`))].sort().join(",");
}

/** An `events` row as SQLite returns it. */
export interface EventRow {
  id: number;
  time: number;
  project: string;
  server_id: string;
  host_id: string;
  type: string;
  reason: string;
  message: string;
  actor: string;
  correlation_id: string;
  payload_json: string;
}

export function eventFromRow(r: EventRow): EventRecord {
  return {
    id: r.id,
    time: r.time,
    project: r.project,
    serverId: r.server_id,
    hostId: r.host_id,
    type: r.type,
    reason: r.reason,
    message: r.message,
    actor: r.actor,
    correlationId: r.correlation_id,
    payloadJson: r.payload_json,
  };
}

export interface AlertRow {
  id: string;
  rule: string;
  subject: string;
  project: string;
  host_id: string;
  server_id: string;
  severity: string;
  state: AlertState;
  message: string;
  first_seen: number;
  last_seen: number;
  resolved_at: number | null;
  acknowledged_by: string;
  acknowledged_at: number | null;
  muted_until: number | null;
}

export function alertFromRow(r: AlertRow): AlertRecord {
  return {
    id: r.id,
    rule: r.rule,
    subject: r.subject,
    project: r.project,
    hostId: r.host_id,
    serverId: r.server_id,
    severity: r.severity,
    state: r.state,
    message: r.message,
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
    resolvedAt: r.resolved_at,
    acknowledgedBy: r.acknowledged_by,
    acknowledgedAt: r.acknowledged_at,
    mutedUntil: r.muted_until,
  };
}

/**
 * alerts_one_firing refused an alert: another evaluation (another manager's)
 * fired this rule on this subject first. ConflictError is the evaluator's
 * "lost a race, decide again" (alerts/evaluator.ts); both engines throw this.
 */
export function alertAlreadyFiring(a: Pick<AlertRecord, "rule" | "subject">): ConflictError {
  return new ConflictError(`alert ${a.rule} on ${a.subject} is already firing (fired by another evaluation meanwhile); read the firing alerts again and decide again`);
}

export interface TokenRow {
  id: string;
  name: string;
  role: string;
  project: string | null;
  created_at: number;
  created_by: string;
  revoked_at: number | null;
  last_used_at: number | null;
}

export function tokenFromRow(r: TokenRow): TokenRecord {
  return {
    id: r.id,
    name: r.name,
    role: r.role as Role,
    project: r.project,
    createdAt: r.created_at,
    createdBy: r.created_by,
    revokedAt: r.revoked_at,
    lastUsedAt: r.last_used_at,
  };
}

/** The record of an event appended with `id` at `at` (what a commit reports and listeners hear). */
export function appendedEvent(id: number, at: number, e: EventInput): EventRecord {
  return {
    id,
    time: at,
    type: e.type,
    project: e.project ?? "",
    serverId: e.serverId ?? "",
    hostId: e.hostId ?? "",
    reason: e.reason ?? "",
    message: e.message ?? "",
    actor: e.actor ?? "",
    correlationId: e.correlationId ?? "",
    payloadJson: JSON.stringify(e.payload ?? {}),
    // Not stored: handed on to this manager's listeners with the committed event.
    ...(e.command ? { command: e.command } : {}),
  };
}

export interface LeaseRow {
  name: string;
  holder: string;
  epoch: number;
  expires_at: number;
}

export function leaseFromRow(r: LeaseRow): LeaseRecord {
  return { name: r.name, holder: r.holder, epoch: r.epoch, expiresAt: r.expires_at };
}

export interface WebhookDeliveryRow {
  id: string;
  url_key: string;
  body: string;
  attempts: number;
  next_attempt_at: number;
  last_error: string;
  created_at: number;
}

export function webhookDeliveryFromRow(r: WebhookDeliveryRow): WebhookDeliveryRecord {
  return {
    id: r.id,
    urlKey: r.url_key,
    body: r.body,
    attempts: Number(r.attempts),
    nextAttemptAt: Number(r.next_attempt_at),
    lastError: r.last_error,
    createdAt: Number(r.created_at),
  };
}

/** webhook.retry / webhook.done refused: the delivery was attempted, finished or dropped meanwhile. */
export function deliveryMoved(id: string, attempt: number): ConflictError {
  return new ConflictError(`webhook delivery ${id} is no longer pending after ${attempt - 1} attempt(s) (another manager attempted or finished it, or it was dropped); nothing to record`);
}

export interface BackupTargetRow {
  id: string;
  name: string;
  config_json: string;
  sealed_secret: string;
  created_at: number;
  created_by: string;
}

export function backupTargetFromRow(r: BackupTargetRow): BackupTargetRecord {
  return {
    id: r.id,
    name: r.name,
    config: JSON.parse(r.config_json) as BackupTargetConfig,
    sealedSecret: r.sealed_secret,
    createdAt: Number(r.created_at),
    createdBy: r.created_by,
  };
}

/** backup_targets' columns in insert order, and a target's values for them. */
export const BACKUP_TARGET_COLUMNS = ["id", "name", "config_json", "sealed_secret", "created_at", "created_by"] as const;

export function backupTargetValues(t: BackupTargetRecord): unknown[] {
  return [t.id, t.name, JSON.stringify(t.config), t.sealedSecret, t.createdAt, t.createdBy];
}

export interface BackupRow {
  id: string;
  server_id: string;
  server_name: string;
  project: string;
  host_id: string;
  target_id: string;
  key: string;
  state: BackupState;
  reason: string;
  message: string;
  live: number;
  compression: string;
  archive_bytes: number;
  raw_bytes: number;
  files: number;
  sha256: string;
  bytes_done: number;
  bytes_total: number;
  locked: number;
  created_by: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export function backupFromRow(r: BackupRow): BackupRecord {
  return {
    id: r.id,
    serverId: r.server_id,
    serverName: r.server_name,
    project: r.project,
    hostId: r.host_id,
    targetId: r.target_id,
    key: r.key,
    state: r.state,
    reason: r.reason,
    message: r.message,
    live: Number(r.live) === 1,
    compression: r.compression as BackupRecord["compression"],
    archiveBytes: Number(r.archive_bytes),
    rawBytes: Number(r.raw_bytes),
    files: Number(r.files),
    sha256: r.sha256,
    bytesDone: Number(r.bytes_done),
    bytesTotal: Number(r.bytes_total),
    locked: Number(r.locked) === 1,
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
    startedAt: r.started_at === null ? null : Number(r.started_at),
    finishedAt: r.finished_at === null ? null : Number(r.finished_at),
  };
}

/** The column of each BackupRecord field (one mapping for insert and backup.update, on both engines). */
const BACKUP_COLUMN_OF: { readonly [K in keyof BackupRecord]-?: string } = {
  id: "id",
  serverId: "server_id",
  serverName: "server_name",
  project: "project",
  hostId: "host_id",
  targetId: "target_id",
  key: "key",
  state: "state",
  reason: "reason",
  message: "message",
  live: "live",
  compression: "compression",
  archiveBytes: "archive_bytes",
  rawBytes: "raw_bytes",
  files: "files",
  sha256: "sha256",
  bytesDone: "bytes_done",
  bytesTotal: "bytes_total",
  locked: "locked",
  createdBy: "created_by",
  createdAt: "created_at",
  startedAt: "started_at",
  finishedAt: "finished_at",
};

/** A field's value as stored: flags as 0/1. */
function backupColumnValue(v: unknown): unknown {
  return typeof v === "boolean" ? (v ? 1 : 0) : v;
}

/** Every column of a backup row with its value, in one order (backup.insert). */
export function backupColumns(b: BackupRecord): { column: string; value: unknown }[] {
  return (Object.keys(BACKUP_COLUMN_OF) as (keyof BackupRecord)[]).map((k) => ({ column: BACKUP_COLUMN_OF[k], value: backupColumnValue(b[k]) }));
}

/**
 * The columns backup.update writes: only the fields present in `set` (a key
 * given as undefined is absent). The fields the contract keeps fixed (id,
 * serverId, targetId, key, createdAt) are refused even when a caller slips
 * them in past the type.
 */
export function backupSetColumns(set: Partial<BackupRecord>): { column: string; value: unknown }[] {
  const out: { column: string; value: unknown }[] = [];
  for (const [k, v] of Object.entries(set)) {
    if (v === undefined) continue;
    if (!(k in BACKUP_COLUMN_OF) || BACKUP_FIXED.has(k)) throw new Error(`backup.update cannot set ${k}`);
    out.push({ column: BACKUP_COLUMN_OF[k as keyof BackupRecord], value: backupColumnValue(v) });
  }
  return out;
}

const BACKUP_FIXED: ReadonlySet<string> = new Set(["id", "serverId", "targetId", "key", "createdAt"]);

/** backupTarget.insert refused: the name (or, for a caller's own id, the id) is taken. */
export function backupTargetTaken(t: Pick<BackupTargetRecord, "id" | "name">, by: "name" | "id"): AlreadyExistsError {
  return by === "name"
    ? new AlreadyExistsError(`a backup target named "${t.name}" already exists; pick another name, or delete that target first`)
    : new AlreadyExistsError(`a backup target with id ${t.id} already exists`);
}

/** backup.insert refused: a backup with this id exists. */
export function backupTaken(id: string): AlreadyExistsError {
  return new AlreadyExistsError(`backup ${id} already exists`);
}

/** backup.update's ifState did not hold: the backup moved on meanwhile (a deadline failed it, another manager finished it). */
export function backupStateMoved(id: string, actual: BackupState, expected: readonly BackupState[]): ConflictError {
  const wanted = expected.length === 0 ? "no state (an empty ifState)" : expected.join(" or ");
  return new ConflictError(`backup ${id} is ${actual}, not ${wanted} (it changed meanwhile); read it again and decide again`);
}

/** backup.delete refused: the backup is locked. */
export function backupLocked(id: string): ConflictError {
  return new ConflictError(`backup ${id} is locked; unlock it first if it really should go`);
}

/**
 * An inventory's check of a directory, as stored: a size the agent has not
 * measured since it started stands for the size already known (0 for a
 * directory not seen before), so an agent's restart does not show every
 * directory as empty until its background sizer gets to it.
 */
export function withKnownSize(reported: DataDirRecord, known: { present: boolean; sizeBytes: number } | undefined): DataDirRecord {
  const { sizeUnknown, ...d } = reported;
  if (!sizeUnknown) return d;
  return { ...d, sizeBytes: known?.present ? known.sizeBytes : 0 };
}

/** A server's placement (orphan detection) from its row: the hosts a transfer involves count as its own there. */
export function placementOfRow(r: { id: string; project: string; name: string; host_id: string; created_at: number; spec_json: string; lifecycle_json: string }): ServerPlacement {
  const lc = JSON.parse(r.lifecycle_json) as Lifecycle;
  const t = lc.dataOp?.transfer;
  const transferHosts = [...(t ? [t.sourceHost, t.targetHost] : []), ...(lc.strayCopies ?? []).map((c) => c.hostId)];
  return {
    id: r.id,
    project: r.project,
    name: r.name,
    hostId: r.host_id,
    image: (JSON.parse(r.spec_json) as { image?: string }).image ?? "",
    createdAt: r.created_at,
    ...(lc.adoptedContainerId ? { adoptedContainerId: lc.adoptedContainerId } : {}),
    ...(transferHosts.length > 0 ? { transferHosts } : {}),
  };
}

/** A row of backupPolicyFacts' query (both engines). */
export interface PolicyFactsRow {
  id: string;
  name: string;
  project: string;
  host_id: string;
  created_at: number | string;
  alert_after_hours: number | string;
  newest_success_at: number | string | null;
}

export function policyFactsFromRow(r: PolicyFactsRow): BackupPolicyFacts {
  return {
    serverId: r.id,
    serverName: r.name,
    project: r.project,
    hostId: r.host_id,
    createdAt: Number(r.created_at),
    alertAfterHours: Number(r.alert_after_hours),
    newestSuccessAt: r.newest_success_at === null ? null : Number(r.newest_success_at),
  };
}

/**
 * A phase read out of a status's protobuf JSON (its name, "PHASE_FAILED", or
 * a number) as the `phase` column spells it ("FAILED"); "" when unset.
 */
export function phaseColumnName(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return "";
  const name = typeof v === "number" ? (Phase[v] ?? "") : v.replace(/^PHASE_/, "");
  return name === "UNSPECIFIED" ? "" : name;
}

// --- usage history (migration 14; store.ts usage.write, usageBuckets) ---

/** A usage_buckets row (migration 14). */
export interface UsageBucketRow {
  kind: string;
  subject_id: string;
  bucket_at: number;
  samples: number;
  cpu_percent: number;
  memory_bytes: number;
  memory_max_bytes: number;
  memory_limit_bytes: number | null;
  net_rx_bps: number;
  net_tx_bps: number;
  io_read_bps: number;
  io_write_bps: number;
  pids: number;
}

export function usageBucketFromRow(r: UsageBucketRow): UsageBucketRecord {
  return {
    kind: r.kind as UsageSubjectKind,
    subjectId: r.subject_id,
    at: Number(r.bucket_at),
    samples: r.samples,
    cpuPercent: r.cpu_percent,
    memoryBytes: r.memory_bytes,
    memoryMaxBytes: r.memory_max_bytes,
    ...(r.memory_limit_bytes === null ? {} : { memoryLimitBytes: r.memory_limit_bytes }),
    netRxBps: r.net_rx_bps,
    netTxBps: r.net_tx_bps,
    ioReadBps: r.io_read_bps,
    ioWriteBps: r.io_write_bps,
    pids: r.pids,
  };
}

/** `a` weighted by `a.samples` and `b` by `b.samples`: the merge of two parts of one bucket (usage.write), as SQL on the conflicting row. */
const weighted = (col: string) => `${col} = (usage_buckets.${col} * usage_buckets.samples + excluded.${col} * excluded.samples) / (usage_buckets.samples + excluded.samples)`;
const AVERAGED = ["cpu_percent", "memory_bytes", "net_rx_bps", "net_tx_bps", "io_read_bps", "io_write_bps", "pids"];

/** The conflict clause of a bucket write, for SQLite (MAX) or PostgreSQL (GREATEST). */
export function usageUpsertClause(greatest: "MAX" | "GREATEST"): string {
  return `ON CONFLICT (bucket_at, kind, subject_id) DO UPDATE SET
    ${AVERAGED.map(weighted).join(",\n    ")},
    memory_max_bytes = ${greatest}(usage_buckets.memory_max_bytes, excluded.memory_max_bytes),
    memory_limit_bytes = excluded.memory_limit_bytes,
    samples = usage_buckets.samples + excluded.samples`;
}

/** The bucket starts in (after, upTo], oldest first (UsageReads.usageBuckets). */
export function usageBucketStarts(after: number, upTo: number): number[] {
  if (!(upTo - after <= USAGE_SPAN_MAX_MS)) throw new RangeError(`usage buckets are read over at most ${USAGE_SPAN_MAX_MS / 3_600_000} h (asked ${(upTo - after) / 3_600_000} h)`);
  const out: number[] = [];
  for (let t = (Math.floor(after / USAGE_BUCKET_MS) + 1) * USAGE_BUCKET_MS; t <= upTo; t += USAGE_BUCKET_MS) out.push(t);
  return out;
}

/** Buckets in the table's key order (bucket_at, kind, subject_id): appended in order, and locked in one order by managers writing some of the same keys. */
export function sortedUsageBuckets(buckets: readonly UsageBucketRecord[]): UsageBucketRecord[] {
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return [...buckets].sort((a, b) => a.at - b.at || cmp(a.kind, b.kind) || cmp(a.subjectId, b.subjectId));
}

/** usage.write's precondition on each bucket. */
export function checkUsageBucket(b: UsageBucketRecord): void {
  if (!Number.isSafeInteger(b.at) || b.at % USAGE_BUCKET_MS !== 0) throw new RangeError(`usage bucket of ${b.kind} ${b.subjectId} starts at ${b.at}, not a multiple of ${USAGE_BUCKET_MS} ms`);
}

export const USAGE_COLUMNS = "kind, subject_id, bucket_at, samples, cpu_percent, memory_bytes, memory_max_bytes, memory_limit_bytes, net_rx_bps, net_tx_bps, io_read_bps, io_write_bps, pids";

// templates (migration 15)

export interface TemplateRow {
  id: string;
  project: string;
  name: string;
  version: number | string;
  template_json: string;
  built_in: number;
  created_at: number | string;
  updated_at: number | string;
  created_by: string;
}

/** A stored template; the columns win over what its JSON holds. */
export function templateFromRow(r: TemplateRow): TemplateRecord {
  const template = fromJsonString(TemplateSchema, r.template_json, { ignoreUnknownFields: true });
  const rec: TemplateRecord = {
    id: r.id,
    project: r.project,
    name: r.name,
    version: Number(r.version),
    template,
    builtIn: Number(r.built_in) === 1,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    createdBy: r.created_by,
  };
  Object.assign(template, {
    id: rec.id,
    project: rec.project,
    name: rec.name,
    version: BigInt(rec.version),
    builtIn: rec.builtIn,
    createTime: timestampFromMs(rec.createdAt),
    updateTime: timestampFromMs(rec.updatedAt),
  });
  return rec;
}

/** templates' columns in insert order, and a template's values for them. */
export const TEMPLATE_COLUMNS = ["id", "project", "name", "version", "template_json", "built_in", "created_at", "updated_at", "created_by"] as const;

export function templateValues(t: TemplateRecord): unknown[] {
  return [t.id, t.project, t.name, t.version, templateJson(t), t.builtIn ? 1 : 0, t.createdAt, t.updatedAt, t.createdBy];
}

/** The stored JSON: the content only (the record's own fields are columns). */
export function templateJson(t: TemplateRecord): string {
  const m = clone(TemplateSchema, t.template);
  m.id = "";
  m.project = "";
  m.name = t.name;
  m.version = 0n;
  m.builtIn = false;
  m.createTime = undefined;
  m.updateTime = undefined;
  return toJsonString(TemplateSchema, m);
}

/** template.insert / template.update refused: the name (or the id) is taken. */
export function templateTaken(t: Pick<TemplateRecord, "id" | "name" | "project">, by: "name" | "id"): AlreadyExistsError {
  return by === "name"
    ? new AlreadyExistsError(`a template named "${t.name}" already exists ${t.project ? `in project ${t.project}` : "among the global templates"}; pick another name, or update that template`)
    : new AlreadyExistsError(`a template with id ${t.id} already exists`);
}

/** template.update refused: someone changed it since it was read. */
export function templateMoved(id: string, expect: number, actual: number): ConflictError {
  return new ConflictError(`template ${id} is at version ${actual}, not ${expect}: someone changed it meanwhile; read it again and retry`);
}

/** An install_logs row (migration 17) as both drivers return it. */
export interface InstallLogRow {
  server_id: string;
  attempt: number | string;
  command_id: string;
  started_at: number | string;
  finished_at: number | string;
  exit_code: number | string;
  timed_out: number | string;
  truncated: number | string;
  log: Uint8Array;
}

export const INSTALL_LOG_COLUMNS = ["server_id", "attempt", "command_id", "started_at", "finished_at", "exit_code", "timed_out", "truncated", "log"] as const;

export function installLogValues(r: InstallLogRecord): unknown[] {
  return [r.serverId, r.attempt, r.commandId, r.startedAt, r.finishedAt, r.exitCode, r.timedOut ? 1 : 0, r.truncated ? 1 : 0, Buffer.from(r.log)];
}

export function installLogFromRow(r: InstallLogRow): InstallLogRecord {
  return {
    serverId: r.server_id,
    attempt: Number(r.attempt),
    commandId: r.command_id,
    startedAt: Number(r.started_at),
    finishedAt: Number(r.finished_at),
    exitCode: Number(r.exit_code),
    timedOut: Number(r.timed_out) === 1,
    truncated: Number(r.truncated) === 1,
    log: new Uint8Array(r.log),
  };
}
