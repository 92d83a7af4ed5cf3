/**
 * Requests about a host that only the manager holding its agent stream can
 * carry out, made on any manager of the database.
 *
 * The API answers on every manager, but a host's stream is with one of them
 * (host-ownership.ts). What must reach that stream travels through the
 * ledger, which every manager hears (the change feed, within milliseconds of
 * the commit) and which records it anyway:
 *
 * - `host.removed` (RemoveHost): the manager holding the stream closes it as
 *   revoked, so the agent stops instead of reconnecting;
 * - `host.resync_requested` (ResyncHost on a manager without the stream):
 *   the holder asks its agent for a full inventory.
 *
 * On SQLite there is one manager, which does both itself at once.
 */
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

export interface HostStreams {
  /** Closes the host's stream here, if it is here. */
  disconnect(hostId: string, reason: string, opts: { revoked?: boolean }): void;
  /** Asks the host's agent for a full inventory; false when its stream is not here. */
  sendResync(hostId: string): boolean;
}

export const REMOVED_REASON = "this host was removed from berth (HostService.RemoveHost); enroll it again with a new enrollment token";

/** Carries out other managers' requests for hosts whose stream is here. Returns the unsubscribe. */
export function serveHostRequests(store: Pick<Store, "onCommit">, streams: HostStreams, log: Logger, onRemoved?: (hostId: string) => void): () => void {
  return store.onCommit((c) => {
    if (!c.remote) return;
    for (const e of c.events) {
      if (!e.hostId) continue;
      if (e.type === "host.removed") {
        streams.disconnect(e.hostId, REMOVED_REASON, { revoked: true });
        onRemoved?.(e.hostId);
      } else if (e.type === "host.resync_requested" && streams.sendResync(e.hostId)) {
        log.info({ host: e.hostId, actor: e.actor }, "asked the host's agent for a full inventory (ResyncHost through another manager)");
      }
    }
  });
}
