import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AdoptOrphanResponseSchema,
  DestroyOrphanResponseSchema,
  ListOrphansResponseSchema,
  OrphanKind,
  OrphanSchema,
  OrphanService,
  ReassignServerResponseSchema,
  type Orphan,
} from "@berth/proto/berth/v1/orphan_pb.js";
import { actorOf, callerOf, projectFor, type Caller } from "../auth/caller.js";
import { InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import type { Ledger } from "../ledger/ledger.js";
import type { HostPresence } from "../cluster/presence.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Logger } from "../log.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store } from "../store/store.js";
import type { OrphanFinding } from "../orphans/classify.js";
import type { OrphanDetector } from "../orphans/detector.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import { OrphanOperations, type Actor } from "../orphans/operations.js";
import { serverToProto } from "./convert.js";
import { loadHost, loadVisibleServer } from "./find-server.js";

export interface OrphanServiceDeps {
  store: Store;
  hub: AgentHub;
  /** Which hosts are connected to any manager of this database (cluster/presence.ts). */
  presence?: HostPresence;
  ledger: Pick<Ledger, "op">;
  reconciler: Pick<Reconciler, "reconcileNow" | "dropRecord" | "issueCopyData" | "dispatch" | "requestOrphanCommand" | "deadlineFor">;
  detector: OrphanDetector;
  /** Project networks as reported; a destroyed one is dropped from it at once. */
  networks?: NetworkInventory;
  /** Host directories outside the data root AdoptOrphan's move_data may copy (--adoptable-path). */
  adoptablePaths?: readonly string[];
  log: Logger;
  now?: () => number;
}

const ORPHAN_ID_RE = /^orp_[a-z2-7]{20}$/;

/**
 * OrphanService: lists what the hosts and the database disagree on
 * (orphans/classify.ts), adopts orphan containers as servers, destroys
 * orphans, and moves stranded servers to another host. The handlers check the
 * request and name the orphan; orphans/operations.ts does the work, with every
 * command going through the reconciler. Every adoption, destruction and move
 * is a ledger event with the caller as actor.
 */
export function createOrphanService(deps: OrphanServiceDeps): ServiceImpl<typeof OrphanService> {
  const { store, detector } = deps;
  const ops = new OrphanOperations(deps);
  /** Orphans an adoption or destruction is working on: one operation per orphan at a time. */
  const busy = new Set<string>();

  /** The orphan `id` names, as it is now (it may have stopped being one since it was listed). */
  async function resolve(id: string): Promise<OrphanFinding> {
    const key = id.trim();
    if (!ORPHAN_ID_RE.test(key)) throw new InvalidArgumentError("id", `"${key.slice(0, 64)}" is not an orphan id (orp_ followed by 20 characters, from OrphanService.ListOrphans)`);
    const f = (await detector.find({ includeUnmanaged: true })).find((o) => o.id === key);
    if (!f) throw new NotFoundError("orphan", key, "it was adopted, destroyed or removed, or its host is offline; list orphans again with OrphanService.ListOrphans");
    return f;
  }

  async function exclusive<T>(f: OrphanFinding, fn: () => Promise<T>): Promise<T> {
    if (busy.has(f.id)) throw new PreconditionError(`orphan ${f.id} is being adopted or destroyed right now; list orphans again in a moment`);
    busy.add(f.id);
    try {
      return await fn();
    } finally {
      busy.delete(f.id);
    }
  }

  function actor(caller: Caller): Actor {
    return { actor: actorOf(caller), name: caller.name };
  }

  function toProto(f: OrphanFinding): Orphan {
    return create(OrphanSchema, {
      id: f.id,
      kind: f.kind,
      hostId: f.hostId,
      containerId: f.containerId,
      containerName: f.containerName,
      image: f.image,
      state: f.state,
      ...(f.createTimeMs > 0 ? { createTime: timestampFromMs(f.createTimeMs) } : {}),
      labels: f.labels,
      ports: f.ports,
      mounts: f.mounts,
      reason: f.reason,
      dataPath: f.dataPath,
      serverId: f.serverId,
      networkId: f.networkId ?? "",
      networkName: f.networkName ?? "",
      project: f.kind === OrphanKind.NETWORK ? f.project : "",
    });
  }

  return {
    async listOrphans(req, ctx) {
      callerOf(ctx);
      const hostId = req.hostId.trim();
      // A removed host's id still lists its stranded servers.
      if (hostId) await loadHost(store, hostId, { includeRemoved: true });
      const includeUnmanaged = req.includeUnmanaged || req.kinds.includes(OrphanKind.UNMANAGED);
      const orphans = (await detector.find({ includeUnmanaged })).filter((f) => (!hostId || f.hostId === hostId) && (req.kinds.length === 0 || req.kinds.includes(f.kind)));
      return create(ListOrphansResponseSchema, { orphans: orphans.map(toProto) });
    },

    async adoptOrphan(req, ctx) {
      const caller = callerOf(ctx);
      const f = await resolve(req.id);
      return exclusive(f, async () => {
        const project = projectFor(caller, req.project);
        const name = req.name.trim();
        if (!name) throw new InvalidArgumentError("name", "required: the adopted server's name (lowercase letters, digits and '-')");
        const { server, warnings } = await ops.adopt(actor(caller), f, { project, name, moveData: req.moveData, dataMountPath: req.dataMountPath, force: req.force });
        return create(AdoptOrphanResponseSchema, { server: serverToProto(server), warnings });
      });
    },

    async destroyOrphan(req, ctx) {
      const caller = callerOf(ctx);
      const f = await resolve(req.id);
      if (req.dryRun) {
        const plan = await ops.planDestroy(f, req);
        return create(DestroyOrphanResponseSchema, { removed: plan.removed, kept: plan.kept });
      }
      return exclusive(f, async () => {
        const done = await ops.destroy(actor(caller), f, req);
        return create(DestroyOrphanResponseSchema, { removed: done.removed, kept: done.kept });
      });
    },

    async reassignServer(req, ctx) {
      const caller = callerOf(ctx);
      const key = req.id.trim();
      if (!key) throw new InvalidArgumentError("id", "required: the stranded server's orphan id, server id or name");
      const targetId = req.hostId.trim();
      if (!targetId) throw new InvalidArgumentError("host_id", "required: the host to run the server on (one that has its data directory)");
      let serverKey = key;
      if (ORPHAN_ID_RE.test(key)) {
        const f = await resolve(key);
        if (f.kind !== OrphanKind.STRANDED) throw new PreconditionError(`orphan ${key} is not a stranded server but ${OrphanKind[f.kind]}; only servers whose host was removed are reassigned`);
        serverKey = f.serverId;
      }
      const s = await loadVisibleServer(store, caller, serverKey);
      const server = await ops.reassign(actor(caller), s, targetId);
      return create(ReassignServerResponseSchema, { server: serverToProto(server) });
    },
  };
}
