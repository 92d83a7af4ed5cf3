import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateEnrollmentTokenResponseSchema,
  GetHostResponseSchema,
  HostService,
  ListHostsResponseSchema,
  ResyncHostResponseSchema,
} from "@berth/proto/berth/v1/host_pb.js";
import { actorOf, callerOf, requireRole } from "../auth/caller.js";
import { InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import { hashSecret, newId, newSecret } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Store } from "../store/store.js";
import { hostToProto } from "./convert.js";

export interface HostServiceDeps {
  store: Store;
  hub: AgentHub;
  ledger: Ledger;
  /** The URL agents dial, as printed in the enrollment command. */
  advertiseUrl: string;
  now?: () => number;
}

const DEFAULT_TTL_S = 3600;
const MAX_TTL_S = 7 * 24 * 3600;

export function createHostService(deps: HostServiceDeps): Partial<ServiceImpl<typeof HostService>> {
  const { store, hub, ledger } = deps;
  const now = deps.now ?? Date.now;

  function find(id: string) {
    if (!id.trim()) throw new InvalidArgumentError("id", "required: a host id (host_...)");
    const h = store.getHost(id.trim());
    if (!h || h.removedAt !== null) throw new NotFoundError("host", id, "list hosts with HostService.ListHosts");
    return h;
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
      const token = `enr_${newSecret()}`;
      const id = newId("enr");
      store.insertEnrollmentToken({ id, tokenHash: hashSecret(token), createdAt: at, expiresAt: at + ttl * 1000 });
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
  };
}
