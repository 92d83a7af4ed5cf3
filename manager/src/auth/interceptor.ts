import type { Interceptor } from "@connectrpc/connect";
import { callerKey, type Caller } from "./caller.js";

/**
 * Until operator tokens land (access-control issue), every request acts as
 * this all-projects admin. The API is only open on the address the manager
 * listens on; `npm start` listens on loopback.
 */
export const OPEN_ACCESS_CALLER: Caller = { tokenId: "none", name: "anonymous", role: "admin", project: null };

/** Resolves the caller of each request and stores it in the handler context. */
export function authInterceptor(): Interceptor {
  return (next) => async (req) => {
    req.contextValues.set(callerKey, OPEN_ACCESS_CALLER);
    return next(req);
  };
}
