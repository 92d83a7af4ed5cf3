import { describe, expect, it } from "vitest";
import type { ServerRecord } from "../domain/records.js";
import { newServer } from "../../testing/store.js";
import { RESUME_WINDOW, ServerChangeFeed, type ServerChange } from "./server-changes.js";

function record(id: string, version: number): ServerRecord {
  return { ...newServer({ id, hostId: "host_a" }), version };
}

/**
 * A database of server versions behind an asynchronous load; `hold(id)` makes
 * the next loads of `id` wait (reading the version when released, as a slow
 * query does) until `release()`.
 */
function fakeStore() {
  const versions = new Map<string, number>();
  const loads: string[] = [];
  let held: { id: string; waiting: (() => void)[] } | undefined;
  return {
    versions,
    loads,
    hold(id: string) {
      held = { id, waiting: [] };
    },
    release() {
      const w = held?.waiting ?? [];
      held = undefined;
      for (const f of w) f();
    },
    async load(id: string): Promise<ServerRecord | undefined> {
      loads.push(id);
      if (held?.id === id) await new Promise<void>((r) => held!.waiting.push(r));
      const v = versions.get(id);
      return v === undefined ? undefined : record(id, v);
    },
  };
}

const turn = () => new Promise((r) => setImmediate(r));
const seen = (batches: ServerChange[][]) => batches.map((b) => b.map((c) => `${c.seq}:${c.serverId}@${c.server?.version ?? "gone"}`));

describe("ServerChangeFeed", () => {
  it("a burst of notifications for one server is published once, its record loaded once for every subscriber", async () => {
    const db = fakeStore();
    const feed = new ServerChangeFeed((id) => db.load(id));
    const a: ServerChange[][] = [];
    const b: ServerChange[][] = [];
    feed.subscribe((batch) => a.push([...batch]));
    feed.subscribe((batch) => b.push([...batch]));
    for (let v = 1; v <= 5; v++) {
      db.versions.set("srv_1", v);
      feed.notify("srv_1");
    }
    db.versions.set("srv_2", 1);
    feed.notify("srv_2");
    await turn();
    await feed.flush();
    expect(seen(a)).toEqual([["1:srv_1@5", "2:srv_2@1"]]);
    expect(b).toEqual(a);
    expect(db.loads).toEqual(["srv_1", "srv_2"]);
  });

  it("a flush still loading is not overtaken by the next: changes are published in order, the latest record last", async () => {
    const db = fakeStore();
    const feed = new ServerChangeFeed((id) => db.load(id));
    const batches: ServerChange[][] = [];
    feed.subscribe((batch) => batches.push([...batch]));

    db.versions.set("srv_1", 1);
    db.hold("srv_1"); // the first flush's read of srv_1 is slow
    feed.notify("srv_1");
    await turn(); // that flush has started and waits for its read

    db.versions.set("srv_1", 2);
    feed.notify("srv_1"); // changed again meanwhile
    db.versions.set("srv_2", 1);
    feed.notify("srv_2");
    await turn(); // the next flush is due now; it must wait
    expect(batches).toEqual([]);

    db.versions.set("srv_1", 3);
    db.release(); // the slow read answers with what is there now
    await feed.flush();
    // Sequence numbers follow publication; srv_1's last change is published after its first.
    expect(seen(batches)).toEqual([["1:srv_1@3"], ["2:srv_1@3", "3:srv_2@1"]]);
    expect(feed.currentSeq).toBe(3);
  });

  it("resumes from a sequence number: each server changed since once, with its latest number and record; outside the window, not at all", async () => {
    const db = fakeStore();
    const feed = new ServerChangeFeed((id) => db.load(id));
    feed.subscribe(() => {});
    db.versions.set("srv_1", 1);
    db.versions.set("srv_2", 1);
    feed.notify("srv_1");
    await feed.flush(); // seq 1
    feed.notify("srv_2");
    await feed.flush(); // seq 2
    db.versions.set("srv_1", 2);
    feed.notify("srv_1");
    await feed.flush(); // seq 3
    db.versions.delete("srv_2");
    feed.notify("srv_2", { project: "default", hostId: "host_a" });
    await feed.flush(); // seq 4: purged

    const since1 = await feed.changesSince(1);
    expect(since1?.map((c) => `${c.seq}:${c.serverId}@${c.server?.version ?? "gone"}:${c.project}`)).toEqual(["3:srv_1@2:default", "4:srv_2@gone:default"]);
    expect(await feed.changesSince(4)).toEqual([]);
    expect(await feed.changesSince(5)).toBeUndefined(); // from the future: another process's token

    for (let i = 0; i < RESUME_WINDOW; i++) {
      feed.notify("srv_1");
      await feed.flush();
    }
    expect(await feed.changesSince(1)).toBeUndefined();
    expect((await feed.changesSince(feed.currentSeq - 1))?.map((c) => c.serverId)).toEqual(["srv_1"]);
  });
});

describe("ServerChangeFeed, a subscriber that throws", () => {
  it("is reported; the other subscribers get the batch and later batches still flow", async () => {
    const db = fakeStore();
    const errors: unknown[] = [];
    const feed = new ServerChangeFeed((id) => db.load(id), { onSubscriberError: (err) => errors.push(err) });
    feed.subscribe(() => {
      throw new Error("watch bug");
    });
    const got: ServerChange[][] = [];
    feed.subscribe((batch) => got.push([...batch]));
    db.versions.set("srv_1", 1);
    feed.notify("srv_1");
    await expect(feed.flush()).resolves.toBeUndefined();
    db.versions.set("srv_1", 2);
    feed.notify("srv_1");
    await feed.flush();
    expect(seen(got)).toEqual([["1:srv_1@1"], ["2:srv_1@2"]]);
    expect(errors.map(String)).toEqual(["Error: watch bug", "Error: watch bug"]);
  });
});
