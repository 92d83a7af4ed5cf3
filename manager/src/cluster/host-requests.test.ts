// Requests that only the manager holding a host's agent stream can carry out,
// made on another manager of the same PostgreSQL database (host-requests.ts):
// they travel as ledger events through the change feed. Two stores on one
// database stand for the two managers (twoManagerStores); SQLite has one
// manager per file, so nothing is remote there and the suite is skipped.
import { afterEach, describe, expect, it, vi } from "vitest";
import { testEngine, twoManagerStores } from "../../testing/store.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import { REMOVED_REASON, serveHostRequests } from "./host-requests.js";

const H = "host_aaaaaaaaaaaa";
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.skipIf(testEngine() !== "postgres")("requests for a host whose stream is on another manager", () => {
  it("RemoveHost made on manager A closes the stream on manager B as revoked; ResyncHost made on A asks B's agent; B's own events are not acted on twice", async () => {
    const two = await twoManagerStores();
    cleanups.push(() => two.close());
    const [a, b] = two.stores;
    const streams = { disconnect: vi.fn(), sendResync: vi.fn(() => true) };
    const removed: string[] = [];
    cleanups.push(serveHostRequests(b, streams, createLogger("silent", "test"), (id) => removed.push(id)));
    const onA = new Ledger(a);
    const onB = new Ledger(b);

    await a.commit([onA.op({ type: "host.resync_requested", hostId: H, actor: "token:tok_x:ops", message: "ResyncHost" })]);
    await vi.waitFor(() => expect(streams.sendResync).toHaveBeenCalledWith(H));

    await a.commit([onA.op({ type: "host.removed", hostId: H, actor: "token:tok_x:ops", message: "RemoveHost" })]);
    await vi.waitFor(() => expect(streams.disconnect).toHaveBeenCalledWith(H, REMOVED_REASON, { revoked: true }));
    expect(removed).toEqual([H]);

    // B's own RemoveHost closed its stream itself (host-service.ts): its event is not handled again here.
    await b.commit([onB.op({ type: "host.removed", hostId: "host_bbbbbbbbbbbb", actor: "token:tok_x:ops", message: "RemoveHost" })]);
    await a.commit([onA.op({ type: "host.resync_requested", hostId: H, actor: "token:tok_x:ops", message: "marker" })]);
    await vi.waitFor(() => expect(streams.sendResync).toHaveBeenCalledTimes(2));
    expect(streams.disconnect).toHaveBeenCalledTimes(1);
  });
});
