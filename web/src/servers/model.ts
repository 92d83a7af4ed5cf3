/**
 * What the Servers table knows about a server beyond its record: phase and
 * desired-state names, whether it is converging, which actions its phase
 * allows, when a pending action is settled. Pure functions, unit-tested in
 * model.test.ts; mirrors manager/src/alerts/rules.ts (`notConverged`) and
 * docs/lifecycle.md.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus, DesiredState, Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";

/** Phase as the docs spell it: Running, DataLost, ... */
export function phaseName(p: Phase | undefined): string {
  const name = Phase[p ?? Phase.UNSPECIFIED] ?? "UNSPECIFIED";
  if (p === undefined || p === Phase.UNSPECIFIED) return "—";
  return name
    .toLowerCase()
    .split("_")
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join("");
}

export const ALL_PHASES: readonly Phase[] = [
  Phase.PENDING,
  Phase.CREATING,
  Phase.STARTING,
  Phase.RUNNING,
  Phase.PAUSED,
  Phase.STOPPING,
  Phase.STOPPED,
  Phase.MISSING,
  Phase.DATA_LOST,
  Phase.FAILED,
  Phase.UNKNOWN,
  Phase.DELETED,
  Phase.PURGING,
];

export function phaseFromName(name: string): Phase | undefined {
  return ALL_PHASES.find((p) => phaseName(p).toLowerCase() === name.toLowerCase());
}

export function desiredName(d: DesiredState | undefined): string {
  switch (d) {
    case DesiredState.RUNNING:
      return "running";
    case DesiredState.PAUSED:
      return "paused";
    case DesiredState.STOPPED:
      return "stopped";
    default:
      return "—";
  }
}

/** The colour family of a phase badge. */
export type Tone = "ok" | "busy" | "idle" | "warn" | "bad" | "muted";

/** Phases that need an operator whatever their reason. */
export const ATTENTION_PHASES: readonly Phase[] = [Phase.FAILED, Phase.DATA_LOST, Phase.MISSING, Phase.UNKNOWN];

/** Stopped behind berth's back (docker stop/kill) and kept stopped since: berth did not do it, and nobody asked it to. */
export function stoppedOutsideBerth(s: Server): boolean {
  return s.status?.phase === Phase.STOPPED && s.status.reason === "StoppedOutsideBerth";
}

/**
 * No container, and none wanted: what a restore or a transfer leaves for a
 * server that should stay stopped (its data is kept). Stopped, as asked;
 * the container is made when it starts.
 */
export function stoppedWithoutContainer(s: Server): boolean {
  return s.status?.phase === Phase.MISSING && s.spec?.desiredState === DesiredState.STOPPED;
}

/** Crashing and being restarted per its restart policy (status.crash): on its way back, or to a crash loop. */
export function crashing(s: Server): boolean {
  return s.status?.crash !== undefined && s.status.phase === Phase.STARTING && !isDeleted(s);
}

/** Counted in "need attention" and shown by the "Needs attention" filter. */
export function needsAttention(s: Server): boolean {
  if (stoppedWithoutContainer(s)) return false;
  return ATTENTION_PHASES.includes(s.status?.phase ?? Phase.UNSPECIFIED) || stoppedOutsideBerth(s) || crashing(s);
}

/** Status reasons shown in words where the CamelCase would be missed (the rest are shown as the manager spells them). */
const REASON_TEXT: Record<string, string> = {
  InstallFailed: "install failed",
  Installing: "installing",
};

/** A status reason as the table and drawer show it: "install failed" for InstallFailed, others as they are. */
export function reasonText(reason: string): string {
  return REASON_TEXT[reason] ?? reason;
}

/** The phase badge: its text and tone (a stop made outside berth reads as its own state, in amber). */
export function phaseBadge(s: Server): { text: string; tone: Tone } {
  if (stoppedOutsideBerth(s)) return { text: "Stopped outside berth", tone: "warn" };
  if (crashing(s)) return { text: "Crashing", tone: "warn" };
  if (stoppedWithoutContainer(s)) return { text: s.status?.dataExists ? "Stopped · data kept" : "Stopped · no container", tone: "idle" };
  return { text: phaseName(s.status?.phase), tone: phaseTone(s.status?.phase) };
}

/**
 * When the running container started: Docker's own start time
 * (status.started_time), or, from a manager that does not report it, the
 * moment its ContainerRunning condition last turned True (when berth saw it
 * start). Undefined unless Running.
 */
export function runningSinceMs(s: Server): number | undefined {
  if (s.status?.phase !== Phase.RUNNING) return undefined;
  if (s.status.startedTime) return timestampMs(s.status.startedTime);
  const c = s.status.conditions.find((x) => x.type === "ContainerRunning");
  if (c?.status !== ConditionStatus.TRUE || !c.lastTransitionTime) return undefined;
  return timestampMs(c.lastTransitionTime);
}

/** An uptime in its two largest units: "42s", "12m", "3h 5m", "2d 4h". */
export function formatUptime(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** While Unknown (its host away): what was seen before, "Failed/CrashLoop", or "" when nothing was. */
export function lastSeen(s: Server): string {
  const st = s.status;
  if (st?.phase !== Phase.UNKNOWN || !st.lastKnownPhase) return "";
  return `${phaseName(st.lastKnownPhase)}${st.lastKnownReason && st.lastKnownReason !== phaseName(st.lastKnownPhase) ? `/${st.lastKnownReason}` : ""}`;
}

/**
 * A condition's tone: False is bad only where the server wants it True. A
 * server meant to be stopped has no running container and is not Ready, as
 * asked: those read neutral, not red.
 */
export function conditionTone(s: Server, type: string, status: ConditionStatus): "true" | "false" | "neutral" | "unknown" {
  if (status === ConditionStatus.TRUE) return "true";
  if (status !== ConditionStatus.FALSE) return "unknown";
  const desired = s.spec?.desiredState;
  if (desired === DesiredState.STOPPED && (type === "ContainerRunning" || type === "Ready" || ((type === "ContainerExists" || type === "SpecApplied") && stoppedWithoutContainer(s)))) return "neutral";
  if (desired === DesiredState.PAUSED && (type === "ContainerRunning" || type === "Ready")) return "neutral";
  return "false";
}

export function phaseTone(p: Phase | undefined): Tone {
  switch (p) {
    case Phase.RUNNING:
      return "ok";
    case Phase.PENDING:
    case Phase.CREATING:
    case Phase.STARTING:
    case Phase.STOPPING:
    case Phase.PURGING:
      return "busy";
    case Phase.STOPPED:
    case Phase.PAUSED:
      return "idle";
    case Phase.MISSING:
    case Phase.UNKNOWN:
      return "warn";
    case Phase.DATA_LOST:
    case Phase.FAILED:
      return "bad";
    default:
      return "muted";
  }
}

/** Phases that satisfy each desired state (as the manager's alert rules see it). */
const CONVERGED: Record<DesiredState, readonly Phase[]> = {
  [DesiredState.UNSPECIFIED]: [],
  [DesiredState.RUNNING]: [Phase.RUNNING],
  [DesiredState.PAUSED]: [Phase.PAUSED],
  [DesiredState.STOPPED]: [Phase.STOPPED, Phase.MISSING],
};

export function isDeleted(s: Server): boolean {
  return s.deleteTime !== undefined || s.status?.phase === Phase.DELETED;
}

/**
 * Converging: berth is still working towards the spec: the reconciler has not
 * finished the current generation, or the phase is not the desired one.
 * Failed, DataLost and Unknown are not "converging": nothing moves until an
 * operator (or the host) acts, and the phase badge says so.
 */
export function isConverging(s: Server): boolean {
  const phase = s.status?.phase ?? Phase.UNSPECIFIED;
  if (phase === Phase.PURGING) return true;
  if (isDeleted(s)) return false;
  if (phase === Phase.UNKNOWN || phase === Phase.DATA_LOST || phase === Phase.FAILED) return false;
  // Not on its way to what was asked: crashing has its own mark (crash n of 5, the next restart).
  if (crashing(s)) return false;
  const desired = s.spec?.desiredState ?? DesiredState.UNSPECIFIED;
  return (s.status?.observedGeneration ?? 0n) !== s.generation || !CONVERGED[desired].includes(phase);
}

/** Where a converging server is heading, for the mark: "→ Stopped". */
export function targetPhase(s: Server): string {
  if (s.status?.phase === Phase.PURGING) return "gone";
  switch (s.spec?.desiredState) {
    case DesiredState.RUNNING:
      return "Running";
    case DesiredState.PAUSED:
      return "Paused";
    case DesiredState.STOPPED:
      return "Stopped";
    default:
      return "?";
  }
}

export type ServerAction = "start" | "stop" | "pause" | "resume" | "restart" | "rebuild" | "delete" | "restore" | "purge";

export const ACTION_LABEL: Record<ServerAction, string> = {
  start: "Start",
  stop: "Stop",
  pause: "Pause",
  resume: "Resume",
  restart: "Restart",
  rebuild: "Rebuild",
  delete: "Delete",
  restore: "Restore",
  purge: "Purge",
};

/** Shown while an action waits for the watch to confirm it. */
export const ACTION_PENDING_LABEL: Record<ServerAction, string> = {
  start: "starting…",
  stop: "stopping…",
  pause: "pausing…",
  resume: "resuming…",
  restart: "restarting…",
  rebuild: "rebuilding…",
  delete: "deleting…",
  restore: "restoring…",
  purge: "purging…",
};

/** Actions that lose something: they ask for a confirmation naming the server. */
export const DESTRUCTIVE: ReadonlySet<ServerAction> = new Set(["stop", "restart", "rebuild", "delete", "purge"]);

/** Actions a purge-capable (admin) role is needed for; the rest need operator. */
export const ADMIN_ACTIONS: ReadonlySet<ServerAction> = new Set(["purge"]);

/**
 * The actions that make sense in the server's current phase (docs/lifecycle.md).
 * The manager is the judge; this keeps the buttons honest.
 */
export function actionsFor(s: Server): ServerAction[] {
  const phase = s.status?.phase ?? Phase.UNSPECIFIED;
  const desired = s.spec?.desiredState ?? DesiredState.UNSPECIFIED;
  if (phase === Phase.PURGING) return [];
  if (isDeleted(s)) return ["restore", "purge"];
  const out: ServerAction[] = [];
  const running = phase === Phase.RUNNING;
  const paused = phase === Phase.PAUSED || desired === DesiredState.PAUSED;
  if (
    !paused &&
    (desired !== DesiredState.RUNNING ||
      phase === Phase.STOPPED ||
      phase === Phase.MISSING ||
      phase === Phase.FAILED ||
      phase === Phase.DATA_LOST)
  ) {
    out.push("start");
  }
  if (paused) out.push("resume");
  if (desired !== DesiredState.STOPPED || running || phase === Phase.STARTING || phase === Phase.PAUSED) out.push("stop");
  if (running && desired === DesiredState.RUNNING) out.push("pause", "restart");
  // Its container runs, waiting for a line matching its ready pattern (or given up waiting): a restart may help.
  else if (phase === Phase.STARTING && desired === DesiredState.RUNNING && (s.status?.reason === "WaitingForReady" || s.status?.reason === "ReadyTimeout")) out.push("restart");
  if (phase !== Phase.UNKNOWN && phase !== Phase.PENDING && phase !== Phase.DATA_LOST) out.push("rebuild");
  out.push("delete", "purge");
  return out;
}

/** An action sent for a server and not yet confirmed by the watch. */
export interface PendingAction {
  action: ServerAction | "update";
  /** Date.now() when it was sent (browser clock: only for PENDING_MAX_MS). */
  since: number;
  /** The server's own last_change_time when it was sent (manager clock): a later one is news. */
  baseline: number;
  /** The server's generation in the RPC's answer, once it came. */
  generation?: bigint;
}

/** How long a pending mark may last at most; past it the row just shows the truth. */
export const PENDING_MAX_MS = 10 * 60_000;

export function lastChangeMs(s: Server): number {
  const t = s.status?.lastChangeTime;
  return t ? timestampMs(t) : 0;
}

/**
 * Whether the watch has confirmed (or refuted) a pending action, given the
 * server's latest record (undefined: it is gone from the watch).
 */
export function pendingSettled(p: PendingAction, s: Server | undefined, now: number): boolean {
  if (now - p.since > PENDING_MAX_MS) return true;
  if (!s) return true;
  const phase = s.status?.phase ?? Phase.UNSPECIFIED;
  const changedSince = lastChangeMs(s) > p.baseline;
  // A failure after the request is the answer, whatever was asked.
  if ((phase === Phase.FAILED || phase === Phase.DATA_LOST) && changedSince) return true;
  if (p.generation !== undefined && (s.status?.observedGeneration ?? 0n) < p.generation) return false;
  switch (p.action) {
    case "start":
    case "resume":
      return phase === Phase.RUNNING;
    case "stop":
      return phase === Phase.STOPPED || phase === Phase.MISSING;
    case "pause":
      return phase === Phase.PAUSED;
    case "restart":
    case "rebuild":
      return phase === Phase.RUNNING && changedSince;
    case "delete":
      return isDeleted(s);
    case "restore":
      return !isDeleted(s);
    case "purge":
      return false;
    case "update":
      return p.generation !== undefined && !isConverging(s);
  }
}
