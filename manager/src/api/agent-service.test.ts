import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import { openDatabase } from "../store/database.js";
import { Store } from "../store/store.js";
import { TokenStore } from "../store/token-store.js";
import { addHost, openAgentStream, stubReconciler } from "../../testing/agent-stream.js";
import { createAgentService } from "./agent-service.js";

function setup() {
  const db = openDatabase(":memory:");
  const store = new Store(db);
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const service = createAgentService({ store, hub, ledger, reconciler: stubReconciler(), log: createLogger("silent", "test"), managerId: "mgr_test", heartbeatIntervalSeconds: 5 });
  const hosts: Record<string, string> = {};
  for (const id of ["host_aaaa", "host_bbbb"]) hosts[id] = addHost(store, id);
  /** Opens an agent stream as `hostId`. */
  const connect = (hostId: string, secret = hosts[hostId]!) => openAgentStream(service, hostId, secret);
  return { store, hub, ledger, service, connect, db };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe("AgentService.Connect", () => {
  it("ignores a command result for another host's command; applies the owner's", async () => {
    const { store, ledger, connect } = setup();
    const cmd = create(CommandSchema, { id: "cmd_of_b", serverId: "srv_b", kind: CommandKind.ENSURE_RUNNING });
    store.insertCommand({ command: cmd, hostId: "host_bbbb", createdAt: 1, deadlineAt: Date.now() + 60_000 });

    const a = connect("host_aaaa");
    expect(((await a.output.next()).value as ManagerMessage).body.case).toBe("welcome");
    a.send({ case: "inventory", value: { containers: [], dataDirs: [], dockerReachable: true } });
    a.send({ case: "commandResult", value: { commandId: "cmd_of_b", success: true, message: "forged" } });
    await tick();
    expect(store.getCommand("cmd_of_b")?.state).toBe("pending");
    expect(ledger.list({}).some((e) => e.type === "command.succeeded")).toBe(false);

    const b = connect("host_bbbb");
    await b.output.next();
    b.send({ case: "inventory", value: { containers: [], dataDirs: [], dockerReachable: true } });
    await tick();
    b.send({ case: "commandResult", value: { commandId: "cmd_of_b", success: true, message: "done" } });
    await tick();
    expect(store.getCommand("cmd_of_b")?.state).toBe("succeeded");
    expect(ledger.list({}).find((e) => e.type === "command.succeeded")).toMatchObject({ hostId: "host_bbbb", actor: "agent" });
    a.close();
    b.close();
  });

  it("refuses a wrong secret and a removed host", async () => {
    const { connect, db, store } = setup();
    const wrong = connect("host_aaaa", "not-the-secret");
    await expect(wrong.output.next()).rejects.toMatchObject({ code: Code.Unauthenticated });
    new TokenStore(db).removeHost("host_aaaa", 5);
    expect(store.getHost("host_aaaa")?.removedAt).toBe(5);
    const removed = connect("host_aaaa");
    const err = await removed.output.next().then(() => undefined, (e: unknown) => e as ConnectError);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect((err as Error | undefined)?.message).toMatch(/this host was removed from berth/);
  });

  it("ends a live stream with Unauthenticated when the hub revokes the host", async () => {
    const { connect, hub } = setup();
    const a = connect("host_aaaa");
    await a.output.next();
    const next = a.output.next();
    hub.disconnect("host_aaaa", "this host was removed", { revoked: true });
    const err = await next.then(() => undefined, (e: unknown) => e as ConnectError);
    expect(err?.code).toBe(Code.Unauthenticated);
    a.close();
  });
});
