import { hostRanges, HOSTS_PER_READ, readPages } from "../store/pages.js";
import { turns } from "../turns.js";
import { CommandKind } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import type { OrphanView } from "../alerts/rules.js";
import type { Store } from "../store/store.js";
import type { DataRootEntry, HostRecord, ObservedContainer } from "../domain/records.js";
import { classifyOrphans, DEFAULT_ORPHAN_GRACE_MS, type HostFact, type OrphanFinding } from "./classify.js";
import type { NetworkInventory } from "./network-inventory.js";

export interface OrphanDetectorDeps {
  store: Pick<Store, "serverPlacements" | "listHosts" | "getHost" | "openCommandsForHost" | "listOrphanCandidates" | "listDataRootEntries" | "serverIdsWithOpenCommands">;
  /** The host's agent is connected with its inventory stored (AgentHub.isConnected). */
  isConnected: (hostId: string) => boolean;
  managerId: string;
  /** Project networks the hosts reported; absent: no network orphans. */
  networks?: NetworkInventory;
  /** Containers younger than this are not flagged (default 60 s). */
  graceMs?: number;
  now?: () => number;
}

/**
 * Reads what classifyOrphans needs from the store (the I/O edge of orphan
 * detection) and classifies. Used by OrphanService and by the alert rules.
 */
export class OrphanDetector {
  readonly graceMs: number;
  private readonly now: () => number;

  constructor(private readonly deps: OrphanDetectorDeps) {
    this.graceMs = deps.graceMs ?? DEFAULT_ORPHAN_GRACE_MS;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Everything that is an orphan now. The reads are separate (no snapshot):
   * a change landing between them can make one listing show a finding that
   * just stopped being one, or miss one that just became one; the grace
   * period and the next listing settle it, and every action re-checks.
   */
  async find(opts: { includeUnmanaged: boolean }): Promise<OrphanFinding[]> {
    const { store, isConnected, managerId } = this.deps;
    const servers = await readPages((page) => store.serverPlacements(page));
    const live = await store.listHosts();
    const known = new Set(live.map((h) => h.id));
    // Removed hosts are not listed by listHosts; stranded servers still point at them.
    const gone: Pick<HostRecord, "id" | "name" | "removedAt" | "facts">[] = [];
    for (const id of new Set(servers.map((s) => s.hostId).filter((id) => !known.has(id)))) {
      gone.push((await store.getHost(id)) ?? { id, name: id, removedAt: 0, facts: {} });
    }
    const hosts: HostFact[] = [...live, ...gone].map((h) => ({
      id: h.id,
      name: h.name,
      removedAt: h.removedAt,
      connected: h.removedAt === null && isConnected(h.id),
      dataRoot: h.facts.dataRoot ?? "",
    }));
    // Per host, and the observations a range of hosts at a time: each read in its slot of the
    // event-loop turn (reading every host's containers at once held the loop for 120 ms at
    // 10,000 containers, docs/benchmarks.md).
    const busyContainerIds = new Set<string>();
    const connected = hosts.filter((h) => h.connected);
    for (const [i, h] of connected.entries()) {
      // One host at a time: on PostgreSQL, 50 reads at once took the pool from the host-lease
      // renewals, and hosts went offline (a quick run, docs/benchmarks.md).
      if (i % HOSTS_PER_READ === 0) await turns.slot();
      for (const c of await store.openCommandsForHost(h.id)) if (c.command.kind === CommandKind.COPY_DATA && c.command.containerId) busyContainerIds.add(c.command.containerId);
    }
    const containers: ObservedContainer[] = [];
    const dataRootEntries: (DataRootEntry & { hostId: string })[] = [];
    for (const range of hostRanges(hosts.map((h) => h.id))) {
      await turns.slot();
      const [c, d] = await Promise.all([store.listOrphanCandidates(managerId, opts.includeUnmanaged, range), store.listDataRootEntries(range)]);
      for (const x of c) containers.push(x);
      for (const x of d) dataRootEntries.push(x);
    }
    return classifyOrphans({
      managerId,
      now: this.now(),
      graceMs: this.graceMs,
      includeUnmanaged: opts.includeUnmanaged,
      hosts,
      servers,
      containers,
      dataRootEntries,
      busyServerIds: await store.serverIdsWithOpenCommands(),
      busyContainerIds,
      networks: this.deps.networks?.list() ?? [],
    });
  }

  /**
   * What the `orphan_found` alert rule watches: untracked containers (this
   * manager's, without a record) and stranded servers. Foreign and unmanaged
   * containers are someone else's, and stray data is usually data an
   * operator chose to keep (a purge without remove_data): listed, not alerted.
   */
  async alertViews(): Promise<OrphanView[]> {
    const out: OrphanView[] = [];
    for (const f of await this.find({ includeUnmanaged: false })) {
      if (f.kind === OrphanKind.UNTRACKED) out.push({ hostId: f.hostId, kind: "container", id: f.containerId, reason: "untracked" });
      else if (f.kind === OrphanKind.STRANDED) out.push({ hostId: f.hostId, kind: "server", id: f.serverId, reason: "stranded" });
    }
    return out;
  }
}
