import { create } from "@bufbuild/protobuf";
import { Code, createContextValues, createHandlerContext } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  CordonHostRequestSchema,
  CreateEnrollmentTokenRequestSchema,
  DrainHostRequestSchema,
  GetHostRequestSchema,
  HostService,
  ListHostsRequestSchema,
  RemoveHostRequestSchema,
  UncordonHostRequestSchema,
} from "@berth/proto/berth/v1/host_pb.js";
import { callerKey } from "../auth/caller.js";
import { BerthError } from "../errors.js";
import { hashSecret } from "../ids.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { parseEnrollmentToken } from "../tls/enrollment-token.js";
import { addHost, stubReconciler } from "../../testing/agent-stream.js";
import { newServer, testStore } from "../../testing/store.js";
import type { Store } from "../store/store.js";
import { createHostService } from "./host-service.js";

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

async function setup(o: { transfers?: boolean } = {}) {
  const contract = await testStore();
  cleanup.push(() => contract.close());
  const ledger = new Ledger(contract);
  ledger.follow(contract);
  // Reads of the server records, counted: ListHosts makes none (the store sums the limits per host), whatever the number of hosts.
  const reads = { listServers: 0 };
  const counted = new Proxy(contract, {
    get(target, prop, receiver) {
      if (prop === "listServers") return (...args: Parameters<Store["listServers"]>) => (reads.listServers++, target.listServers(...args));
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const hosts = createHostService({ store: counted, hub: new AgentHub(), ledger, reconciler: stubReconciler(), advertiseUrl: "http://test", drains: { available: o.transfers ?? true } });
  const ctx = (method: keyof typeof HostService.method, role: "admin" | "operator" = "admin") =>
    createHandlerContext({
      service: HostService,
      method: HostService.method[method],
      protocolName: "connect",
      requestMethod: "POST",
      url: `http://test/berth.v1.HostService/${method}`,
      contextValues: createContextValues().set(callerKey, { tokenId: "tok_admin", name: role, role, project: null }),
    });
  const events = async (prefix: string) => (await contract.listNewestFirst({ project: null, typePrefix: prefix, limit: 10 })).map((e) => e.type);
  const messages = async (prefix: string) => (await contract.listNewestFirst({ project: null, typePrefix: prefix, limit: 10 })).reverse().map((e) => `${e.type} ${e.actor}: ${e.message}`);
  return { contract, hosts, ctx, events, messages, reads };
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

  it("ListHosts gives each host what its servers' limits take (deleted servers and other hosts' not counted), reading the servers once", async () => {
    const { contract, hosts, ctx, reads } = await setup();
    const GiB = 1024 ** 3;
    await addHost(contract, "host_aaaa", "box1");
    await addHost(contract, "host_bbbb", "box2");
    await addHost(contract, "host_cccc", "box3");
    await contract.commit([
      { op: "host.connected", id: "host_aaaa", facts: { cpuCount: 8, memoryBytes: 16 * GiB }, at: 10 },
      { op: "host.connected", id: "host_bbbb", facts: { cpuCount: 4, memoryBytes: 8 * GiB }, at: 10 },
      { op: "host.schedule", id: "host_bbbb", schedule: { unschedulable: false, capacity: { cpuOvercommit: 2, memoryOvercommit: 1, reservedCpus: 1, reservedMemoryBytes: GiB } } },
      { op: "server.insert", server: newServer({ id: "srv_a1", hostId: "host_aaaa", spec: { resources: { cpus: 1.5, memoryBytes: BigInt(2 * GiB) } } }) },
      { op: "server.insert", server: newServer({ id: "srv_a2", hostId: "host_aaaa", spec: { resources: { cpus: 0.5 } } }) },
      { op: "server.insert", server: newServer({ id: "srv_a3", hostId: "host_aaaa" }) },
      { op: "server.insert", server: newServer({ id: "srv_gone", hostId: "host_aaaa", spec: { resources: { cpus: 4, memoryBytes: BigInt(4 * GiB) } }, deletedAt: 5 }) },
      { op: "server.insert", server: newServer({ id: "srv_b1", hostId: "host_bbbb", spec: { resources: { memoryBytes: BigInt(3 * GiB) } } }) },
    ]);
    reads.listServers = 0;
    const res = await hosts.listHosts(create(ListHostsRequestSchema, {}), ctx("listHosts"));
    expect(reads.listServers).toBe(0);
    const figures = (res.hosts ?? []).map((h) => ({
      id: h.id,
      allocatableCpus: h.allocatableCpus,
      allocatableMemoryBytes: h.allocatableMemoryBytes,
      allocatedCpus: h.allocatedCpus,
      allocatedMemoryBytes: h.allocatedMemoryBytes,
      serverCount: h.serverCount,
    }));
    expect(figures).toEqual([
      { id: "host_aaaa", allocatableCpus: 8, allocatableMemoryBytes: BigInt(16 * GiB), allocatedCpus: 2, allocatedMemoryBytes: BigInt(2 * GiB), serverCount: 3 },
      { id: "host_bbbb", allocatableCpus: 7, allocatableMemoryBytes: BigInt(7 * GiB), allocatedCpus: 0, allocatedMemoryBytes: BigInt(3 * GiB), serverCount: 1 },
      { id: "host_cccc", allocatableCpus: 0, allocatableMemoryBytes: 0n, allocatedCpus: 0, allocatedMemoryBytes: 0n, serverCount: 0 },
    ]);
    // GetHost says the same of one host.
    const one = (await hosts.getHost(create(GetHostRequestSchema, { id: "host_aaaa" }), ctx("getHost"))).host!;
    expect([one.allocatedCpus, one.allocatedMemoryBytes]).toEqual([2, BigInt(2 * GiB)]);
  });

  describe("CordonHost, DrainHost, UncordonHost", () => {
    const codeOf = (err: unknown) => (err instanceof BerthError ? Code[err.code] : String(err));

    it("CordonHost marks the host unschedulable once (one event); UncordonHost undoes it", async () => {
      const { contract, hosts, ctx, messages } = await setup();
      await addHost(contract, "host_aaaa", "box1");
      const res = await hosts.cordonHost(create(CordonHostRequestSchema, { id: "host_aaaa" }), ctx("cordonHost"));
      expect(res.host).toMatchObject({ id: "host_aaaa", unschedulable: true, draining: false, drainMessage: "" });
      expect((await contract.getHost("host_aaaa"))?.schedule).toEqual({ unschedulable: true });
      // Already cordoned: nothing changes, no second event.
      await hosts.cordonHost(create(CordonHostRequestSchema, { id: " host_aaaa " }), ctx("cordonHost"));
      expect((await hosts.getHost(create(GetHostRequestSchema, { id: "host_aaaa" }), ctx("getHost"))).host?.unschedulable).toBe(true);

      const un = await hosts.uncordonHost(create(UncordonHostRequestSchema, { id: "host_aaaa" }), ctx("uncordonHost"));
      expect(un.host).toMatchObject({ unschedulable: false, draining: false });
      await hosts.uncordonHost(create(UncordonHostRequestSchema, { id: "host_aaaa" }), ctx("uncordonHost"));
      expect(await messages("host.")).toEqual([
        "host.cordoned token:tok_admin:admin: CordonHost: no new servers are placed on host box1; its servers keep running there",
        "host.uncordoned token:tok_admin:admin: UncordonHost: new servers may be placed on host box1 again",
      ]);
      expect((await contract.getHost("host_aaaa"))?.schedule).toEqual({ unschedulable: false });
    });

    it("DrainHost cordons and starts a drain (parallel 2 by default); again it updates the settings and keeps its start", async () => {
      const { contract, hosts, ctx, messages } = await setup();
      await addHost(contract, "host_aaaa", "box1");
      const res = await hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa" }), ctx("drainHost"));
      expect(res.host).toMatchObject({ unschedulable: true, draining: true, drainMessage: "drain started" });
      const first = (await contract.getHost("host_aaaa"))!.schedule;
      expect(first).toMatchObject({ unschedulable: true, drain: { parallel: 2, target: "", actor: "token:tok_admin:admin" } });
      // The same settings again: nothing to change.
      await hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa", parallel: 2 }), ctx("drainHost"));
      expect((await contract.getHost("host_aaaa"))!.schedule).toEqual(first);
      await hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa", parallel: 5 }), ctx("drainHost"));
      expect((await contract.getHost("host_aaaa"))!.schedule.drain).toMatchObject({ parallel: 5, startedAt: first.drain!.startedAt });
      // UncordonHost ends the drain.
      const un = await hosts.uncordonHost(create(UncordonHostRequestSchema, { id: "host_aaaa" }), ctx("uncordonHost"));
      expect(un.host).toMatchObject({ unschedulable: false, draining: false, drainMessage: "" });
      expect((await contract.getHost("host_aaaa"))!.schedule).toEqual({ unschedulable: false });
      expect(await messages("host.")).toEqual([
        "host.drain_started token:tok_admin:admin: DrainHost: host box1 is cordoned and its servers are transferred to other hosts, 2 at a time",
        "host.drain_updated token:tok_admin:admin: DrainHost again on host box1: 5 transfers at a time",
        "host.uncordoned token:tok_admin:admin: UncordonHost: new servers may be placed on host box1 again; its drain ends (drain settings changed; failed servers are tried again): transfers under way finish, no new ones start",
      ]);
    });

    it("DrainHost on a host with failed servers tries them again", async () => {
      const { contract, hosts, ctx, events } = await setup();
      await addHost(contract, "host_aaaa");
      await contract.commit([{ op: "host.schedule", id: "host_aaaa", schedule: { unschedulable: true, drain: { parallel: 2, target: "", startedAt: 1, actor: "a", started: ["srv_x"], failed: [{ serverId: "srv_x", name: "x", reason: "r" }] } } }]);
      await hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa", parallel: 2 }), ctx("drainHost"));
      const d = (await contract.getHost("host_aaaa"))!.schedule.drain!;
      expect(d.failed).toBeUndefined();
      expect(d.started).toBeUndefined();
      expect(await events("host.drain")).toEqual(["host.drain_updated"]);
    });

    it("clear errors: unknown host NotFound, removed host FailedPrecondition, no id InvalidArgument, no transfers FailedPrecondition, unknown target NotFound, operator PermissionDenied; nothing written", async () => {
      const { contract, hosts, ctx, events } = await setup();
      const noTransfers = await setup({ transfers: false });
      await addHost(contract, "host_aaaa");
      await addHost(contract, "host_gone");
      await contract.commit([{ op: "host.remove", id: "host_gone", at: 2 }]);
      await addHost(noTransfers.contract, "host_aaaa");
      const outcome = (p: unknown) => Promise.resolve(p).then(() => "ok", (err: unknown) => `${codeOf(err)}: ${(err as Error).message}`);
      expect(await outcome(hosts.cordonHost(create(CordonHostRequestSchema, { id: "host_nope" }), ctx("cordonHost")))).toMatch(/^NotFound: /);
      expect(await outcome(hosts.drainHost(create(DrainHostRequestSchema, { id: "host_nope" }), ctx("drainHost")))).toMatch(/^NotFound: /);
      expect(await outcome(hosts.uncordonHost(create(UncordonHostRequestSchema, { id: "host_gone" }), ctx("uncordonHost")))).toBe(
        "FailedPrecondition: host host_gone was removed (RemoveHost); it has no scheduling to change",
      );
      expect(await outcome(hosts.cordonHost(create(CordonHostRequestSchema, { id: " " }), ctx("cordonHost")))).toMatch(/^InvalidArgument: /);
      expect(await outcome(hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa", parallel: 17 }), ctx("drainHost")))).toMatch(/^InvalidArgument: .*at most 16/);
      expect(await outcome(hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa", target: "nope" }), ctx("drainHost")))).toMatch(/^NotFound: .*backup target/);
      expect(await outcome(hosts.cordonHost(create(CordonHostRequestSchema, { id: "host_aaaa" }), ctx("cordonHost", "operator")))).toMatch(/^PermissionDenied: CordonHost needs the admin role/);
      expect(await outcome(noTransfers.hosts.drainHost(create(DrainHostRequestSchema, { id: "host_aaaa" }), noTransfers.ctx("drainHost")))).toMatch(
        /^FailedPrecondition: transfers are not available on this manager/,
      );
      expect((await contract.getHost("host_aaaa"))?.schedule).toEqual({ unschedulable: false });
      expect((await noTransfers.contract.getHost("host_aaaa"))?.schedule).toEqual({ unschedulable: false });
      expect(await events("host.")).toEqual([]);
    });
  });
});
