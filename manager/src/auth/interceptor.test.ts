import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ListTokensResponseSchema, Role } from "@berth/proto/berth/v1/access_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { Health } from "@berth/proto/grpc/health/v1/health_pb.js";
import { HealthStatus, registerHealth } from "../api/health.js";
import { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { authApi } from "../../testing/auth-api.js";
import { testStore } from "../../testing/store.js";
import type { Role as RoleName } from "./caller.js";
import { AccessLimits } from "./limits.js";
import { newToken } from "./tokens.js";

/**
 * The interceptor in front of real routing (in memory, testing/auth-api.ts):
 * AccessService for real, ServerService with only a never-ending
 * WatchServers, an empty HostService, and health.
 */
const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

async function setup(limits = new AccessLimits({ ratePerSecond: 1000, burst: 1000, maxStreams: 2 }), now: () => number = Date.now) {
  const store = await testStore();
  opened.push(store);
  const ledger = new Ledger(store);
  ledger.follow(store);
  const caller = authApi({
    store,
    limits,
    ledger,
    now,
    routes: (router) => {
      router.service(HostService, {});
      registerHealth(router, new HealthStatus());
    },
  });
  const clients = (secret?: string) => {
    const { transport, access, servers } = caller(secret);
    return { access, servers, hosts: createClient(HostService, transport), health: createClient(Health, transport) };
  };
  /** A token stored as AccessService stores one. */
  const mint = async (t: { name: string; role: RoleName; project: string | null; createdBy: string; now: number }) => {
    const made = newToken(t, t.createdBy, t.now);
    await store.commit([made.op]);
    return made;
  };
  const root = await mint({ name: "root", role: "admin", project: null, createdBy: "test", now: Date.now() });
  return { tokens: { create: mint }, store, ledger, clients, root };
}

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

async function message(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).rawMessage;
  }
}

async function firstOf(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) return;
}

describe("authInterceptor", () => {
  it("lets health through without a token", async () => {
    const { clients } = await setup();
    expect(await code(clients().health.check({}))).toBe("ok");
  });

  it("answers Unauthenticated without a token, with a bad one, and with a revoked one, saying how to get one", async () => {
    const { clients, tokens, root } = await setup();
    expect(await message(clients().access.whoAmI({}))).toMatch(/^missing token; send "authorization: Bearer <token>"/);
    expect(await code(clients("brt_bogus").access.whoAmI({}))).toBe(Code.Unauthenticated);
    expect(await message(clients("brt_bogus").access.whoAmI({}))).toMatch(/unknown token; .*berth-manager token create --role admin/);
    const v = await tokens.create({ name: "gone", role: "viewer", project: "p", createdBy: "", now: 1 });
    await clients(root.secret).access.revokeToken({ id: v.token.id });
    expect(await message(clients(v.secret).access.whoAmI({}))).toMatch(/^token "gone" \(tok_\w+\) was revoked at/);
  });

  it("checks the role before the handler exists: an unimplemented RPC still answers PermissionDenied or Unauthenticated", async () => {
    const { clients, tokens, root } = await setup();
    const viewer = await tokens.create({ name: "v", role: "viewer", project: "p", createdBy: "", now: 1 });
    expect(await code(clients().hosts.removeHost({ id: "host_x" }))).toBe(Code.Unauthenticated);
    expect(await message(clients(viewer.secret).hosts.removeHost({ id: "host_x" }))).toBe('RemoveHost needs the admin role; token "v" is viewer');
    expect(await code(clients(root.secret).hosts.removeHost({ id: "host_x" }))).toBe(Code.Unimplemented);
  });

  it("keeps shared-infrastructure calls for all-projects admins", async () => {
    const { clients, tokens } = await setup();
    const projectAdmin = await tokens.create({ name: "web-admin", role: "admin", project: "web", createdBy: "", now: 1 });
    expect(await message(clients(projectAdmin.secret).hosts.createEnrollmentToken({}))).toMatch(
      /^CreateEnrollmentToken acts on infrastructure every project shares, so it needs an all-projects admin token/,
    );
  });

  it("rate-limits mutating calls per token with ResourceExhausted, and never reads", async () => {
    const { clients, root } = await setup(new AccessLimits({ ratePerSecond: 0.001, burst: 2, maxStreams: 2 }));
    const c = clients(root.secret);
    expect(await code(c.access.createToken({ name: "a", role: Role.VIEWER, project: "p" }))).toBe("ok");
    expect(await code(c.access.createToken({ name: "b", role: Role.VIEWER, project: "p" }))).toBe("ok");
    expect(await message(c.access.createToken({ name: "c", role: Role.VIEWER, project: "p" }))).toMatch(/^rate limit: this token may make/);
    expect(await code(c.access.createToken({ name: "c", role: Role.VIEWER, project: "p" }))).toBe(Code.ResourceExhausted);
    for (let i = 0; i < 5; i++) expect(await code(c.access.listTokens({}))).toBe("ok");
  });

  it("caps concurrent streams per token and frees the slot when a stream ends", async () => {
    const { clients, root, tokens } = await setup();
    const c = clients(root.secret);
    const abort = new AbortController();
    const open = [c.servers.watchServers({}, { signal: abort.signal }), c.servers.watchServers({}, { signal: abort.signal })];
    // Read the first message of each and keep them open.
    for (const s of open) await s[Symbol.asyncIterator]().next();
    const third = await code(firstOf(c.servers.watchServers({})));
    expect(third).toBe(Code.ResourceExhausted);
    // Another token is not affected.
    const other = await tokens.create({ name: "o", role: "viewer", project: "p", createdBy: "", now: 1 });
    expect(await code(firstOf(clients(other.secret).servers.watchServers({})))).toBe("ok");
    abort.abort();
    // The slots are freed once the aborted streams have ended on the server side: wait for that, not for a fixed time.
    await vi.waitFor(async () => expect(await code(firstOf(c.servers.watchServers({})))).toBe("ok"));
  });

  it("ends a revoked token's open streams at once with Unauthenticated", async () => {
    const { clients, root, tokens } = await setup();
    const v = await tokens.create({ name: "watcher", role: "viewer", project: "p", createdBy: "", now: 1 });
    const it = clients(v.secret).servers.watchServers({})[Symbol.asyncIterator]();
    await it.next();
    const pending = it.next();
    await clients(root.secret).access.revokeToken({ id: v.token.id });
    const err = await pending.then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err?.rawMessage).toMatch(/token "watcher" \(tok_\w+\) was revoked/);
  });
});

describe("AccessService", () => {
  it("WhoAmI describes the calling token", async () => {
    const { clients, root } = await setup();
    const { token } = await clients(root.secret).access.whoAmI({});
    expect(token).toMatchObject({ id: root.token.id, name: "root", role: Role.ADMIN, project: "" });
  });

  it("creates a token whose secret works at once and is shown only in the answer; records the actor", async () => {
    const { clients, root, ledger } = await setup();
    const res = await clients(root.secret).access.createToken({ name: "ci", role: Role.OPERATOR, project: "web" });
    expect(res.secret).toMatch(/^brt_/);
    expect(res.token).toMatchObject({ name: "ci", role: Role.OPERATOR, project: "web" });
    const me = await clients(res.secret).access.whoAmI({});
    expect(me.token?.id).toBe(res.token?.id);
    const list = await clients(root.secret).access.listTokens({});
    expect(toJsonString(ListTokensResponseSchema, list)).not.toContain(res.secret.slice(4));
    const ev = (await ledger.list({})).find((e) => e.type === "token.created");
    expect(ev).toMatchObject({ actor: `token:${root.token.id}:root`, correlationId: res.token!.id, project: "web" });
  });

  it("validates role and project, and keeps all-projects tokens for admins", async () => {
    const { clients, root } = await setup();
    const c = clients(root.secret);
    expect(await message(c.access.createToken({ name: "x", role: Role.UNSPECIFIED, project: "web" }))).toMatch(/^role: required/);
    expect(await code(c.access.createToken({ name: "x", role: Role.VIEWER, project: "" }))).toBe(Code.InvalidArgument);
    expect(await code(c.access.createToken({ name: "x", role: Role.VIEWER, project: "Bad Name" }))).toBe(Code.InvalidArgument);
    const admin = await c.access.createToken({ name: "root2", role: Role.ADMIN, project: "" });
    expect(admin.token?.project).toBe("");
  });

  it("scopes a project admin to its project's tokens; others answer NotFound", async () => {
    const { clients, root, tokens } = await setup();
    const webAdmin = await tokens.create({ name: "web-admin", role: "admin", project: "web", createdBy: "", now: 1 });
    const games = await tokens.create({ name: "games-op", role: "operator", project: "games", createdBy: "", now: 2 });
    const w = clients(webAdmin.secret);
    const made = await w.access.createToken({ name: "web-viewer", role: Role.VIEWER, project: "" });
    expect(made.token?.project).toBe("web");
    expect(await code(w.access.createToken({ name: "x", role: Role.VIEWER, project: "games" }))).toBe(Code.NotFound);
    expect((await w.access.listTokens({})).tokens.map((t) => t.name).sort()).toEqual(["web-admin", "web-viewer"]);
    expect(await code(w.access.revokeToken({ id: games.token.id }))).toBe(Code.NotFound);
    expect(await code(w.access.revokeToken({ id: root.token.id }))).toBe(Code.NotFound);
    expect((await clients(root.secret).access.listTokens({})).tokens).toHaveLength(4);
  });

  it("revokes at once, idempotently, recording the actor once", async () => {
    const { clients, root, tokens, ledger } = await setup();
    const v = await tokens.create({ name: "v", role: "viewer", project: "p", createdBy: "", now: 1 });
    expect(await code(clients(v.secret).access.whoAmI({}))).toBe("ok");
    await clients(root.secret).access.revokeToken({ id: v.token.id });
    await clients(root.secret).access.revokeToken({ id: v.token.id });
    expect(await code(clients(v.secret).access.whoAmI({}))).toBe(Code.Unauthenticated);
    const revoked = (await ledger.list({})).filter((e) => e.type === "token.revoked");
    expect(revoked).toHaveLength(1);
    expect(revoked[0]).toMatchObject({ actor: `token:${root.token.id}:root`, correlationId: v.token.id });
    expect(await code(clients(root.secret).access.revokeToken({ id: "" }))).toBe(Code.InvalidArgument);
  });
});
