import { afterEach, describe, expect, it } from "vitest";
import { pino, type Logger } from "pino";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { Ledger } from "./ledger.js";

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

async function openTestStore(): Promise<Store> {
  const store = await testStore();
  opened.push(store);
  return store;
}

/** A logger whose error lines land in `lines`. */
function capture(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "error" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

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

  it("server changes that cannot be read are logged, not silently lost", async () => {
    const real = await openTestStore();
    // The store fails every read of server changes (a disk error).
    const store = new Proxy(real, {
      get(target, prop) {
        if (prop === "serverChangesSince") return () => Promise.reject(new Error("disk I/O error"));
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const { log, lines } = capture();
    const ledger = new Ledger(store, Date.now, log);
    ledger.follow(store);
    await ledger.servers.ready;
    ledger.servers.subscribe(() => {});
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_x", hostId: "host_a" }) }]);
    await ledger.servers.flush();
    ledger.servers.close();
    expect(lines[0]).toMatchObject({ msg: expect.stringMatching(/could not read server changes/) });
  });
});
