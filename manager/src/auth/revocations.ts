/**
 * Token revocation across managers: a token revoked through any manager ends
 * its open streams on every manager of the database.
 *
 * The signal is the committed batch, not the API call that revoked it: every
 * batch that inserts or revokes a token names it (store.ts Committed.tokenIds),
 * this store's own batches at once and, on PostgreSQL, other managers' through
 * the change feed (postgres/pg-listen.ts), milliseconds after their COMMIT.
 * Whatever path revoked the token (AccessService on any manager, the token
 * CLI on PostgreSQL) is heard the same way. New calls need nothing of this:
 * the interceptor reads the token on every call (auth/interceptor.ts).
 */
import type { Logger } from "../log.js";
import type { Committed, Store } from "../store/store.js";
import type { AccessLimits } from "./limits.js";

/**
 * Closes the open streams of every token a committed batch revoked. On a
 * resync (the feed may have missed batches) every token with open streams
 * here is read again. Returns the unsubscribe.
 */
export function closeStreamsOfRevokedTokens(store: Pick<Store, "onCommit" | "getToken">, limits: Pick<AccessLimits, "closeStreams" | "streamTokenIds">, log?: Logger): () => void {
  const check = async (ids: Iterable<string>) => {
    for (const id of ids) {
      try {
        const t = await store.getToken(id);
        // A token that is gone (there is no delete today) cannot authenticate either.
        if (!t || t.revokedAt !== null) limits.closeStreams(id, "token revoked");
      } catch (err) {
        log?.warn({ err, token: id }, "could not read a token a committed batch changed; its open streams are checked at the next change");
      }
    }
  };
  return store.onCommit((c: Committed) => {
    // Only tokens with streams open here can need closing: most batches cost nothing.
    const open = new Set(limits.streamTokenIds());
    if (open.size === 0) return;
    const ids = c.resync ? open : new Set([...(c.tokenIds ?? [])].filter((id) => open.has(id)));
    if (ids.size > 0) void check(ids);
  });
}
