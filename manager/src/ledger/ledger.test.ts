import { afterEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { pino, type Logger } from "pino";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { openDatabase } from "../store/sqlite/database.js";
import { SqliteTables } from "../store/sqlite/tables.js";
import { initialStatus, type ServerRecord } from "../domain/records.js";
import { Ledger } from "./ledger.js";
import { LOAD_RETRY_MS, ServerChangeFeed, type ServerChange } from "./server-changes.js";

const open: SqliteTables[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function record(id: string): ServerRecord {
  return {
    id,
    project: "default",
    name: id,
    hostId: "host_a",
    generation: 1,
    spec: create(ServerSpecSchema, { name: id, image: "busybox" }),
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: 1,
    updatedAt: 1,
    deletedAt: null,
    version: 1,
  };
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
    await new Promise((r) => setTimeout(r, LOAD_RETRY_MS + 200));
    expect(got.map((c) => c.serverId)).toEqual(["srv_good1", "srv_good2", "srv_bad"]);
    expect(got[2]!.server?.id).toBe("srv_bad");
  });
});

describe("Ledger", () => {
  it("a listener that throws: the event is stored, other listeners hear it, and an error line names it", () => {
    const store = new SqliteTables(openDatabase(":memory:"));
    open.push(store);
    const { log, lines } = capture();
    const ledger = new Ledger(store, Date.now, log);
    const heard: number[] = [];
    ledger.subscribe(() => {
      throw new Error("listener bug");
    });
    ledger.subscribe((id) => heard.push(id));
    const id = ledger.append({ type: "host.connected", hostId: "host_a", message: "hi" });
    expect((await ledger.list({})).map((e) => e.id)).toEqual([id]);
    expect(heard).toEqual([id]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: expect.stringMatching(/event listener failed/), type: "host.connected", event: id });
    expect((lines[0]!.err as { message: string }).message).toBe("listener bug");
  });

  it("a changed server whose record cannot be read is logged, not silently lost", async () => {
    const store = new SqliteTables(openDatabase(":memory:"));
    open.push(store);
    const { log, lines } = capture();
    const ledger = new Ledger(store, Date.now, log);
    ledger.servers.subscribe(() => {});
    store.getServer = () => {
      throw new Error("disk I/O error");
    };
    ledger.serverChanged("srv_x");
    await ledger.servers.flush();
    expect(lines[0]).toMatchObject({ server: "srv_x", retrying: true, msg: expect.stringMatching(/could not read a changed server/) });
  });
});
