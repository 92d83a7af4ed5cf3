import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { PermissionDeniedError, UnauthenticatedError } from "../errors.js";
import { hashSecret } from "../ids.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";
import { callerKey, hasRole, type Caller } from "./caller.js";
import type { AccessLimits, StreamLease } from "./limits.js";
import { permissionFor } from "./permissions.js";
import { TokenTouches } from "./tokens.js";

export interface AuthDeps {
  store: Pick<Store, "findTokenBySecretHash" | "commit">;
  limits: AccessLimits;
  /** Where a "last used" stamp that could not be written is noted (debug). */
  log?: Logger;
  now?: () => number;
}

/** Appended to every Unauthenticated answer: how to get a working token. */
export const HOW_TO_GET_A_TOKEN =
  'send "authorization: Bearer <token>". An admin creates tokens with AccessService.CreateToken; ' +
  "the first admin token is printed when the manager first starts, and `berth-manager token create --role admin` " +
  "makes a new one on the manager's host";

/**
 * Authenticates and authorizes every request before any handler runs, from
 * the central permission table (`permissions.ts`): open procedures pass,
 * AgentService authenticates agents itself, everything else needs an
 * operator token with the required role. It also applies the per-token
 * limits: a rate limit on mutating calls and a cap on open streams.
 * Because it runs first, an unimplemented RPC still answers Unauthenticated
 * or PermissionDenied to a caller who may not call it.
 */
export function authInterceptor(deps: AuthDeps): Interceptor {
  const now = deps.now ?? Date.now;
  const touches = new TokenTouches(deps.store, deps.log);

  /**
   * The caller behind the header. The token is read per call, so a revocation
   * (by any path: the API, the CLI on the manager's host) refuses its next call.
   */
  async function authenticate(header: string | null): Promise<Caller> {
    if (!header?.trim()) throw new UnauthenticatedError(`missing token; ${HOW_TO_GET_A_TOKEN}`);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header.trim());
    if (!m) throw new UnauthenticatedError(`malformed authorization header (expected "Bearer <token>"); ${HOW_TO_GET_A_TOKEN}`);
    // By the secret's SHA-256: an index probe that reveals nothing about other tokens through timing.
    const t = await deps.store.findTokenBySecretHash(hashSecret(m[1]!));
    if (!t) throw new UnauthenticatedError(`unknown token; ${HOW_TO_GET_A_TOKEN}`);
    if (t.revokedAt !== null) {
      throw new UnauthenticatedError(`token "${t.name}" (${t.id}) was revoked at ${new Date(t.revokedAt).toISOString()}; ask an admin for a new token`);
    }
    await touches.touch(t.id, now());
    return { tokenId: t.id, name: t.name, role: t.role, project: t.project };
  }

  return (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const perm = permissionFor(req.service.typeName, req.method.name);
    // Fail closed: a procedure nobody classified is refused, not opened.
    if (!perm) throw new PermissionDeniedError(`${procedure} has no entry in berth's permission table; refusing it`);
    if (perm.auth === "open" || perm.auth === "agent") return next(req);

    const caller = await authenticate(req.header.get("authorization"));
    if (!hasRole(caller, perm.role)) {
      throw new PermissionDeniedError(`${req.method.name} needs the ${perm.role} role; token "${caller.name}" is ${caller.role}`);
    }
    if (perm.allProjects && caller.project !== null) {
      throw new PermissionDeniedError(
        `${req.method.name} acts on infrastructure every project shares, so it needs an all-projects admin token; token "${caller.name}" is scoped to project "${caller.project}"`,
      );
    }
    req.contextValues.set(callerKey, caller);

    if (perm.mutates) {
      const d = deps.limits.takeMutation(caller.tokenId);
      if (!d.ok) throw new ConnectError(d.message, Code.ResourceExhausted);
    }
    if (req.method.methodKind === "unary") return next(req);

    const opened = deps.limits.openStream(caller.tokenId);
    if (!opened.ok) throw new ConnectError(opened.message, Code.ResourceExhausted);
    let res;
    try {
      res = await next(req);
    } catch (err) {
      opened.lease.release();
      throw err;
    }
    if (!res.stream) {
      opened.lease.release();
      return res;
    }
    // A client that goes away frees its slot at once, whatever the handler is waiting for.
    req.signal.addEventListener("abort", () => opened.lease.release(), { once: true });
    return { ...res, message: leased(res.message, opened.lease, caller) };
  };
}

/**
 * Yields `source` while the lease holds; releases it when the stream ends
 * in any way, and ends the stream with Unauthenticated when the token is
 * revoked meanwhile (a revocation takes effect at once, watches included).
 */
async function* leased<T>(source: AsyncIterable<T>, lease: StreamLease, caller: Caller): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  const revoked = new Promise<never>((_, reject) => {
    const fail = () => reject(new UnauthenticatedError(`token "${caller.name}" (${caller.tokenId}) was revoked; ask an admin for a new token`));
    if (lease.signal.aborted) fail();
    else lease.signal.addEventListener("abort", fail, { once: true });
  });
  revoked.catch(() => {});
  let finished = false;
  try {
    for (;;) {
      const r = await Promise.race([it.next(), revoked]);
      if (r.done) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    lease.release();
    // Stop the producer; do not wait for it, it may be blocked waiting for a change.
    if (!finished) void it.return?.(undefined)?.catch(() => {});
  }
}
