import { afterEach, describe, expect, it, vi } from "vitest";
import { pino, type Logger } from "pino";
import type { ServerRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { Ledger } from "./ledger.js";
import { LOAD_RETRY_MS, ServerChangeFeed, type ServerChange } from "./server-changes.js";

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

async function openTestStore(): Promise<Store> {
  const store = await testStore();
  opened.push(store);
  return store;
}

function record(id: string): ServerRecord {
  return { ...newServer({ id, hostId: "host_a" }), version: 1 };
}

/** A logger whose error lines land in `lines`. */
function capture(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "error" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

describe("ServerChangeFeed", () => {
  it("one record that cannot be read holds back only its own change; it is tried again", async () => {
    let broken = true;
    const errors: string[] = [];
    const feed = new ServerChangeFeed(
      async (id) => {
        if (id === "srv_bad" && broken) throw new Error("SQLITE_IOERR");
        return record(id);
      },
      { onLoadError: (id) => errors.push(id) },
    );
    const got: ServerChange[] = [];
    feed.subscribe((batch) => got.push(...batch));
    feed.notify("srv_good1");
    feed.notify("srv_bad");
    feed.notify("srv_good2");
    await feed.flush();
    expect(got.map((c) => c.serverId)).toEqual(["srv_good1", "srv_good2"]);
    expect(errors).toEqual(["srv_bad"]);

    broken = false;
    // Retried on its own after LOAD_RETRY_MS: wait for the evidence, not a fixed time.
    await vi.waitFor(() => expect(got.map((c) => c.serverId)).toEqual(["srv_good1", "srv_good2", "srv_bad"]), { timeout: LOAD_RETRY_MS + 5000 });
    expect(got[2]!.server?.id).toBe("srv_bad");
  });
});

describe("Ledger", () => {
  it("a listener that throws: the event is stored, other listeners hear it, and an error line names it", async () => {
    const store = await openTestStore();
    const { log, lines } = capture();
    const ledger = new Ledger(store, Date.now, log);
    ledger.follow(store);
    const heard: number[] = [];
    ledger.subscribe(() => {
      throw new Error("listener bug");
    });
    ledger.subscribe((id) => heard.push(id));
    const committed = await store.commit([ledger.op({ type: "host.connected", hostId: "host_a", message: "hi" })]);
    const id = committed.events[0]!.id;
    expect((await ledger.list({})).map((e) => e.id)).toEqual([id]);
    expect(heard).toEqual([id]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: expect.stringMatching(/event listener failed/), type: "host.connected", event: id });
    expect((lines[0]!.err as { message: string }).message).toBe("listener bug");
  });

  it("a changed server whose record cannot be read is logged, not silently lost", async () => {
    const real = await openTestStore();
    // The store fails every read of a server record (a disk error).
    const store = new Proxy(real, {
      get(target, prop) {
        if (prop === "getServer") return () => Promise.reject(new Error("disk I/O error"));
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const { log, lines } = capture();
    const ledger = new Ledger(store, Date.now, log);
    ledger.servers.subscribe(() => {});
    ledger.serverChanged("srv_x");
    await ledger.servers.flush();
    expect(lines[0]).toMatchObject({ server: "srv_x", retrying: true, msg: expect.stringMatching(/could not read a changed server/) });
  });
});
