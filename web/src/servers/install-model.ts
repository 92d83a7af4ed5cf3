/**
 * A server's install script as the drawer shows it (install-panel.tsx):
 * its state in words, whether Reinstall is offered and why not, when the
 * panel polls the log, and an attempt of GetInstallLog as text. Pure; unit
 * tests in install-model.test.ts. Mirrors manager/src/api/server-service.ts
 * (ReinstallServer) and docs/templates.md "Install scripts".
 */
import { DesiredState, InstallState, Phase, type InstallAttempt, type InstallStatus, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { formatTime, tsMs as ms } from "../ui/format.js";
import { isDeleted, type Tone } from "./model.js";

/** The manager's default install timeout (timeout_seconds 0). */
export const DEFAULT_INSTALL_TIMEOUT_SECONDS = 600;

/** While the install runs, the log is read again this often. */
export const INSTALL_POLL_MS = 2000;

/** Container states the manager counts as "not stopped" for a reinstall. */
const ACTIVE_CONTAINER = ["running", "paused", "restarting"];

export function timeoutSeconds(s: Server): number {
  return s.spec?.install?.timeoutSeconds || DEFAULT_INSTALL_TIMEOUT_SECONDS;
}

/** Seconds between two times, whole, never negative. */
function seconds(from: number | undefined, to: number): number {
  return from === undefined ? 0 : Math.max(0, Math.floor((to - from) / 1000));
}

/** How a failed run ended: "exit code 3", "timed out after 600 s". */
export function failureText(r: { exitCode: number; timedOut: boolean }, timeout: number): string {
  return r.timedOut ? `timed out after ${timeout} s` : `exit code ${r.exitCode}`;
}

/**
 * The install's state in words: "pending", "running for 12 s",
 * "succeeded at 2026-12-07 00:12:03", "failed: exit code 3",
 * "failed: timed out after 600 s"; "not run yet" without a status (a clone,
 * or an install given by UpdateServer: ReinstallServer runs it).
 */
export function installStateText(s: Server, now: number): { text: string; tone: Tone } {
  const st = s.status?.install;
  switch (st?.state) {
    case InstallState.PENDING:
      return { text: "pending", tone: "busy" };
    case InstallState.RUNNING:
      return { text: `running for ${seconds(ms(st.startedTime), now)} s`, tone: "busy" };
    case InstallState.SUCCEEDED:
      return { text: `succeeded at ${formatTime(ms(st.finishedTime))}`, tone: "ok" };
    case InstallState.FAILED:
      return { text: `failed: ${failureText(st, timeoutSeconds(s))}`, tone: "bad" };
    default:
      return { text: "not run yet", tone: "muted" };
  }
}

/** The state as one word, for data attributes and tests: pending, running, succeeded, failed, none. */
export function installStateName(st: InstallStatus | undefined): string {
  switch (st?.state) {
    case InstallState.PENDING:
      return "pending";
    case InstallState.RUNNING:
      return "running";
    case InstallState.SUCCEEDED:
      return "succeeded";
    case InstallState.FAILED:
      return "failed";
    default:
      return "none";
  }
}

/** The panel reads the log again every INSTALL_POLL_MS while the script runs. */
export function pollsLog(s: Server): boolean {
  return s.status?.install?.state === InstallState.RUNNING;
}

/**
 * Why Reinstall cannot be sent now (the manager would refuse it with
 * FailedPrecondition), or undefined when it can. After a failure it is
 * always allowed; otherwise the server must be stopped (desired state
 * stopped, no container running).
 */
export function reinstallBlocked(s: Server): string | undefined {
  if (!s.spec?.install) return "This server has no install script.";
  if (isDeleted(s) || s.status?.phase === Phase.PURGING) return "The server is deleted: restore it first.";
  const st = s.status?.install;
  if (st?.state === InstallState.RUNNING) return `The install script is running (attempt ${st.attempt}); wait for it to finish.`;
  if (st?.state === InstallState.PENDING) return "The install script is already waiting to run.";
  if (st?.state === InstallState.FAILED) return undefined;
  const active = ACTIVE_CONTAINER.includes(s.status?.containerState ?? "");
  if (active || s.spec.desiredState !== DesiredState.STOPPED) {
    return `To run the install script again the server must be stopped (it is ${active ? s.status!.containerState : `meant to be ${desiredWord(s.spec.desiredState)}`}): stop it first, reinstall, then start it.`;
  }
  return undefined;
}

function desiredWord(d: DesiredState): string {
  return d === DesiredState.RUNNING ? "running" : d === DesiredState.PAUSED ? "paused" : "stopped";
}

/** One attempt of GetInstallLog, ready to show. */
export interface AttemptView {
  attempt: number;
  started: string;
  finished: string;
  /** "exit code 0", "exit code 3", "timed out after 600 s". */
  outcome: string;
  ok: boolean;
  /** The log as text (UTF-8, bad bytes replaced); "(no output)" when empty. */
  text: string;
  truncated: boolean;
}

const decoder = new TextDecoder("utf-8", { fatal: false });

export function attemptView(a: InstallAttempt, timeout: number): AttemptView {
  const text = decoder.decode(a.log);
  return {
    attempt: a.attempt,
    started: formatTime(ms(a.startedTime)),
    finished: formatTime(ms(a.finishedTime)),
    outcome: a.timedOut ? failureText(a, timeout) : `exit code ${a.exitCode}`,
    ok: !a.timedOut && a.exitCode === 0,
    text: text === "" ? "(no output)" : text,
    truncated: a.truncated,
  };
}

/** The attempts newest first, as the manager sends them (sorted again in case). */
export function attemptViews(attempts: readonly InstallAttempt[], timeout: number): AttemptView[] {
  return [...attempts].sort((a, b) => b.attempt - a.attempt).map((a) => attemptView(a, timeout));
}
