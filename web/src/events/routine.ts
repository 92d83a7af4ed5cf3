import type { Event } from "@berth/proto/berth/v1/event_pb.js";

/**
 * Bookkeeping an operator rarely needs: a command issued or done (failures and
 * expiries are not routine), image pull progress, and a phase change that
 * stays in the same phase (STARTING → STARTING: only the reason moved). Hidden
 * by default unless the type filter asks for them.
 */
export function isRoutine(e: Pick<Event, "type" | "payloadJson">): boolean {
  if (e.type === "command.issued" || e.type === "command.succeeded" || e.type === "image.pull_progress") return true;
  if (e.type !== "phase.changed") return false;
  try {
    const p = JSON.parse(e.payloadJson || "{}") as { from?: string; to?: string };
    return p.from !== undefined && p.from === p.to;
  } catch {
    return false;
  }
}
