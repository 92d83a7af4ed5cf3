import { create } from "@bufbuild/protobuf";
import { Code, createContextValues, createHandlerContext } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { CreateEnrollmentTokenRequestSchema, HostService, RemoveHostRequestSchema } from "@berth/proto/berth/v1/host_pb.js";
import { callerKey } from "../auth/caller.js";
import { BerthError } from "../errors.js";
import { hashSecret } from "../ids.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { parseEnrollmentToken } from "../tls/enrollment-token.js";
import { addHost, stubReconciler } from "../../testing/agent-stream.js";
import { testStore } from "../../testing/store.js";
import { createHostService } from "./host-service.js";

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

async function setup() {
  const contract = await testStore();
  cleanup.push(() => contract.close());
  const ledger = new Ledger(contract);
  ledger.follow(contract);
  const hosts = createHostService({ store: contract, hub: new AgentHub(), ledger, reconciler: stubReconciler(), advertiseUrl: "http://test" });
  const ctx = (method: "removeHost" | "createEnrollmentToken") =>
    createHandlerContext({
      service: HostService,
      method: HostService.method[method],
      protocolName: "connect",
      requestMethod: "POST",
      url: `http://test/berth.v1.HostService/${method}`,
      contextValues: createContextValues().set(callerKey, { tokenId: "tok_admin", name: "admin", role: "admin", project: null }),
    });
  const events = async (prefix: string) => (await contract.listNewestFirst({ project: null, typePrefix: prefix, limit: 10 })).map((e) => e.type);
  return { contract, hosts, ctx, events };
}

describe("HostService", () => {
  it("RemoveHost called twice at once removes the host once: one event, the other call answers NotFound", async () => {
    const { contract, hosts, ctx, events } = await setup();
    await addHost(contract, "host_aaaa");
    const results = await Promise.allSettled([
      hosts.removeHost(create(RemoveHostRequestSchema, { id: "host_aaaa" }), ctx("removeHost")),
      hosts.removeHost(create(RemoveHostRequestSchema, { id: "host_aaaa" }), ctx("removeHost")),
    ]);
    expect(results.map((r) => (r.status === "fulfilled" ? "ok" : r.reason instanceof BerthError ? r.reason.code : r.reason)).sort()).toEqual(["ok", Code.NotFound].sort());
    expect(await events("host.removed")).toEqual(["host.removed"]);
    expect((await contract.getHost("host_aaaa"))?.removedAt).not.toBeNull();
  });

  it("CreateEnrollmentToken stores only the secret's hash, with its event", async () => {
    const { contract, hosts, ctx, events } = await setup();
    const res = await hosts.createEnrollmentToken(create(CreateEnrollmentTokenRequestSchema, { ttlSeconds: 60 }), ctx("createEnrollmentToken"));
    const { secret } = parseEnrollmentToken(res.token!);
    expect(await contract.getEnrollmentToken(hashSecret(secret))).toMatchObject({ usedAt: null });
    expect(await events("enrollment.")).toEqual(["enrollment.created"]);
  });
});
