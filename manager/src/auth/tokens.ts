/**
 * Operator tokens over the store contract: what creating one writes, and the
 * throttled "last used" stamp. AccessService, the interceptor, the token CLI
 * and the manager's first start share these, so a token is made one way.
 */
import type { TokenRecord } from "../domain/records.js";
import { newId, hashSecret } from "../ids.js";
import type { Logger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import { newTokenSecret } from "../store/sqlite/token-tables.js";
import type { NewToken } from "./token-policy.js";

/**
 * A new token and the operation that stores it (only the secret's hash). The
 * caller commits `op` with the event that explains it, and hands `secret` to
 * whoever asked, once.
 */
export function newToken(spec: NewToken, createdBy: string, now: number): { token: TokenRecord; secret: string; op: WriteOp } {
  const secret = newTokenSecret();
  const token: TokenRecord = {
    id: newId("tok"),
    name: spec.name,
    role: spec.role,
    project: spec.project,
    createdAt: now,
    createdBy,
    revokedAt: null,
    lastUsedAt: null,
  };
  return { token, secret, op: { op: "token.insert", token, secretHash: hashSecret(secret) } };
}

/** Recording a token's use is a write, so it happens at most this often per token. */
export const TOUCH_INTERVAL_MS = 60_000;

/**
 * Records that tokens were used, at most once a minute per token. Best
 * effort: a stamp that cannot be written (disk full, database locked) must
 * not fail the request it belongs to — reads keep working on a full disk —
 * and is tried again at the token's next use.
 */
export class TokenTouches {
  /** Token id → when its stamp was last written (or is being written). */
  readonly #written = new Map<string, number>();

  constructor(
    private readonly store: Pick<Store, "commit">,
    private readonly log?: Logger,
  ) {}

  /** Resolves once the stamp is written or skipped; never rejects. */
  async touch(id: string, now: number): Promise<void> {
    const last = this.#written.get(id);
    if (last !== undefined && now - last < TOUCH_INTERVAL_MS) return;
    // Claimed before the write: requests of the same token meanwhile do not write too.
    this.#written.set(id, now);
    try {
      await this.store.commit([{ op: "token.touch", id, at: now }]);
    } catch (err) {
      if (this.#written.get(id) === now) {
        if (last === undefined) this.#written.delete(id);
        else this.#written.set(id, last);
      }
      this.log?.debug({ err, token: id }, "could not record a token's use; trying again at its next use");
    }
  }
}
