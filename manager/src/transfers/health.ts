/**
 * Which servers' latest transfer failed: what the `transfer_failed` alert
 * rule reads (alerts/rules.ts transferConditions) on every evaluation. Kept
 * in memory from the ledger: read once at start (the newest transfer event of
 * each server, within the ledger's retention), then each transfer event or
 * purge committed here or by another manager updates its server. A failure
 * stands until the server's next transfer is asked for or succeeds, or the
 * server is purged. A resync of the change feed reads everything again.
 */
import type { TransferFailureView } from "../alerts/rules.js";
import type { EventRecord } from "../domain/records.js";
import type { Logger } from "../log.js";
import type { Committed, Store } from "../store/store.js";
import { CommitFollower } from "../ledger/commit-follower.js";

const PAGE = 1000;
const ENDS = new Set(["server.transfer_requested", "server.transfer_succeeded", "server.purged"]);

export class TransferHealth extends CommitFollower {
  private readonly failed = new Map<string, TransferFailureView>();

  constructor(
    private readonly store: Pick<Store, "listNewestFirst" | "onCommit" | "getServer">,
    log: Logger,
  ) {
    super(store, log, "the transfer_failed alert");
  }

  /** The servers whose latest transfer failed. */
  failures(): TransferFailureView[] {
    return [...this.failed.values()];
  }

  protected heard(c: Committed): void {
    for (const e of c.events) this.note(e);
  }

  /** Applies one event (oldest to newest). */
  private note(e: EventRecord): void {
    if (!e.serverId) return;
    if (e.type === "server.transfer_failed") this.failed.set(e.serverId, viewOf(e));
    else if (ENDS.has(e.type)) this.failed.delete(e.serverId);
  }

  /**
   * The newest transfer event of every server, newest first: the first seen
   * per server decides. Only transfer events are read (not every server.*
   * event of the ledger); a server failed and since purged is dropped by
   * looking it up, which the few failures make cheap.
   */
  protected async loadAll(): Promise<void> {
    const seen = new Set<string>();
    const failed = new Map<string, TransferFailureView>();
    let beforeId: number | undefined;
    for (;;) {
      const page = await this.store.listNewestFirst({ project: null, typePrefix: "server.transfer_", limit: PAGE, ...(beforeId !== undefined ? { beforeId } : {}) });
      for (const e of page) {
        if (!e.serverId || seen.has(e.serverId)) continue;
        if (e.type === "server.transfer_failed") {
          seen.add(e.serverId);
          failed.set(e.serverId, viewOf(e));
        } else if (ENDS.has(e.type)) seen.add(e.serverId);
      }
      if (page.length < PAGE) break;
      beforeId = page[page.length - 1]!.id;
    }
    for (const id of [...failed.keys()]) if (!(await this.store.getServer(id))) failed.delete(id);
    this.failed.clear();
    for (const [k, v] of failed) this.failed.set(k, v);
  }
}

function viewOf(e: EventRecord): TransferFailureView {
  let to = "";
  try {
    const p = (e.payloadJson ? JSON.parse(e.payloadJson) : {}) as { to?: string };
    to = typeof p.to === "string" ? p.to : "";
  } catch {
    // a payload that is not JSON names no target
  }
  return { serverId: e.serverId, project: e.project, hostId: e.hostId, targetHost: to, reason: e.reason, message: e.message };
}
