import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CordonHostResponseSchema,
  CreateEnrollmentTokenResponseSchema,
  DrainHostResponseSchema,
  GetHostResponseSchema,
  HostService,
  ListHostsResponseSchema,
  RemoveHostResponseSchema,
  ResyncHostResponseSchema,
  SetHostCapacityResponseSchema,
  UncordonHostResponseSchema,
} from "@berth/proto/berth/v1/host_pb.js";
import { actorOf, callerOf, requireRole } from "../auth/caller.js";
import { ConflictError, InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import type { BackupTargetRecord, HostRecord, HostSchedule } from "../domain/records.js";
import { DEFAULT_DRAIN_PARALLEL, drainSchedule, MAX_DRAIN_PARALLEL, type HostDrains } from "../hosts/drain.js";
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
import { capacityOf, keepCapacity, roomOf, roomWith } from "../hosts/capacity.js";
import { formatBytes } from "../domain/limits.js";
import { loadHost } from "./find-server.js";
import { FilterRun, requestFilter } from "../query/cel.js";

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
   * How the enrollment command runs the agent (agentInvocation): `berth-agent`
   * for an installed manager, through npx in the checkout it runs from.
   */
  agent?: AgentInvocation;
  /**
   * SHA-256 of the manager's CA certificate (base64url) when it serves TLS:
   * embedded in enrollment tokens so agents pin the manager on first contact.
   */
  caFingerprint?: string | undefined;
  /**
   * Host drains (hosts/drain.ts): DrainHost answers FailedPrecondition when
   * absent or when it has no way to start transfers.
   */
  drains?: Pick<HostDrains, "available">;
  /** Project networks as hosts reported them; a removed host's are dropped. */
  networks?: NetworkInventory;
  now?: () => number;
}

const DEFAULT_TTL_S = 3600;
/** Tries of a schedule change that raced another writer of the host's schedule. */
const SCHEDULE_ATTEMPTS = 5;
const MAX_TTL_S = 7 * 24 * 3600;

export function createHostService(deps: HostServiceDeps): ServiceImpl<typeof HostService> {
  const { store, hub, ledger, reconciler } = deps;
  const presence = deps.presence ?? hub;
  const now = deps.now ?? Date.now;

  async function find(id: string, opts: { includeRemoved?: boolean } = {}) {
    if (!id.trim()) throw new InvalidArgumentError("id", "required: a host id (host_...)");
    return loadHost(store, id, opts);
  }

  /** One host as the API shows it, with what its servers' limits take (one read of its servers). */
  async function toProto(h: HostRecord) {
    const counts = await store.countServersByHost();
    const room = roomOf(h, await store.listServers({ hostId: h.id }));
    return hostToProto(h, presence.isConnected(h.id), counts.get(h.id) ?? 0, room);
  }

  async function findTarget(idOrName: string): Promise<BackupTargetRecord> {
    const key = idOrName.trim();
    const t = (await store.getBackupTarget(key)) ?? (await store.findBackupTargetByName(key));
    if (!t) throw new NotFoundError("backup target", key, "list targets with BackupService.ListBackupTargets, or leave target empty for the default");
    return t;
  }

  /**
   * Reads the host and writes what `decide` makes of its schedule, with its
   * event, in one batch checked against the schedule read (another writer in
   * between, the drain job or another call: read again and decide again).
   * `decide` answering undefined: nothing to change (no write, no event).
   * Answers the host as it is afterwards. NotFound for an unknown host,
   * FailedPrecondition for a removed one.
   */
  async function changeSchedule(
    id: string,
    decide: (h: HostRecord) => { schedule: HostSchedule; event: { type: string; message: string } } | undefined,
    actor: string,
    preflight?: (h: HostRecord) => Promise<void>,
  ): Promise<HostRecord> {
    for (let attempt = 1; ; attempt++) {
      const h = await find(id, { includeRemoved: true });
      if (h.removedAt !== null) throw new PreconditionError(`host ${h.id} was removed (RemoveHost); it has no scheduling to change`);
      await preflight?.(h);
      const change = decide(h);
      if (!change) return h;
      // Cordon, drain and uncordon leave the capacity settings as they are.
      const schedule = keepCapacity(change.schedule, h.schedule);
      try {
        await store.commit([
          { op: "host.schedule", id: h.id, schedule, expect: h.schedule },
          ledger.op({ ...change.event, hostId: h.id, actor }),
        ]);
        return { ...h, schedule };
      } catch (err) {
        // Removed meanwhile: the store says NotFound; the next read says so precisely.
        if (!(err instanceof ConflictError || err instanceof NotFoundError) || attempt >= SCHEDULE_ATTEMPTS) throw err;
      }
    }
  }

  return {
    async listHosts(req, ctx) {
      callerOf(ctx);
      const filter = requestFilter("host", req.filter);
      // Counts and limits summed per host by the database (every dashboard polls this): no server record is read.
      const [hosts, allocation] = await Promise.all([store.listHosts(), store.allocationByHost()]);
      let out = hosts.map((h) => {
        const a = allocation.get(h.id) ?? { servers: 0, cpus: 0, memoryBytes: 0 };
        return hostToProto(h, presence.isConnected(h.id), a.servers, roomWith(h, a));
      });
      if (filter) {
        // On the hosts as this call returns them (ListHosts has no pages: every host is evaluated).
        const run = new FilterRun();
        const kept = [];
        for (const h of out) {
          if (filter.test(h, run)) kept.push(h);
          await run.pace();
        }
        out = kept;
      }
      return create(ListHostsResponseSchema, { hosts: out });
    },

    async getHost(req, ctx) {
      callerOf(ctx);
      const h = await find(req.id);
      return create(GetHostResponseSchema, { host: await toProto(h) });
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
        ...enrollmentCommand(deps.agent ?? { bin: "berth-agent" }, deps.advertiseUrl, token),
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

    async cordonHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "CordonHost");
      const h = await changeSchedule(req.id, (host) => {
        if (host.schedule.unschedulable) return undefined;
        return {
          schedule: { unschedulable: true },
          event: { type: "host.cordoned", message: `CordonHost: no new servers are placed on host ${host.name}; its servers keep running there` },
        };
      }, actorOf(caller));
      return create(CordonHostResponseSchema, { host: await toProto(h) });
    },

    async drainHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "DrainHost");
      if (req.parallel > MAX_DRAIN_PARALLEL) throw new InvalidArgumentError("parallel", `at most ${MAX_DRAIN_PARALLEL} transfers at a time; 0 means ${DEFAULT_DRAIN_PARALLEL}`);
      const parallel = req.parallel || DEFAULT_DRAIN_PARALLEL;
      const target = req.target.trim() ? (await findTarget(req.target)).id : "";
      // Checked after the host (an unknown host is NotFound first), before anything is written.
      const preflight = async (host: HostRecord) => {
        if (!deps.drains?.available) {
          throw new PreconditionError(`transfers are not available on this manager, so host ${host.id} cannot be drained; CordonHost it and move its servers yourself`);
        }
      };
      const h = await changeSchedule(req.id, (host) => {
        const d = host.schedule.drain;
        if (d && d.parallel === parallel && d.target === target && !d.failed?.length) return undefined;
        const schedule = drainSchedule(host.schedule, { parallel, target, actor: actorOf(caller), now: now() });
        const via = target ? `, through backup target ${target}` : "";
        return d
          ? {
              schedule,
              event: { type: "host.drain_updated", message: `DrainHost again on host ${host.name}: ${parallel} transfers at a time${via}${d.failed?.length ? `; ${d.failed.length} failed servers are tried again` : ""}` },
            }
          : {
              schedule,
              event: { type: "host.drain_started", message: `DrainHost: host ${host.name} is cordoned and its servers are transferred to other hosts, ${parallel} at a time${via}` },
            };
      }, actorOf(caller), preflight);
      return create(DrainHostResponseSchema, { host: await toProto(h) });
    },

    async uncordonHost(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "UncordonHost");
      const h = await changeSchedule(req.id, (host) => {
        if (!host.schedule.unschedulable && !host.schedule.drain) return undefined;
        const d = host.schedule.drain;
        const ended = d ? `; its drain ends (${d.message || "nothing moved yet"}): transfers under way finish, no new ones start` : "";
        return {
          schedule: { unschedulable: false },
          event: { type: "host.uncordoned", message: `UncordonHost: new servers may be placed on host ${host.name} again${ended}` },
        };
      }, actorOf(caller));
      return create(UncordonHostResponseSchema, { host: await toProto(h) });
    },

    async setHostCapacity(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "SetHostCapacity");
      const capacity = {
        cpuOvercommit: req.cpuOvercommit || 1,
        memoryOvercommit: req.memoryOvercommit || 1,
        reservedCpus: req.reservedCpus,
        reservedMemoryBytes: Number(req.reservedMemoryBytes),
      };
      if (!Number.isSafeInteger(capacity.reservedMemoryBytes)) throw new InvalidArgumentError("reserved_memory_bytes", "must be below 2^53 bytes");
      const h = await changeSchedule(req.id, (host) => {
        const was = capacityOf(host.schedule);
        if (JSON.stringify(was) === JSON.stringify(capacity)) return undefined;
        return {
          schedule: { ...host.schedule, capacity },
          event: {
            type: "host.capacity_set",
            message: `SetHostCapacity: servers' limits on host ${host.name} may take ${capacity.cpuOvercommit}x its CPUs less ${capacity.reservedCpus} and ${capacity.memoryOvercommit}x its memory less ${formatBytes(BigInt(capacity.reservedMemoryBytes))}`,
          },
        };
      }, actorOf(caller));
      return create(SetHostCapacityResponseSchema, { host: await toProto(h) });
    },
  };
}

/** How a printed command runs the agent: its program, and a directory to run it from. */
export interface AgentInvocation {
  bin: string;
  /** A source checkout the command changes to first (npx finds the workspace's agent there). */
  cwd?: string;
}

/**
 * The agent's invocation for a manager running from `moduleUrl`: in a source
 * checkout (TypeScript through tsx, or a bundle made there: `inCheckout`, the
 * agent's sources are beside it) the checkout's own agent, run with npx from
 * its root; from an installed package `berth-agent`, which docs/install.md
 * links onto the PATH.
 */
export function agentInvocation(moduleUrl: string, checkoutRoot: string, inCheckout = false): AgentInvocation {
  return moduleUrl.endsWith(".ts") || inCheckout ? { bin: "npx berth-agent", cwd: checkoutRoot } : { bin: "berth-agent" };
}

/** Where the printed command keeps the agent's credential: the agent's own default, said out loud. */
export const AGENT_STATE_DIR = "/var/lib/berth-agent";

/**
 * The command CreateEnrollmentToken prints, and what to know before running it.
 * Enroll and run share one --state-dir, so the run finds what the enroll wrote.
 */
export function enrollmentCommand(agent: AgentInvocation, managerUrl: string, token: string): { command: string; notes: string[] } {
  const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`);
  const state = `--state-dir ${AGENT_STATE_DIR}`;
  const chain = `${agent.bin} enroll --manager ${quote(managerUrl)} --token ${quote(token)} ${state} && ${agent.bin} run ${state}`;
  const notes: string[] = [];
  let host = "";
  try {
    host = new URL(managerUrl).hostname.replace(/^\[|\]$/g, "");
  } catch {
    notes.push(`The manager's advertised URL ${JSON.stringify(managerUrl)} is not a URL an agent can dial: set --advertise-url.`);
  }
  if (host === "localhost" || host === "::1" || /^127\./.test(host)) {
    notes.push(
      `The manager listens on loopback (${managerUrl}): only an agent on this machine can reach it. ` +
        `For another machine, start the manager with --listen on an address that machine can reach, with TLS (docs/install.md), or set --advertise-url.`,
    );
  }
  if (agent.cwd) {
    notes.push(
      `This manager runs from the checkout at ${agent.cwd}, so the command runs that checkout's agent (as root, with Docker running). ` +
        `On another machine, install the agent package (docs/install.md) and run the same command with berth-agent in place of npx berth-agent.`,
    );
  }
  return { command: agent.cwd ? `cd ${quote(agent.cwd)} && ${chain}` : chain, notes };
}
