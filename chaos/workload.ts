/**
 * The operators: several concurrent clients, each with its own seeded
 * stream of decisions, issuing random valid operations on random servers and
 * now and then an invalid one. Every outcome is classified:
 *
 *   accepted     OK: the ledger must later hold the operation's event
 *   rejected     a precise refusal (InvalidArgument, NotFound, FailedPrecondition,
 *                AlreadyExists, ResourceExhausted)
 *   unavailable  Unavailable, or the call was cut off by a restart of the manager it went to
 *   violation    Internal/Unknown (outside a manager restart), an invalid
 *                operation accepted or refused with the wrong code, a write
 *                refused with anything but Unavailable while the disk is full
 *
 * With several managers each call goes to a live one drawn at random, so
 * consecutive operations on one server cross managers.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  DesiredState,
  Phase,
  RestartPolicy,
  ServerSpecSchema,
  type Server,
} from "@berth/proto/berth/v1/server_pb.js";
import { TEST_IMAGE } from "../test/harness/docker-engine.js";
import type { Cluster, ManagerApi } from "./cluster.js";
import { sleep } from "./cluster.js";
import type { Rng } from "./rng.js";
import { codeName, type Tracker } from "./tracker.js";

export interface WorkloadOptions {
  cluster: Cluster;
  tracker: Tracker;
  rng: Rng;
  clientIndex: number;
  stopAt: number;
  /** Pause between two operations of one client. */
  gapMs: [number, number];
  /** Fewer creates once this many servers exist. */
  maxServers: number;
  /** First host port of host i is portBase + 100 * i; each host uses 40 ports. */
  portBase: number;
}

type Op =
  | "create"
  | "update"
  | "start"
  | "stop"
  | "pause"
  | "resume"
  | "restart"
  | "rebuild"
  | "delete"
  | "restore"
  | "purge"
  | "read"
  | "invalid";

const WEIGHTS: Record<Op, number> = {
  create: 12,
  update: 7,
  start: 10,
  stop: 9,
  pause: 3,
  resume: 3,
  restart: 7,
  rebuild: 5,
  delete: 5,
  restore: 5,
  purge: 4,
  read: 5,
  invalid: 5,
};

/** The event each accepted operation must leave in the ledger. */
const EVENT: Record<string, string> = {
  create: "server.created",
  update: "server.updated",
  start: "server.start_requested",
  "start-empty": "server.start_requested",
  stop: "server.stop_requested",
  pause: "server.pause_requested",
  resume: "server.resume_requested",
  restart: "server.restart_requested",
  rebuild: "server.rebuild_requested",
  delete: "server.deleted",
  restore: "server.restored",
  purge: "server.purge_requested",
  "purge-data": "server.purge_requested",
};

export const FOREVER = ["sh", "-c", "exec sleep 100000"];
/** An image no engine has and no registry serves: the pull fails (a valid request that fails on the host). */
const MISSING_IMAGE = "berth-test/missing:1";
const CALL_TIMEOUT_MS = 15_000;
/** How long after a failed call a crash of its manager must have been seen to explain it. */
const CRASH_SEEN_MS = 1_500;

export async function runClient(o: WorkloadOptions): Promise<void> {
  const { cluster, tracker, rng } = o;
  // Which manager serves a call: a stream of its own, so the operations do not depend on it.
  const routeRng = rng.fork("route");
  /** The manager the call being made goes to (its index excuses errors while that one restarts). */
  let via: ManagerApi = cluster.pickApi(routeRng);
  const route = () => (via = cluster.pickApi(routeRng));
  let n = 0;
  let view: Server[] = [];
  let viewAt = 0;

  const refresh = async () => {
    try {
      view = (await route().servers.listServers({ showDeleted: true, pageSize: 1000 }, { timeoutMs: CALL_TIMEOUT_MS })).servers;
      viewAt = Date.now();
    } catch {
      // The manager may be down; keep the old view.
    }
  };

  while (Date.now() < o.stopAt) {
    if (Date.now() - viewAt > 3_000) await refresh();
    const live = view.filter((s) => !tracker.servers.get(s.id)?.purged);
    const weights = { ...WEIGHTS };
    if (live.length >= o.maxServers) {
      weights.create = 1;
      weights.purge = 10;
    }
    if (live.length === 0) weights.create = 40;
    const op = rng.weighted(weights);
    const target = live.length ? rng.pick(live) : undefined;
    const host = rng.pick(cluster.hosts);
    await perform(op, target, host.index);
    await sleep(rng.int(o.gapMs[0], o.gapMs[1]));
  }

  async function perform(op: Op, target: Server | undefined, hostIndex: number): Promise<void> {
    const { servers } = route();
    if (op === "create") return createOne(hostIndex);
    if (op === "invalid") return invalid(target);
    if (op === "read") {
      await call("read", undefined, async (): Promise<unknown> => (rng.chance(0.5) && target ? servers.getServer({ id: target.id }) : servers.listServers({ showDeleted: true })), true);
      return;
    }
    if (!target) return createOne(hostIndex);
    const id = target.id;
    switch (op) {
      case "update": {
        const spec = create(ServerSpecSchema, {
          ...target.spec!,
          env: { ...target.spec!.env, CHAOS: `v${rng.int(0, 99)}` },
          command: rng.chance(0.3) ? ["sh", "-c", `exec sleep ${100000 + rng.int(1, 9)}`] : target.spec!.command,
        });
        await call("update", id, () => servers.updateServer({ id, spec, applyNow: rng.chance(0.4) }));
        return;
      }
      case "start":
        // A server whose data is gone needs the operator's explicit consent.
        if (target.status?.phase === Phase.DATA_LOST && rng.chance(0.5)) {
          await call("start-empty", id, () => servers.startServer({ id, allowEmptyData: true }));
          return;
        }
        await call("start", id, () => servers.startServer({ id }));
        return;
      case "stop":
        await call("stop", id, () => servers.stopServer({ id, timeoutSeconds: rng.int(0, 3) }));
        return;
      case "pause":
        await call("pause", id, () => servers.pauseServer({ id }));
        return;
      case "resume":
        await call("resume", id, () => servers.resumeServer({ id }));
        return;
      case "restart":
        await call("restart", id, () => servers.restartServer({ id }));
        return;
      case "rebuild":
        await call("rebuild", id, () => servers.rebuildServer({ id }));
        return;
      case "delete":
        await call("delete", id, () => servers.deleteServer({ id }));
        return;
      case "restore":
        await call("restore", id, () => servers.restoreServer({ id }));
        return;
      case "purge": {
        const removeData = rng.chance(0.5);
        await call(removeData ? "purge-data" : "purge", id, () => servers.purgeServer({ id, removeData }));
        return;
      }
    }
  }

  async function createOne(hostIndex: number): Promise<void> {
    const host = cluster.hosts[hostIndex]!;
    const placed = rng.chance(0.8);
    const ports = placed && rng.chance(0.35) ? [{ hostPort: o.portBase + 100 * hostIndex + rng.int(0, 39), containerPort: 8080 }] : [];
    const spec = create(ServerSpecSchema, {
      name: `w${o.clientIndex}-${n++}`,
      hostId: placed ? host.hostId : "",
      image: rng.chance(0.03) ? MISSING_IMAGE : TEST_IMAGE,
      command: FOREVER,
      env: { CHAOS: "v0" },
      ports,
      dataMountPath: "/data",
      restartPolicy: rng.pick([RestartPolicy.ON_FAILURE, RestartPolicy.ALWAYS, RestartPolicy.NEVER]),
      desiredState: rng.chance(0.85) ? DesiredState.RUNNING : DesiredState.STOPPED,
    });
    const res = await call("create", undefined, () => via.servers.createServer({ spec }));
    const s = res?.server;
    if (s) {
      tracker.servers.set(s.id, { id: s.id, name: s.spec!.name, hostIndex: cluster.hosts.findIndex((h) => h.hostId === s.spec!.hostId), purged: false });
      tracker.accepted.push({ op: "create", serverId: s.id, event: EVENT.create!, at: Date.now() });
      view.push(s);
    }
  }

  /** Invalid requests and the codes that may answer them. */
  async function invalid(target: Server | undefined): Promise<void> {
    const { servers } = via;
    const good = (over: Omit<MessageInitShape<typeof ServerSpecSchema>, "$typeName">) =>
      create(ServerSpecSchema, { name: `bad-${o.clientIndex}-${n++}`, image: TEST_IMAGE, command: FOREVER, ...over });
    const cases: [string, Code[], () => Promise<unknown>][] = [
      ["path-like name", [Code.InvalidArgument], () => servers.createServer({ spec: good({ name: "../../etc/passwd" }) })],
      ["empty image", [Code.InvalidArgument], () => servers.createServer({ spec: good({ image: "" }) })],
      ["duplicate ports", [Code.InvalidArgument], () => servers.createServer({ spec: good({ ports: [{ hostPort: o.portBase + 99, containerPort: 1 }, { hostPort: o.portBase + 99, containerPort: 2 }] }) })],
      ["port out of range", [Code.InvalidArgument], () => servers.createServer({ spec: good({ ports: [{ hostPort: 70000, containerPort: 1 }] }) })],
      ["unknown host", [Code.NotFound], () => servers.createServer({ spec: good({ hostId: "host_doesnotexist" }) })],
      ["unknown server", [Code.NotFound], () => servers.startServer({ id: "srv_doesnotexist" })],
      ["injection id", [Code.NotFound], () => servers.getServer({ id: "x' OR 1=1; DROP TABLE servers; --" })],
      ["negative page size", [Code.InvalidArgument], () => servers.listServers({ pageSize: -1 })],
      ["stop timeout too long", [Code.InvalidArgument, Code.NotFound], () => servers.stopServer({ id: target?.id ?? "srv_none", timeoutSeconds: 99_999 })],
    ];
    if (target) {
      cases.push(
        ["rename", [Code.InvalidArgument, Code.FailedPrecondition, Code.NotFound], () => servers.updateServer({ id: target.id, spec: { ...target.spec!, name: `${target.spec!.name}-x` } })],
        ["duplicate name", [Code.AlreadyExists], () => servers.createServer({ spec: good({ name: target.spec!.name }) })],
      );
      if (target.deleteTime === undefined) cases.push(["restore a live server", [Code.FailedPrecondition, Code.NotFound], () => servers.restoreServer({ id: target.id })]);
    }
    const [what, codes, fn] = rng.pick(cases);
    const t0 = Date.now();
    const stats = tracker.stats("invalid");
    try {
      await fn();
      // A duplicate name can race with a purge of the original: then the create is valid.
      if (what === "duplicate name") {
        stats.accepted++;
        return;
      }
      // The view is up to 3 s old: another client may have deleted the server since, and then
      // the restore was valid. The ledger says which: the restore follows a delete there.
      if (what === "restore a live server" && target) {
        const history = await cluster.probe.deleteHistory(target.id).catch(() => []);
        if (history.at(-1) === "server.restored" && history.at(-2) === "server.deleted") {
          stats.accepted++;
          return;
        }
      }
      tracker.violation("invalid operation refused", `"${what}" was accepted`);
    } catch (err) {
      const e = ConnectError.from(err);
      if (codes.includes(e.code)) {
        stats.rejected[codeName(e.code)] = (stats.rejected[codeName(e.code)] ?? 0) + 1;
      } else if (await isDisruptionSeen(e.code, t0, Date.now(), via.index)) {
        stats.unavailable++;
      } else {
        tracker.violation("invalid operation refused", `"${what}" answered ${codeName(e.code)} (expected ${codes.map(codeName).join("/")}): ${e.rawMessage}`);
      }
    }
  }

  /** A write (or read) and its classification; returns the response when accepted. */
  async function call<T>(op: string, serverId: string | undefined, fn: () => Promise<T>, read = false): Promise<T | undefined> {
    const stats = tracker.stats(op);
    const manager = via.index;
    const t0 = Date.now();
    try {
      const res = await fn();
      stats.accepted++;
      if (serverId && EVENT[op]) {
        tracker.accepted.push({ op, serverId, event: EVENT[op]!, at: Date.now() });
        if (op === "purge" || op === "purge-data") {
          if (op === "purge-data") tracker.purgedWithData.add(serverId);
          const f = tracker.servers.get(serverId);
          if (f) f.purged = true;
        }
        if (op === "start-empty") tracker.emptyDataStarts.set(serverId, Date.now());
      }
      return res;
    } catch (err) {
      const e = ConnectError.from(err);
      const t1 = Date.now();
      // The answer may be lost after the purge was committed (found by a 30-minute run).
      if (op === "purge-data" && serverId && ![Code.InvalidArgument, Code.NotFound, Code.FailedPrecondition, Code.PermissionDenied].includes(e.code)) {
        tracker.maybePurgedWithData.add(serverId);
      }
      if ([Code.InvalidArgument, Code.NotFound, Code.FailedPrecondition, Code.AlreadyExists, Code.ResourceExhausted].includes(e.code)) {
        stats.rejected[codeName(e.code)] = (stats.rejected[codeName(e.code)] ?? 0) + 1;
        return undefined;
      }
      if (await isDisruptionSeen(e.code, t0, t1, manager)) {
        stats.unavailable++;
        return undefined;
      }
      if (!read && tracker.during("disk-full", t0, t1)) {
        // Disk full: a write must be refused with Unavailable and say so.
        if (e.code === Code.Unavailable && /disk is full/.test(e.rawMessage)) {
          stats.unavailable++;
          return undefined;
        }
        tracker.violation("disk full refuses writes with Unavailable", `${op} answered ${codeName(e.code)}: ${e.rawMessage}`);
        return undefined;
      }
      if (e.code === Code.Unavailable || e.code === Code.DeadlineExceeded) {
        // E.g. the client's connection had not yet noticed a restart; not a verdict on berth.
        stats.unavailable++;
        return undefined;
      }
      tracker.violation("operations answer a precise code", `${op}${serverId ? ` ${serverId}` : ""} answered ${codeName(e.code)}: ${e.rawMessage}`);
      return undefined;
    }
  }

  /**
   * isDisruption, allowing for a crash: a call a crash cut off fails a moment before
   * the campaign sees the process exit, so an error no window explains yet is judged
   * again once that moment has passed.
   */
  async function isDisruptionSeen(code: Code, t0: number, t1: number, manager: number): Promise<boolean> {
    if (isDisruption(code, t0, t1, manager)) return true;
    if (![Code.Internal, Code.Unknown, Code.Canceled, Code.Aborted].includes(code)) return false;
    await sleep(CRASH_SEEN_MS);
    return isDisruption(code, t0, t1, manager);
  }

  /**
   * Errors a restart explains: the call overlapped one of the manager it went to, or
   * (Unavailable and deadlines only: a manager must say the database is down, not fail
   * otherwise) a time the database was down.
   */
  function isDisruption(code: Code, t0: number, t1: number, manager: number): boolean {
    const transport = [Code.Unavailable, Code.Internal, Code.Unknown, Code.Canceled, Code.Aborted, Code.DeadlineExceeded].includes(code);
    if (transport && tracker.during("manager-down", t0, t1, manager)) return true;
    return [Code.Unavailable, Code.DeadlineExceeded].includes(code) && tracker.during("database-down", t0, t1);
  }
}
