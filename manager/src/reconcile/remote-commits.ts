import type { HostFence } from "../cluster/host-ownership.js";
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
 * (the feed may have missed commits) queues every server. With `ownership`
 * (several managers), only servers of hosts this manager may reconcile are
 * queued (cluster/host-ownership.ts: the host's owner, or the leader for a
 * host nobody owns); the owner of the others hears the same batch.
 *
 * Returns the unsubscribe.
 */
export function wakeForRemoteCommits(
  store: Pick<Store, "onCommit" | "allServerIds" | "getServer">,
  reconciler: { enqueue(serverId: string, cause: string): void },
  log?: Logger,
  ownership?: Pick<HostFence, "mayReconcile">,
): () => void {
  const enqueue = (ids: Iterable<string>, cause: string): void => {
    if (!ownership) {
      for (const id of ids) reconciler.enqueue(id, cause);
      return;
    }
    for (const id of ids) {
      mayReconcileServer(store, ownership, id).then(
        (yes) => {
          if (yes) reconciler.enqueue(id, cause);
        },
        // Queued anyway: reconcile() asks ownership again and skips a host owned elsewhere.
        (err: unknown) => {
          log?.warn({ err, server: id }, "could not tell who owns the server's host; queueing it (the reconcile checks again)");
          reconciler.enqueue(id, cause);
        },
      );
    }
  };
  return store.onCommit((c) => {
    if (!c.remote) return;
    enqueue(c.serverIds, "changed by another manager");
    if (!c.resync) return;
    store.allServerIds().then(
      (ids) => enqueue(ids, "resync after missing other managers' changes"),
      (err: unknown) => log?.error({ err }, "could not list servers to resync after missing other managers' changes; the periodic resync reconciles them"),
    );
  });
}

/** A server gone meanwhile counts as this manager's: its reconcile finds nothing and ends. */
async function mayReconcileServer(store: Pick<Store, "getServer">, ownership: Pick<HostFence, "mayReconcile">, id: string): Promise<boolean> {
  const s = await store.getServer(id);
  return !s || ownership.mayReconcile(s.hostId);
}
