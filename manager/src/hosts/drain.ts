/**
 * Host drain (HostService.DrainHost): the host is cordoned (no new server is
 * placed on it) and its servers are transferred to the other schedulable
 * hosts, `parallel` at a time, by the leader (docs/data.md "Host drain").
 *
 * The drain's state lives in the host record (HostSchedule.drain), so any
 * manager that becomes leader carries on with it. Each step is level-based:
 * it re-reads the host and its servers and decides with `planDrain` (pure);
 * running it twice starts nothing twice. A server whose transfer could not
 * start, or ended without moving it (`server.transfer_failed`), is listed in
 * drain.failed and not tried again by this drain (DrainHost again retries).
 * When nothing is left to move and no transfer is under way the drain
 * finishes: event host.drain_finished with a summary, drain cleared, the host
 * stays cordoned until UncordonHost.
 */
import type { DrainFailure, EventInput, HostDrain, HostRecord, HostSchedule, ServerRecord } from "../domain/records.js";
import { ConflictError } from "../errors.js";
import type { HostPresence } from "../cluster/presence.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";
import { pickTransferHost } from "./placement.js";
import { keepCapacity } from "./capacity.js";

/** Transfers at a time when DrainHost does not say (DrainHostRequest.parallel = 0). */
export const DEFAULT_DRAIN_PARALLEL = 2;
/** At most this many transfers at a time (the proto's limit too). */
export const MAX_DRAIN_PARALLEL = 16;

/**
 * Starts moving one server with its data to another host
 * (ServerService.TransferServer's work, without the RPC). Resolves once the
 * transfer is under way (the server's lifecycle.dataOp.kind is "transfer");
 * rejects when it cannot start.
 */
export interface TransferStarter {
  transfer(by: { actor: string; name: string }, serverId: string, hostId: string, opts: { target?: string }): Promise<unknown>;
}

/** What a drain should do now (planDrain). */
export interface DrainPlan {
  /** Servers to start transferring now (at most parallel minus those under way), in order. */
  start: ServerRecord[];
  /** Started by this drain, not under way any more and still on the host: their transfer ended without moving them. */
  ended: ServerRecord[];
  /** Live servers on the host with a transfer under way. */
  underWay: number;
  /** Live servers still to move (not under way, not failed), those busy with a backup or restore included. */
  waiting: number;
  /** Servers this drain started that are no longer on the host. */
  moved: number;
  /** Soft-deleted servers on the host: a drain leaves them (purge or restore them). */
  deletedLeft: number;
  /** Nothing under way, nothing left to try: the drain is over. */
  finished: boolean;
  /** For the host (Host.drain_message), e.g. "3 of 12 moved; 2 under way". */
  message: string;
}

/** The kind of data operation that is a transfer (DataOp.kind; compared as a string). */
const TRANSFER = "transfer";

function transferring(s: ServerRecord): boolean {
  return (s.lifecycle.dataOp?.kind as string | undefined) === TRANSFER;
}

/**
 * What the drain of `host` should do now, from its servers (every server
 * record placed on it, soft-deleted ones included). Live servers that are not
 * under way, not failed and not busy with another data operation are started
 * in id order, as many as free slots allow. `now` dates the summary.
 * `pending`: servers whose transfer was asked for and has not answered yet,
 * counted as under way.
 */
export function planDrain(host: HostRecord, servers: readonly ServerRecord[], now: number, pending: ReadonlySet<string> = new Set()): DrainPlan {
  const drain = host.schedule.drain;
  const onHost = servers.filter((s) => s.hostId === host.id);
  const live = onHost.filter((s) => s.deletedAt === null).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const deletedLeft = onHost.length - live.length;
  if (!drain) return { start: [], ended: [], underWay: 0, waiting: 0, moved: 0, deletedLeft, finished: true, message: "" };
  const failed = new Set((drain.failed ?? []).map((f) => f.serverId));
  const started = new Set(drain.started ?? []);
  const liveIds = new Set(live.map((s) => s.id));
  const busy = (s: ServerRecord) => transferring(s) || pending.has(s.id);
  const underWay = live.filter(busy);
  const ended = live.filter((s) => started.has(s.id) && !failed.has(s.id) && !busy(s));
  const endedIds = new Set(ended.map((s) => s.id));
  const todo = live.filter((s) => !busy(s) && !failed.has(s.id) && !endedIds.has(s.id));
  const slots = Math.max(0, Math.min(drain.parallel, MAX_DRAIN_PARALLEL) - underWay.length);
  const start = todo.filter((s) => !s.lifecycle.dataOp).slice(0, slots);
  const moved = [...started].filter((id) => !liveIds.has(id)).length;
  const failedCount = failed.size + ended.length;
  const finished = underWay.length === 0 && todo.length === 0;
  const parts = [`${moved} of ${moved + live.length} moved`];
  if (underWay.length > 0) parts.push(`${underWay.length} under way`);
  if (failedCount > 0) parts.push(`${failedCount} failed (DrainHost again retries them)`);
  if (deletedLeft > 0) parts.push(`${deletedLeft} soft-deleted left on the host (purge or restore them)`);
  const minutes = Math.max(0, Math.round((now - drain.startedAt) / 60_000));
  const message = finished ? `drain finished after ${minutes} min: ${parts.join("; ")}` : parts.join("; ");
  return { start, ended, underWay: underWay.length, waiting: todo.length, moved, deletedLeft, finished, message };
}

export interface HostDrainsDeps {
  store: Store;
  presence: HostPresence;
  ledger: Ledger;
  log: Logger;
  /** Starts transfers; absent: transfers are not available and the job does nothing (DrainHost refuses). */
  starter?: TransferStarter | undefined;
  now?: () => number;
  /** Between passes (default 5 s); a drain starting or a transfer ending wakes it at once. */
  intervalMs?: number;
}

/** Events after which a drain may have something to do at once. */
const WAKING = new Set(["host.drain_started", "host.drain_updated", "server.transfer_succeeded", "server.transfer_failed"]);

/** How often a read-modify-write of a host's schedule is tried when another writer changed it meanwhile. */
const SCHEDULE_ATTEMPTS = 5;

/**
 * Runs every host drain, on the leader: a pass every few seconds and at once
 * when a drain starts or a transfer ends (the store's commit feed, whichever
 * manager committed it).
 */
export class HostDrains {
  readonly #d: HostDrainsDeps;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  /** Servers whose starter.transfer() has not settled (counted as under way): server id → its host. */
  readonly #pending = new Map<string, string>();
  /** Those calls, recorded once they settle. */
  readonly #calls = new Set<Promise<void>>();

  constructor(deps: HostDrainsDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** Transfers can be started (a TransferStarter was given). */
  get available(): boolean {
    return this.#d.starter !== undefined;
  }

  start(): void {
    if (this.#timer || !this.#d.starter) return;
    this.#timer = setInterval(() => this.wake(), this.#d.intervalMs ?? 5_000);
    this.#timer.unref();
    this.#unsubscribe = this.#d.store.onCommit((c) => {
      if (c.resync || c.events.some((e) => WAKING.has(e.type))) this.wake();
    });
    this.wake();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    // Transfer calls still waiting for their answer are not waited for (a starter may take long):
    // what they answer is recorded if the store is still open, else judged by the next leader.
    await this.#running;
  }

  /** Resolves once every transfer asked for has answered and what it said is recorded. */
  async settled(): Promise<void> {
    while (this.#calls.size > 0) await Promise.all(this.#calls);
  }

  /** A pass soon, while started (one at a time; a wake during a pass runs another after it). */
  wake(): void {
    if (!this.#timer) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.runOnce()
      .catch((err: unknown) => this.#d.log.error({ err }, "host drain pass failed; trying again at the next pass"))
      .finally(() => {
        this.#running = undefined;
        if (this.#again && this.#timer) {
          this.#again = false;
          this.wake();
        }
      });
  }

  /** One pass: a step of every draining host. */
  async runOnce(): Promise<void> {
    if (!this.#d.starter) return;
    for (const host of await this.#d.store.listHosts()) {
      if (!host.schedule.drain) continue;
      try {
        await this.#step(host);
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
        // Someone changed the host's schedule meanwhile (UncordonHost, DrainHost): the next pass reads it again.
        this.#d.log.debug({ host: host.id }, "host drain step raced a schedule change; next pass");
      }
    }
  }

  async #step(host: HostRecord): Promise<void> {
    const { store, ledger, presence, log } = this.#d;
    const drain = host.schedule.drain!;
    const servers = await store.listServers({ hostId: host.id, includeDeleted: true });
    const pending = new Set([...this.#pending].filter(([, h]) => h === host.id).map(([id]) => id));
    const plan = planDrain(host, servers, this.#now(), pending);

    // Transfers that ended without moving their server: failed, with the transfer's own reason when it said one.
    const failures: DrainFailure[] = [];
    for (const s of plan.ended) failures.push({ serverId: s.id, name: s.name, reason: await this.#transferFailure(s, drain) });

    if (plan.finished) {
      await store.commit([
        { op: "host.schedule", id: host.id, schedule: keepCapacity({ unschedulable: true }, host.schedule), expect: host.schedule },
        ...failures.map((f) => ledger.op(failureEvent(host, servers.find((s) => s.id === f.serverId), f))),
        ledger.op({ type: "host.drain_finished", hostId: host.id, actor: "manager", message: `host ${host.name}: ${plan.message}; it stays cordoned until UncordonHost` }),
      ]);
      log.info({ host: host.id, moved: plan.moved, failed: (drain.failed?.length ?? 0) + failures.length }, "host drain finished");
      return;
    }

    // New transfers only while the host's agent is connected (a transfer reads the data there).
    const starts: { server: ServerRecord; to: string }[] = [];
    let waitingFor = "";
    if (!presence.isConnected(host.id)) {
      if (plan.start.length > 0) waitingFor = "waiting for the host's agent to connect";
    } else {
      for (const s of plan.start) {
        // The servers this step already sends somewhere count there (load, ports).
        const to = await pickTransferHost(store, presence, s, host.id, starts.map((x) => ({ hostId: x.to, server: x.server })));
        if (to) starts.push({ server: s, to });
        else if (!(await this.#anyDestination(host.id))) waitingFor = "waiting for another schedulable host to connect";
        else failures.push({ serverId: s.id, name: s.name, reason: "no connected, schedulable host has its ports free" });
      }
    }

    const next: HostDrain = {
      ...drain,
      ...(failures.length > 0 ? { failed: [...(drain.failed ?? []), ...failures] } : {}),
      ...(starts.length > 0 ? { started: [...new Set([...(drain.started ?? []), ...starts.map((x) => x.server.id)])] } : {}),
    };
    // The message as it is once these transfers are asked for and these failures recorded.
    const after = planDrain({ ...host, schedule: { unschedulable: true, drain: next } }, servers, this.#now(), new Set([...pending, ...starts.map((x) => x.server.id)]));
    const message = [after.message, waitingFor].filter(Boolean).join("; ");
    next.message = message;
    if (failures.length === 0 && starts.length === 0 && message === drain.message) return;
    // The servers are recorded as started before their transfer is asked for: a manager dying in
    // between leaves them judged "ended without moving" (failed) by the next leader, never started twice.
    await store.commit([
      { op: "host.schedule", id: host.id, schedule: keepCapacity({ unschedulable: true, drain: next }, host.schedule), expect: host.schedule },
      ...failures.map((f) => ledger.op(failureEvent(host, servers.find((s) => s.id === f.serverId), f))),
    ]);
    for (const f of failures) log.warn({ host: host.id, server: f.serverId, reason: f.reason }, "host drain: a server could not be moved; the drain goes on without it");
    for (const { server, to } of starts) this.#startTransfer(host, drain, server, to);
  }

  #startTransfer(host: HostRecord, drain: HostDrain, server: ServerRecord, to: string): void {
    const { log } = this.#d;
    this.#pending.set(server.id, host.id);
    log.info({ host: host.id, server: server.id, to }, "host drain: transferring a server");
    const call = Promise.resolve()
      .then(() => this.#d.starter!.transfer({ actor: drain.actor, name: `DrainHost ${host.name}` }, server.id, to, drain.target ? { target: drain.target } : {}))
      .then(
        () => undefined,
        (err: unknown) => this.#recordStartFailure(host.id, drain.startedAt, server, err instanceof Error ? err.message : String(err)),
      )
      .catch((err: unknown) => log.error({ err, host: host.id, server: server.id }, "host drain: could not record a transfer that did not start; the next pass judges it"))
      .finally(() => {
        this.#pending.delete(server.id);
        this.#calls.delete(call);
        this.wake();
      });
    this.#calls.add(call);
  }

  /** Adds `server` to the drain's failures, if the same drain still runs (read-modify-write, retried on a race). */
  async #recordStartFailure(hostId: string, startedAt: number, server: ServerRecord, reason: string): Promise<void> {
    const { store, ledger, log } = this.#d;
    log.warn({ host: hostId, server: server.id, reason }, "host drain: a transfer did not start; the drain goes on without it");
    for (let attempt = 1; ; attempt++) {
      const host = await store.getHost(hostId);
      const drain = host?.schedule.drain;
      if (!host || host.removedAt !== null || !drain || drain.startedAt !== startedAt) return;
      const f: DrainFailure = { serverId: server.id, name: server.name, reason: `the transfer did not start: ${reason}` };
      try {
        await store.commit([
          { op: "host.schedule", id: hostId, schedule: keepCapacity({ unschedulable: true, drain: { ...drain, failed: [...(drain.failed ?? []), f] } }, host.schedule), expect: host.schedule },
          ledger.op(failureEvent(host, server, f)),
        ]);
        return;
      } catch (err) {
        if (!(err instanceof ConflictError) || attempt >= SCHEDULE_ATTEMPTS) throw err;
      }
    }
  }

  /** Why `s`'s transfer ended: the newest server.transfer_failed event since the drain began, else a plain statement. */
  async #transferFailure(s: ServerRecord, drain: HostDrain): Promise<string> {
    const [e] = await this.#d.store.listNewestFirst({ project: null, serverId: s.id, typePrefix: "server.transfer_failed", since: drain.startedAt, limit: 1 });
    if (e) return [e.reason, e.message].filter(Boolean).join(": ") || "the transfer failed";
    return "its transfer ended without moving it";
  }

  /** Another host could take servers at all (connected, schedulable)? */
  async #anyDestination(hostId: string): Promise<boolean> {
    const connected = new Set(this.#d.presence.connectedHostIds());
    return (await this.#d.store.listHosts()).some((h) => h.id !== hostId && connected.has(h.id) && !h.schedule.unschedulable);
  }
}

function failureEvent(host: HostRecord, server: Pick<ServerRecord, "id" | "project"> | undefined, f: DrainFailure): EventInput {
  return {
    type: "host.drain_server_failed",
    hostId: host.id,
    ...(server ? { serverId: server.id, project: server.project } : { serverId: f.serverId }),
    actor: "manager",
    message: `drain of host ${host.name}: server ${f.name} stays on it: ${f.reason}`,
  };
}

/**
 * The schedule DrainHost writes: cordoned, the drain with these settings. A
 * drain under way keeps its start and what it moved, and forgets its
 * failures: they are tried again.
 */
export function drainSchedule(current: HostSchedule, o: { parallel: number; target: string; actor: string; now: number }): HostSchedule {
  const prev = current.drain;
  const failed = new Set((prev?.failed ?? []).map((f) => f.serverId));
  const started = (prev?.started ?? []).filter((id) => !failed.has(id));
  return {
    unschedulable: true,
    drain: {
      parallel: o.parallel,
      target: o.target,
      startedAt: prev?.startedAt ?? o.now,
      actor: prev?.actor ?? o.actor,
      ...(started.length > 0 ? { started } : {}),
      message: prev ? "drain settings changed; failed servers are tried again" : "drain started",
    },
  };
}
