/**
 * Test support for the auth interceptor in front of real routing, in memory:
 * AccessService for real and a ServerService whose only RPC is a WatchServers
 * that never ends (a stream that holds a token's stream slot until the client
 * goes or the token is revoked), behind errorInterceptor and authInterceptor
 * as the manager mounts them.
 */
import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport, type Client, type ConnectRouter, type Interceptor, type Transport } from "@connectrpc/connect";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { ServerService, WatchChange, WatchServersResponseSchema } from "@berth/proto/berth/v1/server_pb.js";
import { createAccessService } from "../src/api/access-service.js";
import { errorInterceptor } from "../src/api/errors.js";
import { callerOf } from "../src/auth/caller.js";
import { authInterceptor } from "../src/auth/interceptor.js";
import type { AccessLimits } from "../src/auth/limits.js";
import type { Ledger } from "../src/ledger/ledger.js";
import { createLogger } from "../src/log.js";
import type { Store } from "../src/store/store.js";

export interface AuthApiOptions {
  store: Store;
  limits: AccessLimits;
  ledger: Ledger;
  /** The interceptor's clock (token expiry); default Date.now. */
  now?: () => number;
  /** More services to mount beside AccessService and ServerService. */
  routes?: (router: ConnectRouter) => void;
}

/** One caller of the in-memory API: its transport (for clients of other mounted services) and the two clients every test uses. */
export interface AuthApiCaller {
  transport: Transport;
  access: Client<typeof AccessService>;
  servers: Client<typeof ServerService>;
}

/**
 * The API behind the auth interceptor; `caller(secret)` sends
 * `authorization: Bearer <secret>` on every call (no header without one).
 * WatchServers needs the caller the interceptor set, as every handler does,
 * sends SNAPSHOT_END and then stays open until the call is aborted.
 */
export function authApi(o: AuthApiOptions): (secret?: string) => AuthApiCaller {
  const routes = (router: ConnectRouter) => {
    router.service(AccessService, createAccessService({ store: o.store, limits: o.limits, ledger: o.ledger }));
    router.service(ServerService, {
      async *watchServers(_req, ctx) {
        callerOf(ctx);
        yield create(WatchServersResponseSchema, { change: WatchChange.SNAPSHOT_END });
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      },
    });
    o.routes?.(router);
  };
  const log = createLogger("silent", "test");
  return (secret) => {
    const bearer: Interceptor = (next) => (req) => {
      if (secret !== undefined) req.header.set("authorization", `Bearer ${secret}`);
      return next(req);
    };
    const transport = createRouterTransport(routes, {
      router: { interceptors: [errorInterceptor(log), authInterceptor({ store: o.store, limits: o.limits, now: o.now ?? Date.now })] },
      transport: { interceptors: [bearer] },
    });
    return { transport, access: createClient(AccessService, transport), servers: createClient(ServerService, transport) };
  };
}
