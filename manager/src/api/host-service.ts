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
import { InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import { hashSecret, newId, newSecret } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { NetworkInventory } from "../orphans/network-inventory.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { Store } from "../store/store.js";
import type { TokenStore } from "../store/token-store.js";
import { formatEnrollmentToken } from "../tls/enrollment-token.js";
import { hostToProto } from "./convert.js";
import { findHost } from "./find-server.js";

export interface HostServiceDeps {
  store: Store;
  hub: AgentHub;
  ledger: Ledger;
  tokens: TokenStore;
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
  const { store, hub, ledger, tokens, reconciler } = deps;
  const now = deps.now ?? Date.now;

  function find(id: string) {
    if (!id.trim()) throw new InvalidArgumentError("id", "required: a host id (host_...)");
    return findHost(store, id);
  }

  return {
    listHosts(_req, ctx) {
      callerOf(ctx);
      const counts = store.countServersByHost();
      return create(ListHostsResponseSchema, {
        hosts: store.listHosts().map((h) => hostToProto(h, hub.isConnected(h.id), counts.get(h.id) ?? 0)),
      });
    },

    getHost(req, ctx) {
      callerOf(ctx);
      const h = find(req.id);
      return create(GetHostResponseSchema, { host: hostToProto(h, hub.isConnected(h.id), store.countServersByHost().get(h.id) ?? 0) });
    },

    createEnrollmentToken(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "CreateEnrollmentToken");
      if (req.ttlSeconds > MAX_TTL_S) throw new InvalidArgumentError("ttl_seconds", `at most ${MAX_TTL_S} (7 days)`);
      const ttl = req.ttlSeconds || DEFAULT_TTL_S;
      const at = now();
      const secret = `enr_${newSecret()}`;
      const id = newId("enr");
      // Only the secret part is stored (hashed); the fingerprint is public.
      store.insertEnrollmentToken({ id, tokenHash: hashSecret(secret), createdAt: at, expiresAt: at + ttl * 1000 });
      const token = formatEnrollmentToken(secret, deps.caFingerprint);
      ledger.append({ type: "enrollment.created", actor: actorOf(caller), correlationId: id, message: `enrollment token valid for ${ttl}s` });
      return create(CreateEnrollmentTokenResponseSchema, {
        token,
        expireTime: timestampFromMs(at + ttl * 1000),
        command: `berth-agent enroll --manager ${deps.advertiseUrl} --token ${token} && berth-agent run`,
      });
    },

    resyncHost(req, ctx) {
      requireRole(callerOf(ctx), "operator", "ResyncHost");
      const h = find(req.id);
      if (!hub.sendResync(h.id)) throw new PreconditionError(`host ${h.id} is offline; it resyncs by itself when its agent reconnects`);
      return create(ResyncHostResponseSchema, {});
    },

    async removeHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "RemoveHost");
      const h = find(req.id);
      const at = now();
      if (!tokens.removeHost(h.id, at)) throw new NotFoundError("host", req.id, "list hosts with HostService.ListHosts");
      // The credential is refused from now on (agent-service checks removed_at); end the live stream too.
      hub.disconnect(h.id, "this host was removed from berth (HostService.RemoveHost); enroll it again with a new enrollment token", { revoked: true });
      // Nothing the host reported stays behind (its server records do: they become stranded orphans).
      const rows = store.deleteHostRows(h.id);
      deps.networks?.drop(h.id);
      const servers = store.countServersByHost().get(h.id) ?? 0;
      ledger.append({
        type: "host.removed",
        hostId: h.id,
        actor: actorOf(caller),
        message: `host ${h.name} removed; its agent's credential is revoked and ${rows} rows of what it reported are deleted${servers ? ` (${servers} servers on it are now Unknown)` : ""}`,
      });
      await reconciler.enqueueHost(h.id, "host removed");
      return create(RemoveHostResponseSchema, {});
    },
  };
}
