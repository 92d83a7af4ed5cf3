import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { cpus, hostname, totalmem } from "node:os";
import type { Logger } from "pino";
import { AgentMessageSchema, ContainerInfoSchema, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import type { DataRoot } from "./data/data-root.js";
import { dataDir, Executor } from "./executor.js";
import { Backoff } from "./link/backoff.js";
import { ManagerLink } from "./link/manager-link.js";
import type { ContainerRuntime, RuntimeEvent } from "./runtime/container-runtime.js";

export const AGENT_VERSION = "0.1.0";

export interface AgentOptions {
  managerUrl: string;
  credential: { hostId: string; secret: string };
  runtime: ContainerRuntime;
  dataRoot: DataRoot;
  log: Logger;
  /** Full inventory period, to heal anything an event stream missed. */
  inventoryIntervalMs?: number;
  heartbeatIntervalMs?: number;
}

type Body = NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>;

/**
 * The host daemon: reports what the engine and the data root hold, streams
 * Docker events as deltas, and applies the manager's commands.
 */
export class Agent {
  private readonly link: ManagerLink;
  private readonly executor: Executor;
  private readonly abort = new AbortController();
  private dockerReachable = false;
  private dockerVersion = "";
  private timers: NodeJS.Timeout[] = [];
  private readonly eventChains = new Map<string, Promise<void>>();
  private revoked: ((message: string) => void) | undefined;
  readonly done: Promise<{ revoked: boolean; message: string }>;

  constructor(private readonly opts: AgentOptions) {
    this.executor = new Executor(opts.runtime, opts.dataRoot, opts.log.child({ part: "executor" }));
    this.link = new ManagerLink(
      opts.managerUrl,
      opts.credential,
      {
        onOpen: () => void this.sendHelloAndInventory(),
        onMessage: (m) => this.onManagerMessage(m),
        onClose: () => {},
        onRevoked: (message) => this.revoked?.(message),
      },
      opts.log.child({ part: "link" }),
    );
    this.done = new Promise((resolve) => {
      this.revoked = (message) => {
        this.stop();
        resolve({ revoked: true, message });
      };
      this.abort.signal.addEventListener("abort", () => resolve({ revoked: false, message: "stopped" }));
    });
  }

  async start(): Promise<void> {
    await this.opts.dataRoot.init();
    await this.refreshDocker();
    void this.watchEvents();
    this.link.start();
    this.every(this.opts.inventoryIntervalMs ?? 30_000, () => void this.sendInventory());
    this.every(this.opts.heartbeatIntervalMs ?? 5_000, () => void this.sendHeartbeat());
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (!this.abort.signal.aborted) this.abort.abort();
    this.link.stop();
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    this.timers.push(t);
  }

  private send(body: Body): void {
    this.link.send(create(AgentMessageSchema, { body }));
  }

  private async refreshDocker(): Promise<void> {
    try {
      this.dockerVersion = await this.opts.runtime.version();
      this.dockerReachable = true;
    } catch (err) {
      this.dockerReachable = false;
      this.opts.log.warn({ err: String(err) }, "Docker engine unreachable");
    }
  }

  private async sendHelloAndInventory(): Promise<void> {
    const disk = await this.opts.dataRoot.diskSpace();
    this.send({
      case: "hello",
      value: {
        hostname: hostname(),
        agentVersion: AGENT_VERSION,
        dockerVersion: this.dockerVersion,
        dataRoot: this.opts.dataRoot.root,
        cpuCount: cpus().length,
        memoryBytes: BigInt(totalmem()),
        dataRootFreeBytes: BigInt(disk.freeBytes),
        dataRootTotalBytes: BigInt(disk.totalBytes),
        dockerReachable: this.dockerReachable,
      },
    });
    await this.sendInventory();
  }

  /** A complete picture: the manager replaces what it knew about this host with it. */
  private async sendInventory(): Promise<void> {
    if (!this.link.connected) return;
    let containers;
    try {
      containers = await this.opts.runtime.list();
      this.dockerReachable = true;
    } catch (err) {
      this.dockerReachable = false;
      this.opts.log.warn({ err: String(err) }, "inventory skipped: Docker engine unreachable");
      this.sendHeartbeatNow();
      return;
    }
    const dirs = await this.opts.dataRoot.list();
    const ids = new Set<string>(dirs.filter((d) => this.opts.dataRoot.isServerId(d)));
    for (const c of containers) {
      const sid = c.labels["berth.server"];
      if (sid && this.opts.dataRoot.isServerId(sid)) ids.add(sid);
    }
    const dataDirs = [];
    for (const id of ids) dataDirs.push(dataDir(await this.opts.dataRoot.check(id)));
    this.send({
      case: "inventory",
      value: {
        containers,
        dataDirs,
        dockerReachable: true,
        otherDataDirs: dirs.filter((d) => !this.opts.dataRoot.isServerId(d)),
      },
    });
  }

  private sendHeartbeatNow(): void {
    this.send({ case: "heartbeat", value: { time: timestampNow(), dockerReachable: this.dockerReachable } });
  }

  private async sendHeartbeat(): Promise<void> {
    const disk = await this.opts.dataRoot.diskSpace();
    this.send({
      case: "heartbeat",
      value: { time: timestampNow(), dataRootFreeBytes: BigInt(disk.freeBytes), dockerReachable: this.dockerReachable },
    });
  }

  private onManagerMessage(msg: ManagerMessage): void {
    switch (msg.body.case) {
      case "welcome":
        return;
      case "resync":
        void this.sendInventory();
        return;
      case "command": {
        const cmd = msg.body.value;
        void this.executor.execute(cmd).then((result) => this.send({ case: "commandResult", value: result }));
        return;
      }
      default:
        return;
    }
  }

  /** Subscribes to Docker events forever; after any break, resubscribes and sends a full inventory. */
  private async watchEvents(): Promise<void> {
    const backoff = new Backoff(250, 10_000);
    const signal = this.abort.signal;
    let broken = false;
    while (!signal.aborted) {
      try {
        const { closed } = await this.opts.runtime.subscribe((e) => this.onRuntimeEvent(e), signal);
        if (broken) {
          this.opts.log.info("Docker events stream re-established; resyncing");
          await this.refreshDocker();
          void this.sendInventory();
          this.sendHeartbeatNow();
        }
        backoff.reset();
        broken = false;
        await closed;
      } catch (err) {
        if (signal.aborted) return;
        if (!broken) {
          this.opts.log.warn({ err: String(err) }, "Docker events stream broken; resubscribing");
          this.dockerReachable = false;
          this.sendHeartbeatNow();
        }
        broken = true;
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
  }

  /** Per container, events are handled in order (an inspect must not overtake a later one). */
  private onRuntimeEvent(e: RuntimeEvent): void {
    const prev = this.eventChains.get(e.containerId) ?? Promise.resolve();
    const next = prev.then(() => this.reportEvent(e)).catch((err: unknown) => {
      this.opts.log.warn({ container: e.containerId, err: String(err) }, "could not report container event");
    });
    this.eventChains.set(e.containerId, next);
    void next.then(() => {
      if (this.eventChains.get(e.containerId) === next) this.eventChains.delete(e.containerId);
    });
  }

  private async reportEvent(e: RuntimeEvent): Promise<void> {
    const info = e.action === "destroy" ? undefined : await this.opts.runtime.inspect(e.containerId);
    const removed = info === undefined;
    this.send({
      case: "containerEvent",
      value: {
        action: e.action,
        removed,
        time: timestampFromMs(e.timeMs || Date.now()),
        container: info ?? create(ContainerInfoSchema, { id: e.containerId, labels: e.labels, state: "removed" }),
      },
    });
  }
}
