import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  CommandKind,
  CommandResultSchema,
  DataDirSchema,
  DataPolicy,
  type Command,
  type CommandResult,
  type ContainerInfo,
} from "@berth/proto/berth/v1/agent_pb.js";
import type { DataCheck, DataRoot } from "./data/data-root.js";
import { DataPathError } from "./data/data-root.js";
import { KeyedQueue } from "./keyed-queue.js";
import type { ArchiveStats } from "./data/archive.js";
import type { BackupJobs } from "./data/backup-jobs.js";
import { RuntimeError, type ContainerRuntime } from "./runtime/container-runtime.js";
import { limitsToRemove, limitsUpdate } from "./runtime/limits.js";
import { LABEL_ROLE, LABEL_SERVER, messageOf, ROLE_INSTALL } from "./runtime/docker-runtime.js";
import { TailBuffer } from "./install/tail-buffer.js";
import { ENGINE_FAILURE_REASONS, engineGoingAway, waitForEngine } from "./runtime/engine-watch.js";
import { foreignNetworkRefusal, isProjectNetwork, isProjectNetworkName, LABEL_MANAGER, LABEL_PROJECT, networkFieldsRefusal, networkLabels } from "./runtime/project-network.js";
import { LABEL_READY_PATTERN } from "./ready-watch.js";
import type { Logger } from "pino";

const LABEL_HASH = "berth.spec-hash";

/** RUN_INSTALL keeps this much of the script's output (its end). */
export const INSTALL_LOG_BYTES = 64 * 1024;
/** RUN_INSTALL's timeout when the job gives none. */
const DEFAULT_INSTALL_TIMEOUT_S = 600;
/** How often RUN_INSTALL looks whether the script has exited. */
const INSTALL_POLL_MS = 250;

/** What RUN_INSTALL saw of the script. */
export interface InstallOutcome {
  exitCode: number;
  timedOut: boolean;
  log: Buffer;
  truncated: boolean;
  startedAt: number;
  finishedAt: number;
}

/** A command's project network, checked (Executor.projectNetwork). */
interface ProjectNetwork {
  name: string;
  aliases: string[];
  labels: Record<string, string>;
  project: string;
  managerId: string;
}

/** Progress of an image pull made for a command. */
export interface PullReport {
  serverId: string;
  commandId: string;
  image: string;
  status: string;
  /** The pull finished or failed: the last report. */
  done: boolean;
}
const RESULT_CACHE_SIZE = 2000;

/** How long after berth's stop or remove call returns its container's exit still counts as berth's (a "die" reported late). */
const EXPECTED_EXIT_GRACE_MS = 10_000;

/** The reason of a command refused because its manager no longer owns the host (Command.owner_epoch). */
export const STALE_OWNER = "StaleOwner";

/** Commands that name a container by its Docker id instead of by server labels. */
const BY_CONTAINER_ID = new Set([CommandKind.REMOVE_CONTAINER, CommandKind.INSPECT_CONTAINER, CommandKind.COPY_DATA]);

/** What the executor knows of the manager it serves (from its Welcome). */
export interface ManagerContext {
  /** The manager's id; undefined before the first welcome. */
  managerId(): string | undefined;
  /** The manager's clock now (command deadlines are manager time). */
  now(): number;
}

/**
 * Why a command must not be applied at all, or undefined. Pure: the command,
 * the container it names (when it names one by id; undefined when it does not
 * exist) and the manager's id and clock.
 *
 * - past its deadline: after a manager restart, commands are resent, and one
 *   may arrive after the manager recorded it expired (and decided anew); the
 *   agent must not act on that stale decision.
 * - a container named by id that is not labelled with this agent's manager:
 *   only an explicit OrphanService action (orphan_action) may remove,
 *   inspect or copy someone else's container.
 */
export function refusal(cmd: Command, named: ContainerInfo | undefined, manager: { id: string | undefined; now: number }): { reason: string; message: string } | undefined {
  if (cmd.deadline) {
    const deadlineMs = Number(cmd.deadline.seconds) * 1000 + Math.floor(cmd.deadline.nanos / 1e6);
    if (deadlineMs > 0 && deadlineMs < manager.now) {
      return {
        reason: "DeadlineExceeded",
        message: `command ${cmd.id} (${CommandKind[cmd.kind] ?? cmd.kind}) arrived ${Math.round((manager.now - deadlineMs) / 1000)}s after its deadline; not applied (the manager has recorded it expired and decides again)`,
      };
    }
  }
  if (BY_CONTAINER_ID.has(cmd.kind) && named && !cmd.orphanAction && (!manager.id || named.labels[LABEL_MANAGER] !== manager.id)) {
    return {
      reason: "NotThisManagers",
      message: `container ${named.name || named.id.slice(0, 12)} is not labelled ${LABEL_MANAGER}=${manager.id ?? "<this manager>"}; the agent touches it only on an explicit orphan action (OrphanService.DestroyOrphan or AdoptOrphan)`,
    };
  }
  return undefined;
}

/** The CamelCase reason an error carries (RuntimeError, DataPathError, the data jobs' errors), else AgentError. */
function reasonOf(err: unknown): string {
  if (err instanceof RuntimeError || err instanceof DataPathError) return err.reason;
  const r = (err as { reason?: unknown } | null)?.reason;
  return typeof r === "string" && /^[A-Z][A-Za-z]{1,63}$/.test(r) ? r : "AgentError";
}

/**
 * Applies the manager's commands idempotently. Commands for one server run
 * one at a time, in arrival order. A command id seen before is not applied
 * again: its (cached or in-progress) result is reported again, so the manager
 * can resend anything after a reconnect.
 */
export class Executor {
  /** Commands in line per server. */
  private readonly servers = new KeyedQueue();
  private readonly results = new Map<string, Promise<CommandResult>>();
  /**
   * Containers berth itself is stopping or removing: the next exit of each is
   * berth's own, not drift. `until` is open while the call runs, then a grace
   * period for a "die" reported late; the die takes the expectation
   * (takeExpectedExit), so an exit after it (an operator's `docker stop` right
   * after berth restarted the container) is drift again.
   */
  private readonly expectedExits = new Map<string, { until: number }>();
  /**
   * One operation per project network at a time (by name): a container being
   * put on a network and the network being removed because its project's
   * last container went never interleave, whichever servers they are for.
   */
  private readonly networks = new KeyedQueue();
  /** The newest host ownership epoch seen from any manager (Command/Welcome owner_epoch). */
  private newestOwnerEpoch = 0n;

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly data: DataRoot,
    private readonly log: Logger,
    private readonly onPull: (p: PullReport) => void = () => {},
    private readonly manager: ManagerContext = { managerId: () => undefined, now: Date.now },
    /** Backups and restores; without, their commands fail with Unsupported. */
    private readonly jobs?: BackupJobs,
  ) {}

  private backupJobs(): BackupJobs {
    if (!this.jobs) throw new RuntimeError("Unsupported", "this agent was started without backup support");
    return this.jobs;
  }

  /**
   * Is this exit (a "die" of the container) one berth caused, stopping or
   * removing it in the last moments? Yes takes the expectation: one berth
   * stop explains one exit.
   */
  takeExpectedExit(containerId: string): boolean {
    const mark = this.expectedExits.get(containerId);
    if (mark === undefined) return false;
    this.expectedExits.delete(containerId);
    return mark.until >= Date.now();
  }

  /** The container is gone: an exit berth expected of it will not come. */
  forgetExpectedExit(containerId: string): void {
    this.expectedExits.delete(containerId);
  }

  private withNetwork<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.networks.run(name, fn);
  }

  /** The command's project network, checked; undefined when it names none (Docker's default bridge). */
  private projectNetwork(cmd: Command): ProjectNetwork | undefined {
    const spec = cmd.container;
    if (!spec?.network) return undefined;
    const managerId = this.manager.managerId() ?? spec.labels[LABEL_MANAGER] ?? "";
    const refused = networkFieldsRefusal({ network: spec.network, project: spec.project, aliases: spec.networkAliases, managerId });
    if (refused) throw new RuntimeError("BadCommand", refused);
    return { name: spec.network, aliases: [...spec.networkAliases], labels: networkLabels(managerId, spec.project), project: spec.project, managerId };
  }

  /** Creates the project's network when missing; refuses a network of that name that is not the project's. Call under withNetwork. */
  private async ensureNetwork(net: ProjectNetwork): Promise<void> {
    const found = await this.runtime.ensureNetwork(net.name, net.labels);
    const foreign = foreignNetworkRefusal(found, net.managerId, net.project);
    if (foreign) throw new RuntimeError("NetworkNotBerths", foreign);
  }

  /**
   * After containers were removed: each project network they were on that
   * now has no container left (running or not) is removed. A failure only
   * logs: the network stays, and ListOrphans shows it.
   */
  private async releaseNetworks(removed: readonly ContainerInfo[]): Promise<void> {
    const managerId = this.manager.managerId();
    if (!managerId) return;
    const names = new Set(removed.flatMap((c) => c.networks).filter(isProjectNetworkName));
    for (const name of names) {
      await this.withNetwork(name, async () => {
        const n = await this.runtime.inspectNetwork(name);
        if (!n || !isProjectNetwork(n, managerId) || n.containers > 0) return;
        await this.runtime.removeNetwork(n.id);
        this.log.info({ network: name, project: n.labels[LABEL_PROJECT] }, "removed the project network: its last container on this host is gone");
      }).catch((err: unknown) => this.log.warn({ network: name, err: messageOf(err) }, "could not remove an empty project network; it is listed as an orphan"));
    }
  }

  /** OrphanService.DestroyOrphan of a network: only a berth project network, only when nothing is attached. */
  private async removeNetwork(cmd: Command): Promise<void> {
    if (!cmd.network) throw new RuntimeError("BadCommand", "remove-network needs a network name or id");
    const first = await this.runtime.inspectNetwork(cmd.network);
    if (!first) return;
    await this.withNetwork(first.name, async () => {
      const n = await this.runtime.inspectNetwork(first.id);
      if (!n) return;
      const managerId = this.manager.managerId();
      if (!isProjectNetworkName(n.name) || n.labels[LABEL_PROJECT] === undefined) {
        throw new RuntimeError("NotAProjectNetwork", `network ${n.name} is not a berth project network; the agent removes no other network`);
      }
      if (!cmd.orphanAction && (!managerId || !isProjectNetwork(n, managerId))) {
        throw new RuntimeError("NotThisManagers", `network ${n.name} is not labelled ${LABEL_MANAGER}=${managerId ?? "<this manager>"}; the agent removes it only on an explicit orphan action`);
      }
      if (n.containers > 0) {
        throw new RuntimeError("NetworkInUse", `network ${n.name} still has ${n.containers} container(s) attached (running or not); remove or move them first`);
      }
      await this.runtime.removeNetwork(n.id);
      this.log.info({ network: n.name, project: n.labels[LABEL_PROJECT] }, "removed a project network (orphan action)");
    });
  }

  /**
   * Marks the container's next exit as berth's own for the duration of the
   * call plus a grace period for a "die" reported late. An exit reported
   * during the call took the mark already, and it is not put back.
   */
  private async expectExit<T>(containerId: string, fn: () => Promise<T>): Promise<T> {
    const mark = { until: Number.MAX_SAFE_INTEGER };
    this.expectedExits.set(containerId, mark);
    try {
      return await fn();
    } finally {
      if (this.expectedExits.get(containerId) === mark) mark.until = Date.now() + EXPECTED_EXIT_GRACE_MS;
    }
  }

  /**
   * A manager took this host at `epoch` (its Welcome, or a command it sent):
   * from now on commands of older epochs come from a manager that lost the
   * host and are refused (StaleOwner). Epochs only go up.
   */
  observeOwnerEpoch(epoch: bigint): void {
    if (epoch > this.newestOwnerEpoch) this.newestOwnerEpoch = epoch;
  }

  /** The newest ownership epoch seen from any manager (0: none yet). */
  get ownerEpoch(): bigint {
    return this.newestOwnerEpoch;
  }

  execute(cmd: Command): Promise<CommandResult> {
    // Before the result cache: a stale manager resending a command id must be refused too.
    const stale = this.staleOwner(cmd);
    if (stale) return Promise.resolve(stale);
    this.observeOwnerEpoch(cmd.ownerEpoch);
    const known = this.results.get(cmd.id);
    if (known) return known;
    if (cmd.attachOnly) {
      // A backup or restore sent before: this process never had it, so the agent restarted meanwhile.
      return Promise.resolve(
        create(CommandResultSchema, {
          commandId: cmd.id,
          success: false,
          reason: "AgentRestarted",
          message: `the agent restarted while running ${CommandKind[cmd.kind] ?? cmd.kind} ${cmd.id}; what it had written was removed when it started again`,
        }),
      );
    }
    // A console line goes in at once: it never waits behind the server's other commands (a backup, a stop).
    const run = cmd.kind === CommandKind.CONSOLE_INPUT ? this.apply(cmd) : this.servers.run(cmd.serverId, () => this.applyOverEngineRestarts(cmd));
    this.results.set(cmd.id, run);
    if (this.results.size > RESULT_CACHE_SIZE) this.results.delete(this.results.keys().next().value!);
    // Refused while it waited in line: the owner that took the host may resend this id, which must then run.
    void run.then((r) => {
      if (r.reason === STALE_OWNER && this.results.get(cmd.id) === run) this.results.delete(cmd.id);
    });
    return run;
  }

  /**
   * The refusal of a command from a manager that lost this host (its epoch is
   * older than the newest seen), or undefined. Not applied; the result tells
   * the sender, which stops driving the host.
   */
  private staleOwner(cmd: Command): CommandResult | undefined {
    if (cmd.ownerEpoch >= this.newestOwnerEpoch) return undefined;
    const message = `command ${cmd.id} (${CommandKind[cmd.kind] ?? cmd.kind}) carries ownership epoch ${cmd.ownerEpoch}, but a manager took this host at epoch ${this.newestOwnerEpoch}; not applied (the manager that sent it no longer owns the host)`;
    this.log.warn({ server: cmd.serverId, command: cmd.id, kind: CommandKind[cmd.kind], epoch: String(cmd.ownerEpoch), newestEpoch: String(this.newestOwnerEpoch) }, "command refused");
    return create(CommandResultSchema, { commandId: cmd.id, success: false, reason: STALE_OWNER, message });
  }

  /**
   * Applies a command; when it failed because the Docker engine was going
   * away (dockerd restarting: a shutting-down engine still answers, with odd
   * errors), waits for the engine until shortly before the command's deadline
   * and applies it once more. Safe because every command is an idempotent
   * ensure-operation; without it a routine engine restart would leave the
   * server Failed until an operator acts.
   */
  private async applyOverEngineRestarts(cmd: Command): Promise<CommandResult> {
    const first = await this.apply(cmd);
    if (first.success || !ENGINE_FAILURE_REASONS.has(first.reason) || !(await engineGoingAway(this.runtime))) return first;
    const deadline = cmd.deadline ? Number(cmd.deadline.seconds) * 1000 - 2_000 : Date.now() + 120_000;
    this.log.warn({ server: cmd.serverId, command: cmd.id, reason: first.reason }, "the Docker engine went away during the command; applying it again once the engine is back");
    if (!(await waitForEngine(this.runtime, deadline))) {
      return create(CommandResultSchema, {
        ...first,
        reason: "DockerUnreachable",
        message: `${first.message}; the Docker engine went away during the command and was not back before its deadline`,
      });
    }
    return this.apply(cmd);
  }

  private async apply(cmd: Command): Promise<CommandResult> {
    const started = Date.now();
    // Again when its turn comes: another manager may have taken the host while it waited in line.
    const stale = this.staleOwner(cmd);
    if (stale) return stale;
    try {
      const manager = { id: this.manager.managerId(), now: this.manager.now() };
      // A late command is refused before the engine is asked anything (its answer cannot matter).
      // Then the named container: undefined when it does not exist; an engine that does not answer
      // fails the command (taking it for "no such container" would skip the refusal of someone
      // else's container).
      const named =
        refusal(cmd, undefined, manager) === undefined && BY_CONTAINER_ID.has(cmd.kind) && cmd.containerId ? await this.runtime.inspect(cmd.containerId) : undefined;
      const refused = refusal(cmd, named, manager);
      if (refused) {
        this.log.warn({ server: cmd.serverId, command: cmd.id, kind: CommandKind[cmd.kind], ...refused }, "command refused");
        return create(CommandResultSchema, { commandId: cmd.id, success: false, ...refused });
      }
      const { container, data, archive, message, install } = await this.dispatch(cmd, named);
      this.log.info({ server: cmd.serverId, command: cmd.id, kind: CommandKind[cmd.kind], ms: Date.now() - started }, "command applied");
      if (install) return installResult(cmd, install, this.installTimeout(cmd));
      return create(CommandResultSchema, {
        commandId: cmd.id,
        success: true,
        ...(message ? { message } : {}),
        ...(container ? { container } : {}),
        ...(data ? { data: dataDir(data) } : {}),
        ...(archive
          ? { archive: { sha256: archive.sha256, archiveBytes: BigInt(archive.archiveBytes), rawBytes: BigInt(archive.rawBytes), files: BigInt(archive.files), skipped: BigInt(archive.skipped) } }
          : {}),
      });
    } catch (err) {
      const reason = reasonOf(err);
      const message = messageOf(err);
      this.log.warn({ server: cmd.serverId, command: cmd.id, kind: CommandKind[cmd.kind], reason, message }, "command failed");
      const container = cmd.serverId ? await this.current(cmd).catch(() => undefined) : undefined;
      const data = cmd.serverId ? await this.data.check(cmd.serverId).catch(() => undefined) : undefined;
      return create(CommandResultSchema, {
        commandId: cmd.id,
        success: false,
        reason,
        message,
        ...(container ? { container } : {}),
        ...(data ? { data: dataDir(data) } : {}),
      });
    }
  }

  private async dispatch(cmd: Command, named?: ContainerInfo): Promise<{ container?: ContainerInfo; data?: DataCheck; archive?: ArchiveStats; message?: string; install?: InstallOutcome }> {
    switch (cmd.kind) {
      case CommandKind.RUN_INSTALL:
        return { install: await this.runInstall(cmd) };
      case CommandKind.BACKUP_DATA:
        return { archive: await this.backupJobs().backup(cmd), data: await this.data.check(cmd.serverId) };
      case CommandKind.RESTORE_DATA: {
        const c = await this.current(cmd);
        if (c && (c.state === "running" || c.state === "paused" || c.state === "restarting")) {
          throw new RuntimeError("ContainerRunning", `the container is ${c.state}; a restore replaces the data of a stopped server only`);
        }
        await this.backupJobs().restore(cmd);
        return { data: await this.data.check(cmd.serverId) };
      }
      case CommandKind.REMOVE_BACKUP:
        await this.backupJobs().removeArchive(cmd);
        return {};
      case CommandKind.DISCARD_PREVIOUS_DATA:
        await this.backupJobs().discardPrevious(cmd);
        return {};
      case CommandKind.ENSURE_CONTAINER:
        return this.ensureContainer(cmd, false);
      case CommandKind.ENSURE_RUNNING:
        return this.ensureContainer(cmd, true);
      case CommandKind.ENSURE_STOPPED: {
        const message = await this.stopAll(cmd);
        return { container: await this.current(cmd), ...(message ? { message } : {}) };
      }
      case CommandKind.RESTART: {
        const message = await this.stopAll(cmd);
        return { ...(await this.ensureContainer(cmd, true)), ...(message ? { message } : {}) };
      }
      case CommandKind.ENSURE_PAUSED: {
        const c = await this.current(cmd);
        if (!c) throw new RuntimeError("ContainerMissing", "no container to pause");
        if (c.state !== "running" && c.state !== "paused") throw new RuntimeError("NotRunning", `cannot pause a container that is ${c.state}`);
        if (c.state === "running") await this.runtime.pause(c.id);
        return { container: await this.current(cmd) };
      }
      case CommandKind.ENSURE_REMOVED: {
        // The install container too (a server deleted while it installs).
        const removed = [...(await this.containersOf(cmd)), ...(await this.installContainers(cmd.serverId))];
        for (const c of removed) await this.expectExit(c.id, () => this.runtime.remove(c.id));
        await this.releaseNetworks(removed);
        return {};
      }
      case CommandKind.REMOVE_DATA:
        await this.data.remove(cmd.serverId);
        return { data: await this.data.check(cmd.serverId) };
      case CommandKind.CHECK_DATA:
        return { data: await this.data.check(cmd.serverId) };
      case CommandKind.REMOVE_CONTAINER: {
        if (!cmd.containerId) throw new RuntimeError("BadCommand", "remove-container needs a container id");
        await this.expectExit(cmd.containerId, () => this.runtime.remove(cmd.containerId));
        if (named) await this.releaseNetworks([named]);
        return {};
      }
      case CommandKind.REMOVE_NETWORK:
        await this.removeNetwork(cmd);
        return {};
      case CommandKind.INSPECT_CONTAINER: {
        if (!this.runtime.inspectForAdoption) throw new RuntimeError("Unsupported", "this runtime cannot inspect containers for adoption");
        const c = await this.runtime.inspectForAdoption(cmd.containerId);
        if (!c) throw new RuntimeError("ContainerMissing", `container ${cmd.containerId.slice(0, 12)} no longer exists`);
        return { container: c };
      }
      case CommandKind.REMOVE_STRAY_DATA:
        await this.data.removeEntry(cmd.dataDir);
        return {};
      case CommandKind.COPY_DATA:
        return this.copyData(cmd, named);
      case CommandKind.CONSOLE_INPUT: {
        if (!this.runtime.writeStdin) throw new RuntimeError("Unsupported", "this agent's runtime has no consoles");
        const c = await this.current(cmd);
        if (!c || c.state !== "running") throw new RuntimeError("ContainerNotRunning", `the server's container is ${c ? c.state : "missing"}; start it to use its console`);
        await this.runtime.writeStdin(c.id, cmd.consoleInput);
        return { container: c };
      }
      default:
        throw new RuntimeError("UnknownCommand", `command kind ${cmd.kind} is not known to this agent; upgrade it`);
    }
  }

  /**
   * AdoptOrphan with move_data: stop the container, copy its data mount into
   * `<root>/<server id>`, remove the container (the reconciler then creates
   * berth's own). The copy's source is left in place. Idempotent: when the
   * container is gone and the data directory exists, an earlier run did it.
   * A failed copy starts the container again if it was running. `c` is the
   * container as apply() inspected it (undefined: it does not exist).
   */
  private async copyData(cmd: Command, c: ContainerInfo | undefined): Promise<{ container?: ContainerInfo; data?: DataCheck }> {
    if (!cmd.containerId || !cmd.mountPath) throw new RuntimeError("BadCommand", "copy-data needs a container id and a mount path");
    const before = await this.data.check(cmd.serverId);
    if (!c) {
      if (before.exists) return { data: before };
      throw new RuntimeError("ContainerMissing", `container ${cmd.containerId.slice(0, 12)} no longer exists; nothing to copy`);
    }
    if (!before.exists) {
      const m = c.mountPoints.find((x) => x.destination === cmd.mountPath);
      if (!m) throw new RuntimeError("MountMissing", `container ${c.name} has no mount at ${cmd.mountPath}`);
      const wasRunning = c.state === "running" || c.state === "paused" || c.state === "restarting";
      if (c.state === "paused") await this.runtime.unpause(c.id);
      if (wasRunning) await this.expectExit(c.id, () => this.runtime.stop(c.id, cmd.stopTimeoutSeconds || 10));
      try {
        const ms = cmd.deadline ? Math.max(10_000, Number(cmd.deadline.seconds) * 1000 - Date.now() - 5_000) : 3_600_000;
        await this.data.copyIn(cmd.serverId, { type: m.type, path: m.source, readOnly: m.readOnly }, ms);
      } catch (err) {
        if (wasRunning) await this.runtime.start(c.id).catch((e: unknown) => this.log.warn({ container: c.id, err: messageOf(e) }, "could not start the container again after a failed copy"));
        throw err;
      }
      this.log.info({ server: cmd.serverId, container: c.id, from: m.source }, "copied an adopted container's data into the data root");
    }
    await this.expectExit(c.id, () => this.runtime.remove(c.id));
    await this.releaseNetworks([c]);
    return { data: await this.data.check(cmd.serverId) };
  }

  /**
   * Stops the server's containers. With a stop command, it is written to the
   * console first and the container gets the stop timeout to exit by itself
   * before Docker's stop (its stop signal, SIGKILL after the timeout again). Answers
   * what the stop command did, for the command's ledger message.
   */
  private async stopAll(cmd: Command): Promise<string | undefined> {
    const timeout = cmd.stopTimeoutSeconds || 10;
    // Docker sends the container's own StopSignal; the spec says which that is.
    const signal = cmd.container?.stopSignal || "SIGTERM";
    let said: string | undefined;
    for (const c of await this.containersOf(cmd)) {
      if (c.state === "paused") await this.runtime.unpause(c.id);
      if (c.state !== "running" && c.state !== "paused" && c.state !== "restarting") continue;
      await this.expectExit(c.id, async () => {
        if (cmd.stopCommand && this.runtime.writeStdin) {
          const t0 = Date.now();
          const written = await this.runtime.writeStdin(c.id, new TextEncoder().encode(`${cmd.stopCommand}\n`)).then(
            () => undefined,
            (err: unknown) => messageOf(err),
          );
          if (written === undefined && (await this.exitsWithin(c.id, timeout * 1000))) {
            said = `stopped by its stop command ${JSON.stringify(cmd.stopCommand)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`;
            return;
          }
          said =
            written === undefined
              ? `did not exit within ${timeout} s of its stop command ${JSON.stringify(cmd.stopCommand)}: sent ${signal} (SIGKILL after ${timeout} s more)`
              : `its stop command could not be written (${written}): sent ${signal} (SIGKILL after ${timeout} s)`;
        }
        await this.runtime.stop(c.id, timeout);
      });
    }
    return said;
  }

  /** Whether container `id` stops running within `ms` (checked every 200 ms). */
  private async exitsWithin(id: string, ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    for (;;) {
      const c = await this.runtime.inspect(id);
      if (!c || c.state !== "running") return true;
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Data dir, one container with the wanted spec hash (others removed), optionally running. */
  private async ensureContainer(cmd: Command, running: boolean): Promise<{ container?: ContainerInfo; data?: DataCheck; message?: string }> {
    const spec = cmd.container;
    if (!spec) throw new RuntimeError("BadCommand", "command has no container spec");
    const check = await this.data.check(cmd.serverId);
    if (!check.exists && cmd.dataPolicy === DataPolicy.REQUIRE) {
      throw new RuntimeError("DataMissing", `data directory ${this.data.pathFor(cmd.serverId)} is missing; refusing to start with empty data`);
    }
    const net = this.projectNetwork(cmd);
    const dataDirPath = await this.data.ensure(cmd.serverId);

    const existing = await this.containersOf(cmd);
    // A rebuild replaces even a container that runs the current spec.
    let keep = cmd.recreate
      ? undefined
      : (existing.find((c) => c.labels[LABEL_HASH] === spec.specHash && c.state === "running") ??
        existing.find((c) => c.labels[LABEL_HASH] === spec.specHash));
    // A stopped container that holds a limit the spec no longer has: only a new container loses
    // it (docker update cannot remove a limit), and a stopped one costs nothing to make again.
    if (keep && spec.resources && keep.resources && keep.state !== "running" && keep.state !== "paused") {
      const drop = limitsToRemove(spec.resources, keep.resources);
      if (drop.length > 0) {
        this.log.info({ server: cmd.serverId, container: keep.id, limits: drop }, "making the container again to remove limits");
        keep = undefined;
      }
    }
    for (const c of existing) {
      if (c !== keep) {
        this.log.info({ server: cmd.serverId, container: c.id, recreate: cmd.recreate }, "removing container with an outdated spec, a duplicate, or for a rebuild");
        await this.expectExit(c.id, () => this.runtime.remove(c.id));
      }
    }
    if (!keep) {
      if (!(await this.runtime.imageExists(spec.image))) {
        const report = (status: string, done = false) => this.onPull({ serverId: cmd.serverId, commandId: cmd.id, image: spec.image, status, done });
        report(`pulling image ${spec.image}`);
        try {
          await this.runtime.pull(spec.image, (line) => report(line));
        } catch (err) {
          report(`pull failed: ${messageOf(err)}`, true);
          throw err;
        }
        report(`pulled image ${spec.image}`, true);
      }
      const createIt = () => this.runtime.create({
        name: spec.name,
        image: spec.image,
        command: spec.command,
        env: spec.env,
        // The container carries its ready pattern: an agent that restarts while it runs watches it again.
        labels: spec.readyPattern ? { ...spec.labels, [LABEL_READY_PATTERN]: spec.readyPattern } : spec.labels,
        ports: spec.ports,
        dataDir: dataDirPath,
        mountPath: spec.dataMountPath || "/data",
        capAdd: spec.capAdd,
        logMaxSizeBytes: spec.logMaxSizeBytes,
        logMaxFiles: spec.logMaxFiles,
        ...(spec.openStdin ? { openStdin: true } : {}),
        ...(net ? { network: { name: net.name, aliases: net.aliases } } : {}),
        ...(spec.resources ? { resources: spec.resources } : {}),
        ...(spec.stopSignal ? { stopSignal: spec.stopSignal } : {}),
      });
      // The network is made (if missing) and the container created on it under the network's
      // lock: removing the project's emptied network cannot slip in between.
      const id = net
        ? await this.withNetwork(net.name, async () => {
            await this.ensureNetwork(net);
            return createIt();
          })
        : await createIt();
      keep = await this.runtime.inspect(id);
      if (!keep) throw new RuntimeError("CreateFailed", "the container vanished right after it was created");
    }
    else if (net && (keep.networks.length !== 1 || keep.networks[0] !== net.name)) {
      // Made before project networks (on Docker's default bridge): moved onto its project's
      // network live, without a restart; published ports keep working.
      const moving = keep;
      await this.withNetwork(net.name, async () => {
        await this.ensureNetwork(net);
        await this.runtime.attachOnly(moving.id, { name: net.name, aliases: net.aliases });
      });
      this.log.info({ server: cmd.serverId, container: keep.id, network: net.name, from: keep.networks }, "moved the container onto its project network");
    }
    // Limits changed since the container was made: set in place, running or not (what cannot be
    // removed this way stays until the container is made again).
    // Refused (a memory limit below what the container uses now, a CPU the host lacks): the
    // container is left as it is and the command still succeeds, saying so. The manager sees the
    // limits differ and shows it (SpecApplied LimitsNotApplied); a running server is not a failed one.
    let message: string | undefined;
    const update = spec.resources && keep.resources ? limitsUpdate(spec.resources, keep.resources) : undefined;
    if (update && this.runtime.updateLimits) {
      try {
        await this.runtime.updateLimits(keep.id, update);
        this.log.info({ server: cmd.serverId, container: keep.id, update }, "changed the container's limits in place");
      } catch (err) {
        if (!(err instanceof RuntimeError) || err.reason !== "LimitsRefused") throw err;
        message = `${err.message}; the container keeps its limits as they were (RebuildServer makes a new container with the new ones)`;
        this.log.warn({ server: cmd.serverId, container: keep.id, update, err: err.message }, "Docker refused the container's new limits");
      }
    }
    if (running) {
      if (keep.state === "paused") await this.runtime.unpause(keep.id);
      else if (keep.state !== "running") await this.runtime.start(keep.id);
    }
    return { container: await this.runtime.inspect(keep.id), data: await this.data.check(cmd.serverId), ...(message ? { message } : {}) };
  }

  /**
   * The server's containers: those labelled for it, plus the container an
   * AdoptOrphan bound to it (no labels of its own) while that one exists.
   */
  private async containersOf(cmd: Pick<Command, "serverId" | "adoptedContainerId">): Promise<ContainerInfo[]> {
    // Not its install container (RUN_INSTALL), which carries the server's label too.
    const labelled = (await this.runtime.list(cmd.serverId)).filter((c) => c.labels[LABEL_SERVER] === cmd.serverId && c.labels[LABEL_ROLE] !== ROLE_INSTALL);
    const adopted = cmd.adoptedContainerId;
    if (!adopted || labelled.some((c) => c.id === adopted)) return labelled;
    const c = await this.runtime.inspect(adopted);
    return c ? [...labelled, c] : labelled;
  }

  /** The server's install containers (normally none, or the one of RUN_INSTALL under way). */
  private async installContainers(serverId: string): Promise<ContainerInfo[]> {
    if (!serverId) return [];
    return (await this.runtime.list(serverId)).filter((c) => c.labels[LABEL_SERVER] === serverId && c.labels[LABEL_ROLE] === ROLE_INSTALL);
  }

  private installTimeout(cmd: Command): number {
    return cmd.install?.timeoutSeconds || DEFAULT_INSTALL_TIMEOUT_S;
  }

  /**
   * RUN_INSTALL: the script in a container of its own, berth-install-<server
   * id>, with the data directory mounted, until it exits or its timeout
   * (then killed: timedOut); its output's last INSTALL_LOG_BYTES kept; the
   * container removed whatever happened. An install container left from
   * before (an agent that restarted during an install) is removed first and
   * the script runs again: commands of one server run one at a time, so two
   * never run at once. Removed from outside while it runs (the server was
   * deleted): InstallCancelled.
   */
  private async runInstall(cmd: Command): Promise<InstallOutcome> {
    const job = cmd.install;
    if (!job || !job.image || !job.script) throw new RuntimeError("BadCommand", "run-install needs an install job with an image and a script");
    const mountPath = job.mountPath || "/mnt/server";
    for (const old of await this.installContainers(cmd.serverId)) {
      this.log.info({ server: cmd.serverId, container: old.id }, "removing an install container left from before; running the install again");
      await this.expectExit(old.id, () => this.runtime.remove(old.id));
    }
    const dataDirPath = await this.data.ensure(cmd.serverId);
    if (!(await this.runtime.imageExists(job.image))) {
      const report = (status: string, done = false) => this.onPull({ serverId: cmd.serverId, commandId: cmd.id, image: job.image, status, done });
      report(`pulling image ${job.image}`);
      try {
        await this.runtime.pull(job.image, (line) => report(line));
      } catch (err) {
        report(`pull failed: ${messageOf(err)}`, true);
        throw err;
      }
      report(`pulled image ${job.image}`, true);
    }
    const id = await this.runtime.create({
      name: `berth-install-${cmd.serverId}`,
      image: job.image,
      entrypoint: [job.entrypoint || "sh", "-c", job.script],
      command: [],
      env: job.env,
      labels: { ...job.labels, [LABEL_SERVER]: cmd.serverId, [LABEL_ROLE]: ROLE_INSTALL },
      ports: [],
      dataDir: dataDirPath,
      mountPath,
      // Rotated, so a script that prints without end fills no disk; read back once it is done.
      logMaxSizeBytes: 4 * 1024 * 1024,
      logMaxFiles: 2,
    });
    const timeoutMs = this.installTimeout(cmd) * 1000;
    try {
      const startedAt = Date.now();
      let timedOut = false;
      // Its exit is berth's own: not a crash of the server.
      const info = await this.expectExit(id, async () => {
        await this.runtime.start(id);
        for (;;) {
          const c = await this.runtime.inspect(id);
          if (!c) throw new RuntimeError("InstallCancelled", "the install container was removed while the script ran (the server was deleted, or it was removed outside berth)");
          if (c.state !== "running" && c.state !== "created" && c.state !== "restarting") return c;
          if (Date.now() - startedAt >= timeoutMs) {
            timedOut = true;
            await this.runtime.kill(id);
          }
          await new Promise((r) => setTimeout(r, INSTALL_POLL_MS));
        }
      });
      const finishedAt = Date.now();
      const tail = new TailBuffer(INSTALL_LOG_BYTES);
      const ac = new AbortController();
      try {
        for await (const f of await this.runtime.logs(id, { follow: false, tailLines: 0 }, ac.signal)) tail.push(f.data);
      } catch (err) {
        tail.push(Buffer.from(`\n[berth: the install's output could not be read completely: ${messageOf(err)}]\n`));
      }
      this.log.info({ server: cmd.serverId, container: id, exitCode: info.exitCode, timedOut, ms: finishedAt - startedAt, outputBytes: tail.total }, "install script finished");
      return { exitCode: info.exitCode, timedOut, log: tail.bytes(), truncated: tail.truncated, startedAt, finishedAt };
    } finally {
      await this.expectExit(id, () => this.runtime.remove(id)).catch((err: unknown) => this.log.warn({ server: cmd.serverId, container: id, err: messageOf(err) }, "could not remove the install container; the next install or the server's removal removes it"));
    }
  }

  private async current(cmd: Pick<Command, "serverId" | "adoptedContainerId">): Promise<ContainerInfo | undefined> {
    const all = await this.containersOf(cmd);
    return all.find((c) => c.state === "running") ?? all[0];
  }
}

export function dataDir(d: DataCheck) {
  return create(DataDirSchema, {
    serverId: d.serverId,
    exists: d.exists,
    sizeBytes: BigInt(d.sizeBytes),
    sizeUnknown: d.sizeUnknown === true,
    ...(d.modifyTimeMs ? { modifyTime: timestampFromMs(Math.floor(d.modifyTimeMs)) } : {}),
  });
}

/** RUN_INSTALL's result: success is exit code 0 within the timeout. */
function installResult(cmd: Command, o: InstallOutcome, timeoutS: number): CommandResult {
  const ok = o.exitCode === 0 && !o.timedOut;
  return create(CommandResultSchema, {
    commandId: cmd.id,
    success: ok,
    reason: ok ? "" : "InstallFailed",
    message: ok
      ? `the install script succeeded in ${((o.finishedAt - o.startedAt) / 1000).toFixed(1)} s`
      : o.timedOut
        ? `the install script did not finish within its timeout of ${timeoutS} s and was killed`
        : `the install script exited with code ${o.exitCode}`,
    install: {
      exitCode: o.exitCode,
      timedOut: o.timedOut,
      log: o.log,
      truncated: o.truncated,
      startedTime: timestampFromMs(o.startedAt),
      finishedTime: timestampFromMs(o.finishedAt),
    },
  });
}
