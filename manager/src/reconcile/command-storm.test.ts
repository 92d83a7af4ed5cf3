/**
 * The command storm of a stale inventory, end to end through the agent link:
 * the real AgentService, AgentHub, Reconciler and store, with a scripted agent
 * that answers like the real one (a removal reports no container; the
 * inventory it was building when the removal ran arrives after the result).
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { CommandKind, ContainerInfoSchema, type Command, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import { createAgentService } from "../api/agent-service.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { addHost, openAgentStream, type AgentBody } from "../../testing/agent-stream.js";
import { REPEAT_HOLD_MS } from "./plan.js";
import { Reconciler } from "./reconciler.js";

const HOST = "host_aaaaaaaaaaaa";
const SERVER = "srv_bbbbbbbbbbbb";
/** Free bytes the scripted agent reports last: seen on the host, the manager has handled its script. */
const MARKER = 123_456_789n;

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

/**
 * A soft-deleted server whose container the host still has, and a scripted
 * agent whose first answer to ensure-removed races an inventory: the
 * inventory was listed before the removal (it still shows the container) and
 * is sent after the removal's result. `withSeq`: the agent numbers its
 * observations (AgentMessage.seq), as agents do since the numbering exists.
 */
async function softDeleteRacingAnInventory(withSeq: boolean): Promise<{ issued: number; store: Store; ledger: Ledger }> {
  const store = await testStore();
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const unfollow = ledger.follow(store);
  const log = createLogger("silent", "test");
  const managerId = await store.clusterId();
  const secret = await addHost(store, HOST, "h");
  const t = Date.now();
  await store.commit([
    {
      op: "server.insert",
      server: newServer({
        id: SERVER,
        hostId: HOST,
        name: "mc",
        generation: 2,
        spec: { desiredState: DesiredState.RUNNING },
        dataInitialized: true,
        createdAt: t - 10_000,
        updatedAt: t - 1_000,
        deletedAt: t - 1_000,
      }),
    },
  ]);
  const reconciler = new Reconciler({ store: store, hub, log, managerId, ledger });
  const service = createAgentService({ store: store, hub, ledger, reconciler, log, managerId, heartbeatIntervalSeconds: 5 });
  const stream = openAgentStream(service, HOST, secret);
  cleanup.push(async () => {
    stream.close();
    // The stream's end is recorded (host offline) before the store closes.
    await vi.waitFor(async () => expect((await store.getHost(HOST))?.online).toBe(false), { timeout: 10_000, interval: 10 });
    await reconciler.stop();
    unfollow();
    await store.close();
  });
  let counter = 0n;
  const nextSeq = () => (withSeq ? ++counter : 0n);
  const send = (body: AgentBody, seq = nextSeq()) => stream.send(body, seq);
  const container = create(ContainerInfoSchema, {
    id: "c".repeat(64),
    name: "berth-mc",
    state: "exited",
    labels: { "berth.server": SERVER, "berth.manager": managerId, "berth.generation": "1", "berth.spec-hash": "h" },
  });
  const inventory = (containers: (typeof container)[]): AgentBody => ({
    case: "inventory",
    value: { containers, dataDirs: [{ serverId: SERVER, exists: true }], dockerReachable: true },
  });

  const output = stream.output;
  send(inventory([container]));
  let first = true;
  const agent = (async () => {
    for (;;) {
      const next = await output.next().catch(() => ({ done: true as const, value: undefined }));
      if (next.done) return;
      const m = next.value as ManagerMessage;
      if (m.body.case !== "command") continue;
      const cmd: Command = m.body.value;
      if (cmd.kind !== CommandKind.ENSURE_REMOVED) throw new Error(`unexpected ${CommandKind[cmd.kind]}`);
      if (first) {
        first = false;
        // The periodic inventory lists the engine now (the container is still there) ...
        const listedAt = nextSeq();
        // ... the removal runs: Docker's destroy event, then the result (no container) ...
        send({ case: "containerEvent", value: { action: "destroy", removed: true, container: { ...container, state: "removed" } } });
        send({ case: "commandResult", value: { commandId: cmd.id, success: true } });
        // ... and the inventory goes out after them. A heartbeat then marks the end of the script:
        // once the manager has recorded it, it has handled everything before it (one stream is
        // handled in order).
        send(inventory([container]), listedAt);
        send({ case: "heartbeat", value: { dockerReachable: true, dataRootFreeBytes: MARKER } });
      } else {
        // Nothing left to remove: the agent answers at once.
        send({ case: "commandResult", value: { commandId: cmd.id, success: true } });
      }
    }
  })();
  cleanup.push(() => void agent);
  // Wait for the outcome, however slow the machine: the script handled (the marker heartbeat
  // recorded), what it caused reconciled, the container gone from the manager's view and no
  // command open; then give a storm the time it would need to show.
  await vi.waitFor(async () => expect((await store.getHost(HOST))?.facts.dataRootFreeBytes).toBe(Number(MARKER)), { timeout: 10_000, interval: 20 });
  await reconciler.queue.idle();
  // Without numbering, the stale inventory is recorded in the same millisecond as the removal's
  // success about one run in twenty: times cannot say it is newer, so plan() holds the repeat for
  // REPEAT_HOLD_MS (plan.ts holdRepeat) and the second removal comes when the hold ends.
  await vi.waitFor(
    async () => {
      expect(await store.containersForServer(HOST, SERVER)).toHaveLength(0);
      expect(await store.openCommandForServer(SERVER)).toBeUndefined();
    },
    { timeout: REPEAT_HOLD_MS + 10_000, interval: 20 },
  );
  await reconciler.queue.idle();
  await new Promise((r) => setTimeout(r, 400));
  const issued = (await ledger.list({ serverId: SERVER })).filter((e) => e.type === "command.issued").length;
  return { issued, store, ledger };
}

describe("a stale inventory after a finished ensure-removed", () => {
  it("does not bring the container back: one command for one soft delete (agent numbers its observations)", async () => {
    const { issued, store } = await softDeleteRacingAnInventory(true);
    expect(issued).toBe(1);
    expect(await store.containersForServer(HOST, SERVER)).toHaveLength(0);
  });

  // Up to REPEAT_HOLD_MS longer than the default timeout allows (see the wait above).
  it("an agent that does not number them: at most one more removal, no storm", { timeout: REPEAT_HOLD_MS + 30_000 }, async () => {
    // The stale inventory is applied; the next removal's success then clears the
    // container from the manager's view, so the reconciler stops there.
    const { issued, store } = await softDeleteRacingAnInventory(false);
    expect(issued).toBeLessThanOrEqual(2);
    expect(await store.containersForServer(HOST, SERVER)).toHaveLength(0);
  });
});
