/**
 * The store contract's install logs (store.ts installLog.record,
 * installLogs; migration 17), on the engine testStore() opens
 * (BERTH_TEST_STORE=sqlite|postgres): bytes read back as written (any byte,
 * 64 KiB), newest attempt first, an attempt recorded again replaced, only
 * the newest INSTALL_LOGS_KEPT kept per server, and the rows gone with the
 * server's record.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newServer, testStore } from "../../testing/store.js";
import { INSTALL_LOGS_KEPT, type InstallLogRecord, type Store } from "./store.js";

const HOST = "host_1";
let store: Store;
beforeEach(async () => {
  store = await testStore();
  await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: HOST }) }, { op: "server.insert", server: newServer({ id: "srv_b", hostId: HOST, name: "b" }) }]);
});
afterEach(() => store.close());

function attempt(serverId: string, n: number, o: Partial<InstallLogRecord> = {}): InstallLogRecord {
  return {
    serverId,
    attempt: n,
    commandId: `cmd_${serverId}_${n}`,
    startedAt: 1000 * n,
    finishedAt: 1000 * n + 500,
    exitCode: n === 1 ? 3 : 0,
    timedOut: false,
    truncated: false,
    log: new TextEncoder().encode(`attempt ${n} of ${serverId}\n`),
    ...o,
  };
}

describe("install logs in the store", () => {
  it("reads back every field and every byte as written", async () => {
    const bytes = new Uint8Array(65536).map((_, i) => i % 256);
    await store.commit([{ op: "installLog.record", log: attempt("srv_a", 1, { timedOut: true, truncated: true, exitCode: 137, log: bytes }) }]);
    const [got] = await store.installLogs("srv_a");
    expect(got).toMatchObject({ serverId: "srv_a", attempt: 1, commandId: "cmd_srv_a_1", startedAt: 1000, finishedAt: 1500, exitCode: 137, timedOut: true, truncated: true });
    expect(Buffer.from(got!.log).equals(Buffer.from(bytes))).toBe(true);
    expect(await store.installLogs("srv_b")).toEqual([]);
  });

  it("lists newest first, replaces an attempt recorded again, and keeps the newest three per server", async () => {
    for (let n = 1; n <= 5; n++) await store.commit([{ op: "installLog.record", log: attempt("srv_a", n) }]);
    await store.commit([{ op: "installLog.record", log: attempt("srv_b", 1) }]);
    await store.commit([{ op: "installLog.record", log: attempt("srv_a", 5, { exitCode: 9, log: new TextEncoder().encode("again") }) }]);
    const a = await store.installLogs("srv_a");
    expect(INSTALL_LOGS_KEPT).toBe(3);
    expect(a.map((l) => l.attempt)).toEqual([5, 4, 3]);
    expect(a[0]!.exitCode).toBe(9);
    expect(new TextDecoder().decode(a[0]!.log)).toBe("again");
    expect((await store.installLogs("srv_b")).map((l) => l.attempt)).toEqual([1]);
  });

  it("goes with the server's record", async () => {
    await store.commit([{ op: "installLog.record", log: attempt("srv_a", 1) }, { op: "installLog.record", log: attempt("srv_b", 1) }]);
    await store.commit([{ op: "server.delete", id: "srv_a" }]);
    expect(await store.installLogs("srv_a")).toEqual([]);
    expect((await store.installLogs("srv_b")).length).toBe(1);
  });
});
