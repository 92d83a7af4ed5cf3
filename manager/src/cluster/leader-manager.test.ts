// Two real managers on one database (startTestManager's, and a second one built
// on its store): one leads and runs the alert rules, the other follows; closing
// the leader hands the lease and the work to the other. Every wait is for
// evidence (a log line, a lease row, an alert), bounded by vi.waitFor's timeout.
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { buildManager, type Manager } from "../manager.js";
import { startTestManager, type TestManager } from "../../testing/fuzz-kit.js";

const PATIENCE = { timeout: 15_000, interval: 20 };

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const m of opened.splice(0).reverse()) await m.close();
});

/** A logger keeping its records (JSON objects) in `lines`. */
function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines, said: (msg: RegExp) => lines.filter((l) => msg.test(String(l.msg))) };
}

async function metric(url: string, name: string): Promise<string | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1];
}

describe("the leader lease in the manager", () => {
  it("one of two managers on a database leads; closing it hands the lease and the alert rules to the other", async () => {
    const a: TestManager = await startTestManager();
    opened.push(a);
    await vi.waitFor(() => expect(a.manager.leader.isLeader).toBe(true), PATIENCE);
    expect(await metric(a.url, "berth_leader")).toBe("1");

    // The second manager alerts on a host offline at once (the first waits the default 30 s).
    const b = capture();
    const mb: Manager = await buildManager({ listen: "127.0.0.1:0", ...a.storeConfig, log: b.log, ledger: { alertHostOfflineSeconds: 0, alertIntervalSeconds: 1 } });
    let closedB = false;
    opened.push({ close: async () => void (closedB || (await mb.close())) });
    const { url: urlB } = await mb.listen();
    await vi.waitFor(() => expect(b.said(/^another manager is the leader/)).toMatchObject([{ leader: a.manager.leader.holder }]), PATIENCE);
    expect(mb.leader.isLeader).toBe(false);
    expect(await metric(urlB, "berth_leader")).toBe("0");
    expect(await a.manager.store.getLease("leader")).toMatchObject({ holder: a.manager.leader.holder });

    await a.manager.store.commit([{ op: "host.insert", id: "host_gone", name: "gone", secretHash: "x", createdAt: 1 }]);
    // Two renewals by a later (at least one renew interval, 3 s, apart), b's 1 s alert rules would
    // have fired had they run on the follower.
    const renewed = async () => (await a.manager.store.getLease("leader"))!.expiresAt;
    for (let i = 0, seen = await renewed(); i < 2; i++, seen = await renewed()) await vi.waitFor(async () => expect(await renewed()).toBeGreaterThan(seen), PATIENCE);
    expect(await mb.store.listFiringAlerts()).toEqual([]);
    // Closing the leader releases the lease: b takes it at its next attempt and starts the alert rules.
    await a.manager.close();
    await vi.waitFor(() => expect(mb.leader.isLeader).toBe(true), PATIENCE);
    expect(b.said(/^this manager is the leader now/)).toMatchObject([{ holder: mb.leader.holder }]);
    expect(await metric(urlB, "berth_leader")).toBe("1");
    await vi.waitFor(async () => expect((await mb.store.listFiringAlerts()).map((x) => x.rule)).toContain("host_offline"), PATIENCE);
    // The evaluator logs after its commit resolves; the read above can see the row first.
    await vi.waitFor(() => expect(b.said(/^alert fired/).length).toBeGreaterThan(0), PATIENCE);
    await mb.close();
    closedB = true;
  }, 60_000);
});
