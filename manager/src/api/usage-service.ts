/**
 * UsageService: what servers and hosts use, from the usage feed of this
 * manager's agents and the 5-minute buckets every manager writes to the
 * store (usage/usage-feed.ts).
 */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  GetUsageResponseSchema,
  UsageService,
  UsageWindow,
  WatchUsageResponseSchema,
  type GetUsageRequest,
  type HostUsage,
  type ServerUsage,
  type WatchUsageRequest,
  type WatchUsageResponse,
} from "@berth/proto/berth/v1/usage_pb.js";
import { callerOf, projectFor } from "../auth/caller.js";
import { Phase } from "@berth/proto/berth/v1/server_pb.js";
import type { HostPresence } from "../cluster/presence.js";
import type { AgentHub } from "../link/agent-hub.js";
import { Wakeup, watchEnded } from "../ledger/wakeup.js";
import type { Store } from "../store/store.js";
import type { UsageFeed, UsageUpdate } from "../usage/usage-feed.js";
import { loadHost, loadVisibleServer } from "./find-server.js";

export interface UsageServiceDeps {
  store: Pick<Store, "getServer" | "findServerByName" | "listServers" | "getHost">;
  usage: UsageFeed;
  /** This manager's own agent streams. */
  hub: Pick<AgentHub, "isConnected">;
  /** Which hosts are connected here or to another manager (for GetUsage's note); default: this manager's streams. */
  presence?: Pick<HostPresence, "isConnected">;
}

/** "PHASE_STOPPED" → "stopped". */
function phaseName(p: Phase): string {
  return (Phase[p] ?? "unknown").toLowerCase().replace(/_/g, " ");
}

/** Samples per WatchUsage message at most (a large fleet's first message is cut into several). */
const PER_MESSAGE = 500;

export function createUsageService(deps: UsageServiceDeps): ServiceImpl<typeof UsageService> {
  const { store, usage, hub } = deps;
  const presence = deps.presence ?? hub;

  /** What a 1 h window made partly or wholly of 5-minute buckets says. */
  const COARSE_NOTE =
    "where this manager holds no 10 s samples, the hour shows the stored 5-minute averages: the 10 s detail is kept by the manager the host's agent is connected to, since it connected";

  /** Why a host has no sample here. */
  function hostNote(hostId: string): string {
    if (!hub.isConnected(hostId)) {
      return presence.isConnected(hostId)
        ? "this host's agent is connected to another manager of this database: ask that manager for the latest sample (the 5-minute history is in the store, served by every manager)"
        : "the host is offline: nothing is measured until its agent connects again";
    }
    return "nothing measured yet: agents report usage every 10 s (an agent started with --usage-interval 0, or older than usage reporting, reports none)";
  }

  /** Why there is no latest sample, and what the hour's points are when some are buckets. */
  function notes(why: string, coarse: boolean): string {
    return [why, coarse ? COARSE_NOTE : ""].filter((n) => n !== "").join("; ");
  }

  return {
    async getUsage(req: GetUsageRequest, ctx: HandlerContext) {
      const caller = callerOf(ctx);
      const window = req.window === UsageWindow.DAY ? "24h" : "1h";
      if (req.subject.case === "server") {
        const server = await loadVisibleServer(store, caller, req.subject.value);
        const latest = usage.latestServer(server.id);
        const history = await usage.history("server", server.id, window);
        let note = "";
        if (!latest) {
          note = !server.hostId
            ? "the server has no host yet"
            : server.status.phase !== Phase.RUNNING
              ? `nothing is measured while the server is not running (it is ${phaseName(server.status.phase)})`
              : hostNote(server.hostId);
        }
        return create(GetUsageResponseSchema, { ...(latest?.sample ? { latest: latest.sample } : {}), points: history.points, note: notes(note, history.coarse) });
      }
      const host = await loadHost(store, req.subject.value ?? "");
      const latest = usage.latestHost(host.id);
      const history = await usage.history("host", host.id, window);
      return create(GetUsageResponseSchema, {
        ...(latest?.sample ? { latest: latest.sample } : {}),
        points: history.points,
        note: notes(latest ? "" : hostNote(host.id), history.coarse),
      });
    },

    async *watchUsage(req: WatchUsageRequest, ctx: HandlerContext): AsyncGenerator<WatchUsageResponse> {
      const caller = callerOf(ctx);
      const project = caller.project !== null ? projectFor(caller, req.project) : req.project.trim() ? projectFor(caller, req.project) : null;
      const scope = { project, hosts: req.hosts };
      // One pending sample per server and host: a slow reader gets the latest, never a backlog.
      const servers = new Map<string, ServerUsage>();
      const hosts = new Map<string, HostUsage>();
      const gone = new Set<string>();
      const wake = new Wakeup();
      const take = (u: UsageUpdate) => {
        for (const s of u.servers) {
          servers.set(s.serverId, s);
          gone.delete(s.serverId);
        }
        for (const h of u.hosts) hosts.set(h.hostId, h);
        for (const id of u.goneServerIds) {
          servers.delete(id);
          gone.add(id);
        }
        wake.ring();
      };
      const unsubscribe = usage.watch(scope, take);
      try {
        const first = usage.snapshot(scope);
        // The first message goes out even when nothing is known yet: the watch is open.
        let sentAny = false;
        for (const m of messages(first.servers, first.hosts, [])) {
          sentAny = true;
          yield m;
        }
        if (!sentAny) yield create(WatchUsageResponseSchema, {});
        for (;;) {
          if (!(await wake.wait(ctx.signal))) throw watchEnded(ctx.signal);
          const s = [...servers.values()];
          const h = [...hosts.values()];
          const g = [...gone];
          servers.clear();
          hosts.clear();
          gone.clear();
          yield* messages(s, h, g);
        }
      } finally {
        unsubscribe();
      }
    },
  };
}

/** The samples in messages of at most PER_MESSAGE entries. */
function* messages(servers: ServerUsage[], hosts: HostUsage[], gone: string[]): Generator<WatchUsageResponse> {
  for (let i = 0; i < Math.max(servers.length, hosts.length, gone.length); i += PER_MESSAGE) {
    yield create(WatchUsageResponseSchema, { servers: servers.slice(i, i + PER_MESSAGE), hosts: hosts.slice(i, i + PER_MESSAGE), goneServerIds: gone.slice(i, i + PER_MESSAGE) });
  }
}
