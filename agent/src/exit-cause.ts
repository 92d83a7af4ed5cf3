/**
 * Why a container exited, from the Docker events around its "die": a pure
 * function of the kill requests seen before it and the exit code it reports.
 *
 * Docker reports every `docker kill -s <signal>` and `docker stop` as a
 * "kill" event carrying the signal's number. Not every kill is a stop: an
 * operator reloading a server with `docker kill -s HUP` expects it to keep
 * running, and a crash that follows must be restarted like any other. So a
 * die counts as stopped outside berth only when a recent kill asked for a
 * stop (TERM, KILL, INT, QUIT: what `docker stop` and Ctrl-C send), or when
 * the exit code says another signal ended the process (128 + its number,
 * which the container's init reports for a process killed by a signal).
 */

/** How long a kill request explains a die that follows it. */
export const KILL_EXPLAINS_DIE_MS = 60_000;

/** Signals that ask a process to stop. */
const STOP_SIGNALS = new Set([2, 3, 9, 15]);

const NAMED: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, USR1: 10, USR2: 12, TERM: 15, WINCH: 28 };

/** A kill event's signal as a number ("15", "SIGTERM", "TERM"); undefined when unreadable. */
export function signalNumber(attr: string | undefined): number | undefined {
  if (!attr) return undefined;
  if (/^\d+$/.test(attr)) return Number(attr);
  return NAMED[attr.toUpperCase().replace(/^SIG/, "")];
}

/** One kill request: when, and which signal (undefined: unknown, counted as a stop). */
export interface KillSeen {
  at: number;
  signal: number | undefined;
}

/** "stopped_externally" or "crash" for a die no berth command explains. */
export function exitCauseOf(kills: readonly KillSeen[], exitCode: number | undefined, now: number): "stopped_externally" | "crash" {
  for (const k of kills) {
    if (now - k.at >= KILL_EXPLAINS_DIE_MS) continue;
    if (k.signal === undefined || STOP_SIGNALS.has(k.signal)) return "stopped_externally";
    if (exitCode === 128 + k.signal) return "stopped_externally";
  }
  return "crash";
}
