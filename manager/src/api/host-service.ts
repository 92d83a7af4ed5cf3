import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateEnrollmentTokenResponseSchema,
  GetHostResponseSchema,
  HostService,
  ListHostsResponseSchema,
  RemoveHostResponseSchema,
  ResyncHostResponseSchema,
} from "@berth/proto/berth/v1/host_pb.js";
import { actorOf, callerOf, requireRole } from "../auth/caller.js";
import { InvalidArgumentError, PreconditionError } from "../errors.js";
import { hashSecret, newId, newSecret } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { HostPresence } from "../cluster/presence.js";
import { REMOVED_REASON } from "../cluster/host-requests.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store } from "../store/store.js";
import { formatEnrollmentToken } from "../tls/enrollment-token.js";
import { hostToProto } from "./convert.js";
import { loadHost } from "./find-server.js";

export interface HostServiceDeps {
  store: Store;
  hub: Pick<AgentHub, "isConnected" | "sendResync" | "disconnect">;
  /**
   * Which hosts are connected, to this manager or another of its database
   * (cluster/presence.ts); default: this manager's own streams.
   */
  presence?: HostPresence;
  ledger: Ledger;
  reconciler: Pick<Reconciler, "enqueueHost">;
  /** The URL agents dial, as printed in the enrollment command. */
  advertiseUrl: string;
  /**
   * SHA-256 of the manager's CA certificate (base64url) when it serves TLS:
   * embedded in enrollment tokens so agents pin the manager on first contact.
   */
  caFingerprint?: string | undefined;
  /** Project networks as hosts reported them; a removed host's are dropped. */
  networks?: NetworkInventory;
  now?: () => number;
}

const DEFAULT_TTL_S = 3600;
const MAX_TTL_S = 7 * 24 * 3600;

export function createHostService(deps: HostServiceDeps): ServiceImpl<typeof HostService> {
  const { store, hub, ledger, reconciler } = deps;
  const presence = deps.presence ?? hub;
  const now = deps.now ?? Date.now;

  async function find(id: string) {
    if (!id.trim()) throw new InvalidArgumentError("id", "required: a host id (host_...)");
    return loadHost(store, id);
  }

  return {
    async listHosts(_req, ctx) {
      callerOf(ctx);
      const [hosts, counts] = await Promise.all([store.listHosts(), store.countServersByHost()]);
      return create(ListHostsResponseSchema, {
        hosts: hosts.map((h) => hostToProto(h, presence.isConnected(h.id), counts.get(h.id) ?? 0)),
      });
    },

    async getHost(req, ctx) {
      callerOf(ctx);
      const h = await find(req.id);
      const counts = await store.countServersByHost();
      return create(GetHostResponseSchema, { host: hostToProto(h, presence.isConnected(h.id), counts.get(h.id) ?? 0) });
    },

    async createEnrollmentToken(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "CreateEnrollmentToken");
      if (req.ttlSeconds > MAX_TTL_S) throw new InvalidArgumentError("ttl_seconds", `at most ${MAX_TTL_S} (7 days)`);
      const ttl = req.ttlSeconds || DEFAULT_TTL_S;
      const at = now();
      const secret = `enr_${newSecret()}`;
      const id = newId("enr");
      // Only the secret part is stored (hashed); the fingerprint is public.
      await store.commit([
        { op: "enrollment.insert", id, tokenHash: hashSecret(secret), createdAt: at, expiresAt: at + ttl * 1000 },
        ledger.op({ type: "enrollment.created", actor: actorOf(caller), correlationId: id, message: `enrollment token valid for ${ttl}s` }),
      ]);
      const token = formatEnrollmentToken(secret, deps.caFingerprint);
      return create(CreateEnrollmentTokenResponseSchema, {
        token,
        expireTime: timestampFromMs(at + ttl * 1000),
        command: `berth-agent enroll --manager ${deps.advertiseUrl} --token ${token} && berth-agent run`,
      });
    },

    async resyncHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "ResyncHost");
      const h = await find(req.id);
      if (hub.sendResync(h.id)) return create(ResyncHostResponseSchema, {});
      if (!presence.isConnected(h.id)) throw new PreconditionError(`host ${h.id} is offline; it resyncs by itself when its agent reconnects`);
      // Its stream is with another manager of this database: that one hears the request (cluster/host-requests.ts).
      await store.commit([ledger.op({ type: "host.resync_requested", hostId: h.id, actor: actorOf(caller), message: `ResyncHost: a full inventory asked of host ${h.name} (its agent is connected to another manager)` })]);
      return create(ResyncHostResponseSchema, {});
    },

    async removeHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "RemoveHost");
      const h = await find(req.id);
      const [observed, counts] = await Promise.all([store.observedCounts(h.id), store.countServersByHost()]);
      const servers = counts.get(h.id) ?? 0;
      // One batch: the host marked removed (its credential refused from now on: agent-service checks
      // removed_at), what it reported deleted (its server records stay: they become stranded orphans),
      // and the event. NotFound when another call removed it first.
      await store.commit([
        { op: "host.remove", id: h.id, at: now() },
        ledger.op({
          type: "host.removed",
          hostId: h.id,
          actor: actorOf(caller),
          message: `host ${h.name} removed; its agent's credential is revoked and what it reported (${observed.total} containers) is deleted${servers ? ` (${servers} servers on it are now Unknown)` : ""}`,
        }),
      ]);
      // End the live stream too: nothing it sends from now on is stored. A stream held by another
      // manager of this database is closed there when it hears host.removed (cluster/host-requests.ts).
      hub.disconnect(h.id, REMOVED_REASON, { revoked: true });
      deps.networks?.drop(h.id);
      await reconciler.enqueueHost(h.id, "host removed");
      return create(RemoveHostResponseSchema, {});
    },

    async cordonHost() {
      throw new ConnectError("CordonHost is not built yet", Code.Unimplemented);
    },

    async drainHost() {
      throw new ConnectError("DrainHost is not built yet", Code.Unimplemented);
    },

    async uncordonHost() {
      throw new ConnectError("UncordonHost is not built yet", Code.Unimplemented);
    },
  };
}
