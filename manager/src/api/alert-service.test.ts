import type { AlertRecord } from "../domain/records.js";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import { testStore } from "../../testing/store.js";
import { createAlertService } from "./alert-service.js";
import { errorInterceptor } from "./errors.js";

const OPERATOR: Caller = { tokenId: "tok_op", name: "ops", role: "operator", project: null };
const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "operator", project: "a" };

const alert = (id: string, over: Partial<AlertRecord>): AlertRecord => ({
  id,
  rule: "crash_loop",
  subject: `server:srv_${id}`,
  project: "a",
  hostId: "host_1",
  serverId: `srv_${id}`,
  severity: "critical",
  state: "firing",
  message: "crash-looping",
  firstSeen: 1,
  lastSeen: 1,
  resolvedAt: null,
  acknowledgedBy: "",
  acknowledgedAt: null,
  mutedUntil: null,
  ...over,
});

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

async function setup() {
  const contract = await testStore();
  cleanup.push(() => contract.close());
  const ledger = new Ledger(contract, () => 5000);
  ledger.follow(contract);
  await contract.commit([
    { op: "alert.insert", alert: alert("alr_a", {}) },
    { op: "alert.insert", alert: alert("alr_b", { project: "b" }) },
    { op: "alert.insert", alert: alert("alr_host", { rule: "host_offline", subject: "host:host_1", project: "", serverId: "" }) },
  ]);
  const client = (caller: Caller) => {
    const as: Interceptor = (next) => (req) => {
      req.contextValues.set(callerKey, caller);
      return next(req);
    };
    const t = createRouterTransport((r) => r.service(AlertService, createAlertService({ store: contract, ledger, now: () => 5000 })), {
      router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] },
    });
    return createClient(AlertService, t);
  };
  const events = async () => (await contract.listNewestFirst({ project: null, typePrefix: "alert.", limit: 10 })).map((e) => `${e.type} ${e.correlationId} ${e.actor}`);
  return { client, events };
}

const codeOf = (p: Promise<unknown>) => p.then(() => "ok", (e: unknown) => ConnectError.from(e).code);

describe("AlertService", () => {
  it("acknowledges and mutes with one event each, answering the alert as stored", async () => {
    const { client, events } = await setup();
    const acked = await client(TEAM_A).acknowledgeAlert({ id: "alr_a" });
    expect(acked.alert?.acknowledgedBy).toBe("token:tok_a:a");
    const muted = await client(TEAM_A).muteAlert({ id: "alr_a", durationSeconds: 60 });
    expect(Number(muted.alert?.mutedUntil?.seconds)).toBe(65);
    expect(await events()).toEqual(["alert.muted alr_a token:tok_a:a", "alert.acknowledged alr_a token:tok_a:a"]);
  });

  it("another project's alert is NotFound; a host alert needs an all-projects token; nothing is written", async () => {
    const { client, events } = await setup();
    expect(await codeOf(client(TEAM_A).acknowledgeAlert({ id: "alr_b" }))).toBe(Code.NotFound);
    expect(await codeOf(client(TEAM_A).muteAlert({ id: "alr_host", durationSeconds: 60 }))).toBe(Code.PermissionDenied);
    expect(await events()).toEqual([]);
    expect(await codeOf(client(OPERATOR).muteAlert({ id: "alr_host", durationSeconds: 60 }))).toBe("ok");
    expect((await client(TEAM_A).listAlerts({})).alerts.map((a) => a.id).sort()).toEqual(["alr_a", "alr_host"]);
  });
});
