import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import type { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { authApi } from "../../testing/auth-api.js";
import { twoManagerStores } from "../../testing/store.js";
import { AccessLimits } from "./limits.js";
import { closeStreamsOfRevokedTokens } from "./revocations.js";
import { newToken } from "./tokens.js";

/**
 * Two managers on one database (PostgreSQL: two stores, the second hearing the
 * first through the change feed; SQLite, one manager per file: the same store
 * twice, so only the local path is exercised there).
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function twoManagers(): Promise<[Store, Store]> {
  const two = await twoManagerStores();
  cleanups.push(() => two.close());
  return two.stores;
}

/** One manager's API in memory (testing/auth-api.ts): AccessService and a never-ending WatchServers behind the auth interceptor. */
function manager(store: Store, opts: { watchRevocations: boolean }) {
  const limits = new AccessLimits({ ratePerSecond: 1000, burst: 1000, maxStreams: 4 });
  const ledger = new Ledger(store);
  if (opts.watchRevocations) {
    const off = closeStreamsOfRevokedTokens(store, limits);
    cleanups.push(async () => off());
  }
  return { client: authApi({ store, limits, ledger }), limits };
}

/** Opens a watch and resolves once its first message arrived; `ended` settles with how it ended. */
async function openWatch(servers: Client<typeof ServerService>) {
  const it = servers.watchServers({})[Symbol.asyncIterator]();
  await it.next();
  const ended = (async () => {
    try {
      for (;;) if ((await it.next()).done) return "ended";
    } catch (err) {
      return ConnectError.from(err);
    }
  })();
  return { ended };
}

describe("token revocation across managers", () => {
  it("a token revoked through manager A fails on manager B at once, and B's open stream of it ends with Unauthenticated", async () => {
    const [a, b] = await twoManagers();
    const root = newToken({ name: "root", role: "admin", project: null }, "test", Date.now());
    const watcher = newToken({ name: "watcher", role: "viewer", project: null }, "test", Date.now());
    await a.commit([root.op, watcher.op]);
    const A = manager(a, { watchRevocations: true });
    const B = manager(b, { watchRevocations: true });
    const w = await openWatch(B.client(watcher.secret).servers);
    expect(B.limits.openStreams(watcher.token.id)).toBe(1);

    await A.client(root.secret).access.revokeToken({ id: watcher.token.id });

    const how = await w.ended;
    expect(how).toBeInstanceOf(ConnectError);
    expect((how as ConnectError).code).toBe(Code.Unauthenticated);
    expect((how as ConnectError).rawMessage).toMatch(/token "watcher" \(tok_\w+\) was revoked/);
    expect(B.limits.openStreams(watcher.token.id)).toBe(0);
    await expect(B.client(watcher.secret).access.whoAmI({})).rejects.toMatchObject({ code: Code.Unauthenticated });
  });

  it("a revocation committed outside any API (the token CLI) closes the streams too; other tokens' streams stay open", async () => {
    const [a, b] = await twoManagers();
    const gone = newToken({ name: "gone", role: "viewer", project: null }, "test", Date.now());
    const kept = newToken({ name: "kept", role: "viewer", project: null }, "test", Date.now());
    await a.commit([gone.op, kept.op]);
    const B = manager(b, { watchRevocations: true });
    const wGone = await openWatch(B.client(gone.secret).servers);
    await openWatch(B.client(kept.secret).servers);

    await a.commit([{ op: "token.revoke", id: gone.token.id, at: Date.now() }]);

    expect(((await wGone.ended) as ConnectError).code).toBe(Code.Unauthenticated);
    expect(B.limits.openStreams(kept.token.id)).toBe(1);
  });
});
