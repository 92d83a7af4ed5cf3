import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";

/**
 * Wakes this manager's reconciler for what other managers of its database
 * committed (PostgreSQL's change feed: onCommit batches marked `remote`).
 *
 * This manager's own writes wake the reconciler where they are made (the API
 * handlers and the agent service enqueue what they changed), so only remote
 * batches are looked at here: each server whose record another manager wrote
 * (a spec change, a start or stop through its API) is queued, and a `resync`
 * (the feed may have missed commits) queues every server. Until host
 * ownership exists (a lease per host, issue 16), every manager reacts to
 * every remote change; then only the owner of the server's host will.
 *
 * Returns the unsubscribe.
 */
export function wakeForRemoteCommits(store: Store, reconciler: { enqueue(serverId: string, cause: string): void }, log?: Logger): () => void {
  return store.onCommit((c) => {
    if (!c.remote) return;
    for (const id of c.serverIds) reconciler.enqueue(id, "changed by another manager");
    if (!c.resync) return;
    store.allServerIds().then(
      (ids) => {
        for (const id of ids) reconciler.enqueue(id, "resync after missing other managers' changes");
      },
      (err: unknown) => log?.error({ err }, "could not list servers to resync after missing other managers' changes; the periodic resync reconciles them"),
    );
  });
}
