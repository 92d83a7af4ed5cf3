import type { NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { msOf } from "./classify.js";

/** At most this many project networks are kept per host (the agent sends at most 256). */
export const MAX_NETWORKS_PER_HOST = 256;

/** A project network as a host last reported it. */
export interface ObservedNetwork {
  hostId: string;
  id: string;
  name: string;
  labels: Record<string, string>;
  createdMs: number;
  /** Containers attached to it (running or not). */
  containers: number;
}

/**
 * The project networks each host reported in its last full inventory, held
 * in memory (bounded per host). They serve orphan detection only, which
 * judges connected hosts only: a host's networks are known again from the
 * first inventory after it (or the manager) reconnects.
 */
export class NetworkInventory {
  private readonly byHost = new Map<string, ObservedNetwork[]>();

  /** Replaces what `hostId` reported (a full inventory's networks). */
  replace(hostId: string, networks: readonly NetworkInfo[]): void {
    const kept: ObservedNetwork[] = [];
    for (const n of networks.slice(0, MAX_NETWORKS_PER_HOST)) {
      // Bounded like everything a host sends: ids and names of sane length, a few short labels.
      if (!n.id || n.id.length > 128 || !n.name || n.name.length > 200) continue;
      const labels: Record<string, string> = {};
      for (const [k, v] of Object.entries(n.labels).slice(0, 32)) if (k.length <= 128 && v.length <= 512) labels[k] = v;
      kept.push({
        hostId,
        id: n.id,
        name: n.name,
        labels,
        createdMs: msOf(n.createdTime),
        containers: n.containers,
      });
    }
    this.byHost.set(hostId, kept);
  }

  /** A network was removed (DestroyOrphan): gone from the view before the next inventory. */
  forget(hostId: string, networkId: string): void {
    const list = this.byHost.get(hostId);
    if (list) this.byHost.set(hostId, list.filter((n) => n.id !== networkId));
  }

  /** The host was removed (HostService.RemoveHost): nothing it reported is kept. */
  drop(hostId: string): void {
    this.byHost.delete(hostId);
  }

  list(): ObservedNetwork[] {
    return [...this.byHost.values()].flat();
  }
}
