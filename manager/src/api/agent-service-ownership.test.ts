/**
 * AgentService.Connect under host ownership (cluster/host-ownership.ts), two
 * managers as two stores on one database (BERTH_TEST_STORE=sqlite|postgres):
 * accepting a stream takes the host and welcomes the agent with the epoch,
 * and the manager the agent left neither marks the host offline nor ends the
 * new owner's term.
 */
import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { pino } from "pino";
import { HostOwnership } from "../cluster/host-ownership.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { hostLeaseName, type Store } from "../store/store.js";
import { addHost, openAgentStream, stubReconciler, type AgentStream } from "../../testing/agent-stream.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import { createAgentService } from "./agent-service.js";

const HOST = "host_aaaa";
const log = pino({ level: "silent" });
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function manager(store: Store, holder: string) {
  const ownership = new HostOwnership({ store, holder, log, isLeader: () => false });
  const hub = new AgentHub();
  const service = createAgentService({ store, hub, ledger: new Ledger(store), reconciler: stubReconciler(), log, managerId: "mgr_test", heartbeatIntervalSeconds: 5, ownership });
  return { ownership, hub, service };
}

async function welcomeEpoch(s: AgentStream): Promise<bigint> {
  const first = await s.output.next();
  if (first.done || first.value.body.case !== "welcome") throw new Error("expected a welcome");
  return first.value.body.value.ownerEpoch;
}

/** Reads the manager's side to its end: the handler's clean-up (offline, release) has run. */
async function drain(s: AgentStream): Promise<void> {
  for (;;) if ((await s.output.next()).done) return;
}

describe("AgentService with host ownership", () => {
  it("each accepted stream takes the host and welcomes the agent with the new epoch; the manager the agent left does not mark it offline nor release the new term", async () => {
    const a = await testStore();
    cleanup.push(() => a.close());
    const b = await sameDatabase(a);
    cleanup.push(() => b.close());
    const secret = await addHost(a, HOST);
    const A = manager(a, "mi_a");
    const B = manager(b, "mi_b");

    const onA = openAgentStream(A.service, HOST, secret);
    expect(await welcomeEpoch(onA)).toBe(1n);
    expect(A.ownership.epoch(HOST)).toBe(1);

    // The agent fails over to B (A's stream is not closed yet, as after a network split).
    const onB = openAgentStream(B.service, HOST, secret);
    expect(await welcomeEpoch(onB)).toBe(2n);
    onB.send({ case: "hello", value: { hostname: "a", dockerReachable: true } });
    onB.send({ case: "inventory", value: { dockerReachable: true } });
    await vi.waitFor(async () => expect((await a.getHost(HOST))?.online).toBe(true));

    // A's stream ends: its disconnection batch is fenced by its lost term, so nothing is written.
    onA.close();
    await drain(onA);
    expect((await a.getHost(HOST))?.online).toBe(true);
    expect(await a.getLease(hostLeaseName(HOST))).toMatchObject({ holder: "mi_b", epoch: 2 });
    expect((await a.getLease(hostLeaseName(HOST)))!.expiresAt).toBeGreaterThan(Date.now());

    // B's stream ends: B marks the host offline and ends its term (the epoch stays for the next take).
    onB.close();
    await drain(onB);
    expect((await a.getHost(HOST))?.online).toBe(false);
    expect(await a.getLease(hostLeaseName(HOST))).toMatchObject({ holder: "mi_b", epoch: 2, expiresAt: 0 });
    expect(B.ownership.owns(HOST)).toBe(false);
  });

  it("a stream that ends: its host's servers are queued for reconciling only once the term is released (a reconcile before saw a live term and skipped them)", async () => {
    const a = await testStore();
    cleanup.push(() => a.close());
    const secret = await addHost(a, HOST);
    const ownership = new HostOwnership({ store: a, holder: "mi_a", log, isLeader: () => true });
    const seen: (boolean | string)[] = [];
    const reconciler = {
      ...stubReconciler(),
      // When the servers are queued because the stream ended: is the term over in the store (or would a
      // reconcile now see it live)?
      enqueueHost: async (hostId: string, why: string) => {
        if (why !== "host disconnected") return; // the first inventory's "host connected" may land late on a slow store
        seen.push((await a.getLease(hostLeaseName(hostId)))?.expiresAt === 0 && !ownership.owns(hostId));
      },
    } as unknown as ReturnType<typeof stubReconciler>;
    const service = createAgentService({ store: a, hub: new AgentHub(), ledger: new Ledger(a), reconciler, log, managerId: "mgr_test", heartbeatIntervalSeconds: 5, ownership });
    const s = openAgentStream(service, HOST, secret);
    await welcomeEpoch(s);
    s.send({ case: "hello", value: { hostname: "a", dockerReachable: true } });
    s.send({ case: "inventory", value: { dockerReachable: true } });
    await vi.waitFor(async () => expect((await a.getHost(HOST))?.online).toBe(true));
    s.close();
    await drain(s);
    expect((await a.getLease(hostLeaseName(HOST)))!.expiresAt).toBe(0);
    expect(seen).toEqual([true]);
    // And then the leader may drive them (a host whose term is over).
    expect(await ownership.mayReconcile(HOST)).toBe(true);
  });

  it("a command the agent refused as stale (StaleOwner) stays open for the owner to resend; a real failure finishes it", async () => {
    const store = await testStore();
    cleanup.push(() => store.close());
    const secret = await addHost(store, HOST);
    const A = manager(store, "mi_a");
    const kind = CommandKind.ENSURE_RUNNING;
    await store.commit([
      { op: "command.insert", command: create(CommandSchema, { id: "cmd_1", serverId: "srv_1", kind }), hostId: HOST, createdAt: 1, deadlineAt: Date.now() + 60_000 },
    ]);
    const s = openAgentStream(A.service, HOST, secret);
    await welcomeEpoch(s);
    s.send({ case: "inventory", value: { dockerReachable: true } });
    s.send({ case: "commandResult", value: { commandId: "cmd_1", success: false, reason: "StaleOwner", message: "epoch 1 < 2" } });
    // A marker after it (one host's messages are applied in order).
    s.send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: 4242n } });
    await vi.waitFor(async () => expect((await store.getHost(HOST))?.facts.dataRootFreeBytes).toBe(4242));
    // Still open (sent again after the inventory), not failed.
    expect(["pending", "sent"]).toContain((await store.getCommand("cmd_1"))?.state);
    expect((await store.getCommand("cmd_1"))?.finishedAt ?? null).toBeNull();
    s.send({ case: "commandResult", value: { commandId: "cmd_1", success: false, reason: "ImagePullFailed", message: "no such image" } });
    await vi.waitFor(async () => expect((await store.getCommand("cmd_1"))?.state).toBe("failed"));
    s.close();
    await drain(s);
  });
});
