/**
 * plan(): the reconciler's decisions, as a pure function of what the server
 * should be (spec), what the host reports (observed) and what is in flight.
 * No I/O: everything it needs is in PlanInput, everything it decides is in Plan.
 *
 *                     create
 *                       │
 *                       ▼
 *   ┌──────────── Pending/Creating ───────────┐
 *   │ desired running        desired stopped  │
 *   ▼                                         ▼
 * Starting ──► Running ◄──► Paused         Stopped
 *   ▲            │  ▲                       │  ▲
 *   │   Stopping ◄┘  └──────── Starting ◄───┘  │
 *   │      └──────────────► Stopped ───────────┘
 *   │
 *   └── Missing (container gone, data present) ── Start recreates it
 *
 *   any ──► Unknown   (host offline; never shown as Stopped)
 *   any ──► Failed    (operation failed or passed its deadline; Start/Rebuild retry)
 *   any ──► DataLost  (data directory gone for a server that had data)
 *   any ──► Deleted   (soft delete: container removed, data and record kept)
 */
import { CommandKind, DataPolicy, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import type { ConditionFact } from "./conditions.js";

/** Deadlines per command kind: past them, the operation has failed. */
export const COMMAND_DEADLINE_MS: Record<CommandKind, number> = {
  [CommandKind.UNSPECIFIED]: 30_000,
  [CommandKind.ENSURE_CONTAINER]: 180_000,
  [CommandKind.ENSURE_RUNNING]: 180_000,
  [CommandKind.ENSURE_STOPPED]: 60_000,
  [CommandKind.ENSURE_PAUSED]: 30_000,
  [CommandKind.ENSURE_REMOVED]: 60_000,
  [CommandKind.REMOVE_DATA]: 120_000,
  [CommandKind.CHECK_DATA]: 30_000,
};

export interface InflightCommand {
  id: string;
  kind: CommandKind;
  createdAt: number;
  deadlineAt: number;
}

export interface FinishedCommand {
  kind: CommandKind;
  state: "succeeded" | "failed" | "expired";
  reason: string;
  message: string;
  createdAt: number;
}

export interface PlanInput {
  now: number;
  spec: ServerSpec;
  generation: number;
  specHash: string;
  deleted: boolean;
  /** The data directory has been seen at least once: its absence now means data loss. */
  dataInitialized: boolean;
  /** When the operator last asked for something (create, start, stop, ...). */
  lastActionAt: number;
  hostConnected: boolean;
  /** This server's containers on its host, as last reported (normally 0 or 1). */
  containers: readonly ContainerInfo[];
  /** The data directory as last reported; undefined if never checked. */
  data: { present: boolean } | undefined;
  inflight: InflightCommand | undefined;
  lastFinished: FinishedCommand | undefined;
}

export interface PlannedCommand {
  kind: CommandKind;
  dataPolicy: DataPolicy;
}

export interface Plan {
  phase: Phase;
  reason: string;
  message: string;
  conditions: ConditionFact[];
  /** The generation the observed container runs (0 if none). */
  observedGeneration: number;
  /** A new command to issue (only when nothing is in flight). */
  command?: PlannedCommand;
  /** The in-flight command has passed its deadline and must be marked expired. */
  expireInflight?: boolean;
  /** Reconcile again after this long even if nothing else happens (deadlines). */
  requeueAfterMs?: number;
}

const GENERATION_LABEL = "berth.generation";
const HASH_LABEL = "berth.spec-hash";

/** Failure reasons a command past its deadline leaves behind. */
const TIMEOUT_REASON: Partial<Record<CommandKind, string>> = {
  [CommandKind.ENSURE_CONTAINER]: "CreateTimeout",
  [CommandKind.ENSURE_RUNNING]: "StartTimeout",
  [CommandKind.ENSURE_STOPPED]: "StopTimeout",
  [CommandKind.ENSURE_PAUSED]: "PauseTimeout",
  [CommandKind.ENSURE_REMOVED]: "RemoveTimeout",
};

export function plan(input: PlanInput): Plan {
  const container = pickContainer(input.containers, input.specHash);
  const facts = conditionFacts(input, container);
  const observedGeneration = container ? Number(container.labels[GENERATION_LABEL] ?? 0) : 0;
  const base = { conditions: facts, observedGeneration };

  // 1. Nothing is known about a host that is not connected: never guess "Stopped".
  if (!input.hostConnected) {
    const expire = input.inflight !== undefined && input.now >= input.inflight.deadlineAt;
    return {
      ...base,
      phase: Phase.UNKNOWN,
      reason: "HostOffline",
      message: "the host's agent is not connected; showing the last known state is not possible",
      ...(expire ? { expireInflight: true } : {}),
    };
  }

  // 2. One operation at a time: wait for the in-flight command, or fail it at its deadline.
  if (input.inflight) {
    const f = input.inflight;
    if (input.now >= f.deadlineAt) {
      return {
        ...base,
        phase: Phase.FAILED,
        reason: TIMEOUT_REASON[f.kind] ?? "Timeout",
        message: `${commandName(f.kind)} did not finish within ${Math.round((f.deadlineAt - f.createdAt) / 1000)}s`,
        expireInflight: true,
      };
    }
    return {
      ...base,
      ...inflightPhase(f.kind, container, input.deleted),
      requeueAfterMs: f.deadlineAt - input.now,
    };
  }

  // 3. A failure since the operator's last action stands until they act again.
  const last = input.lastFinished;
  if (last && last.state !== "succeeded" && last.createdAt >= input.lastActionAt && !input.deleted) {
    return {
      ...base,
      phase: Phase.FAILED,
      // An expired command's stored reason is the agent-facing "DeadlineExceeded": report the
      // same per-kind reason as at the moment of expiry, so the status does not flap.
      reason: last.state === "expired" ? (TIMEOUT_REASON[last.kind] ?? "Timeout") : last.reason || "CommandFailed",
      message: last.message,
    };
  }

  // 4. Soft-deleted: the container goes, the data and the record stay.
  if (input.deleted) {
    if (input.containers.length > 0) return issue(base, Phase.DELETED, "Removing", "removing the container", CommandKind.ENSURE_REMOVED);
    return { ...base, phase: Phase.DELETED, reason: "Deleted", message: "deleted; data kept on the host" };
  }

  const dataGone = input.dataInitialized && input.data !== undefined && !input.data.present;
  if (dataGone) {
    return {
      ...base,
      phase: Phase.DATA_LOST,
      reason: "DataDirectoryMissing",
      message: "the data directory is gone from the host; purge the server, or start it with allow_empty_data",
    };
  }

  const dataPolicy = input.dataInitialized ? DataPolicy.REQUIRE : DataPolicy.CREATE;
  const desired = input.spec.desiredState;

  // 5. No container.
  if (!container) {
    if (desired === DesiredState.STOPPED) {
      if (input.dataInitialized) {
        return { ...base, phase: Phase.MISSING, reason: "ContainerMissing", message: "the container is gone and the data is kept; start the server to recreate it" };
      }
      return issue(base, Phase.CREATING, "Creating", "creating the container", CommandKind.ENSURE_CONTAINER, dataPolicy);
    }
    return issue(base, Phase.CREATING, "Creating", "creating and starting the container", CommandKind.ENSURE_RUNNING, dataPolicy);
  }

  // 6. A container exists: drive it to the desired state.
  const state = container.state;
  switch (desired) {
    case DesiredState.STOPPED:
      if (state === "running" || state === "paused" || state === "restarting") {
        return issue(base, Phase.STOPPING, "Stopping", "stopping the container", CommandKind.ENSURE_STOPPED);
      }
      return { ...base, phase: Phase.STOPPED, reason: "Stopped", message: exitMessage(container) };
    case DesiredState.PAUSED:
      if (state === "paused") return { ...base, phase: Phase.PAUSED, reason: "Paused", message: "the container is paused" };
      if (state === "running") return issue(base, Phase.STOPPING, "Pausing", "pausing the container", CommandKind.ENSURE_PAUSED);
      return issue(base, Phase.STARTING, "Starting", "starting the container before pausing it", CommandKind.ENSURE_RUNNING, dataPolicy);
    default:
      if (state === "running") {
        return { ...base, phase: Phase.RUNNING, reason: "Running", message: "the container is running" };
      }
      return issue(base, Phase.STARTING, "Starting", "starting the container", CommandKind.ENSURE_RUNNING, dataPolicy);
  }
}

function issue(
  base: Pick<Plan, "conditions" | "observedGeneration">,
  phase: Phase,
  reason: string,
  message: string,
  kind: CommandKind,
  dataPolicy: DataPolicy = DataPolicy.UNSPECIFIED,
): Plan {
  return { ...base, phase, reason, message, command: { kind, dataPolicy } };
}

/** Prefers the container running the current spec, then a running one, then the newest. */
function pickContainer(containers: readonly ContainerInfo[], hash: string): ContainerInfo | undefined {
  if (containers.length <= 1) return containers[0];
  return (
    containers.find((c) => c.labels[HASH_LABEL] === hash) ??
    containers.find((c) => c.state === "running") ??
    containers[containers.length - 1]
  );
}

function inflightPhase(kind: CommandKind, container: ContainerInfo | undefined, deleted: boolean): Pick<Plan, "phase" | "reason" | "message"> {
  if (deleted) return { phase: Phase.DELETED, reason: "Removing", message: "removing the container" };
  switch (kind) {
    case CommandKind.ENSURE_CONTAINER:
      return { phase: Phase.CREATING, reason: "Creating", message: "creating the container" };
    case CommandKind.ENSURE_RUNNING:
      return container
        ? { phase: Phase.STARTING, reason: "Starting", message: "starting the container" }
        : { phase: Phase.CREATING, reason: "Creating", message: "creating and starting the container" };
    case CommandKind.ENSURE_STOPPED:
      return { phase: Phase.STOPPING, reason: "Stopping", message: "stopping the container" };
    case CommandKind.ENSURE_PAUSED:
      return { phase: Phase.STOPPING, reason: "Pausing", message: "pausing the container" };
    case CommandKind.ENSURE_REMOVED:
      return { phase: Phase.STOPPING, reason: "Removing", message: "removing the container" };
    case CommandKind.REMOVE_DATA:
      return { phase: Phase.PURGING, reason: "RemovingData", message: "removing the data directory" };
    default:
      return { phase: Phase.PENDING, reason: "Checking", message: "checking the host" };
  }
}

function conditionFacts(input: PlanInput, c: ContainerInfo | undefined): ConditionFact[] {
  const online = input.hostConnected;
  const unknown = (type: ConditionFact["type"]): ConditionFact => ({
    type,
    status: "Unknown",
    reason: "HostOffline",
    message: "the host's agent is not connected",
  });
  const hostConnected: ConditionFact = online
    ? { type: "HostConnected", status: "True", reason: "Connected", message: "" }
    : { type: "HostConnected", status: "False", reason: "HostOffline", message: "the host's agent is not connected" };
  if (!online) {
    return [hostConnected, unknown("ContainerExists"), unknown("ContainerRunning"), unknown("DataPresent"), unknown("SpecApplied"), unknown("Ready")];
  }
  const exists: ConditionFact = c
    ? { type: "ContainerExists", status: "True", reason: "Found", message: c.id.slice(0, 12) }
    : { type: "ContainerExists", status: "False", reason: "NotFound", message: "no container for this server on its host" };
  const running: ConditionFact =
    c?.state === "running"
      ? { type: "ContainerRunning", status: "True", reason: "Running", message: "" }
      : { type: "ContainerRunning", status: "False", reason: c ? capitalize(c.state) : "NoContainer", message: c ? exitMessage(c) : "" };
  const data: ConditionFact =
    input.data === undefined
      ? { type: "DataPresent", status: "Unknown", reason: "NotChecked", message: "the data directory has not been checked yet" }
      : input.data.present
        ? { type: "DataPresent", status: "True", reason: "Present", message: "" }
        : { type: "DataPresent", status: "False", reason: input.dataInitialized ? "Missing" : "NotCreated", message: "" };
  const applied: ConditionFact = !c
    ? { type: "SpecApplied", status: "False", reason: "NoContainer", message: "" }
    : c.labels[HASH_LABEL] === input.specHash
      ? { type: "SpecApplied", status: "True", reason: "Applied", message: `generation ${c.labels[GENERATION_LABEL] ?? "?"}` }
      : { type: "SpecApplied", status: "False", reason: "PendingRestart", message: "the container runs an older spec; restart or rebuild to apply it" };
  const ready: ConditionFact =
    c?.state === "running" && applied.status === "True"
      ? { type: "Ready", status: "True", reason: "Running", message: "" }
      : { type: "Ready", status: "False", reason: c?.state === "running" ? "PendingRestart" : "NotRunning", message: "" };
  return [hostConnected, exists, running, data, applied, ready];
}

function exitMessage(c: ContainerInfo): string {
  if (c.state === "exited") return `exited with code ${c.exitCode}${c.oomKilled ? " (out of memory)" : ""}`;
  return `container is ${c.state}`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Human name of a command kind for messages, e.g. "ensure-running". */
export function commandName(kind: CommandKind): string {
  return (CommandKind[kind] ?? "unknown").toLowerCase().replace(/_/g, "-");
}
