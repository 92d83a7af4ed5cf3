import type { ContainerInfo, NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { RuntimeError, type ContainerRuntime, type CreateContainerSpec, type ExecRun, type LogOptions, type NetworkAttachment, type NetworkIdentity, type RuntimeEvent } from "./container-runtime.js";
import type { HostLimits } from "./limits.js";
import type { LogFrame } from "./log-demux.js";
import { KeyedQueue } from "../keyed-queue.js";

export interface LockedRuntimeOptions {
  /**
   * A stop still running this long after its own SIGKILL deadline
   * (`timeoutSeconds`) is overtaken by a kill: the container or the engine
   * is hung, and waiting in line would block every later operation.
   */
  stopGraceMs?: number;
  /** Told when a stop was escalated to a kill. */
  onEscalate?: (containerId: string) => void;
}

/**
 * One Docker operation per container at a time, in arrival order (like
 * wings' power lock): create (keyed by name), start, stop, pause, unpause and
 * remove of one container queue behind each other, so a stop can never race
 * a start of the same container. Reads (list, inspect, logs, events) are not
 * queued. `kill` never waits in line: it is how a stop stuck on a hung
 * container is overtaken, and `stop` does it by itself past its grace period.
 */
export class LockedRuntime implements ContainerRuntime {
  private readonly queue = new KeyedQueue();
  private readonly stopGraceMs: number;

  constructor(
    private readonly inner: ContainerRuntime,
    private readonly opts: LockedRuntimeOptions = {},
  ) {
    this.stopGraceMs = opts.stopGraceMs ?? 10_000;
  }

  /** Keys with an operation running or queued (for tests and diagnostics). */
  get busy(): string[] {
    return this.queue.keys;
  }

  version(timeoutMs?: number): Promise<string> {
    return this.inner.version(timeoutMs);
  }

  acceptsConnections(timeoutMs?: number): Promise<boolean> {
    return this.inner.acceptsConnections(timeoutMs);
  }

  list(serverId?: string): Promise<ContainerInfo[]> {
    return this.inner.list(serverId);
  }

  inspect(id: string): Promise<ContainerInfo | undefined> {
    return this.inner.inspect(id);
  }

  initPid(id: string): Promise<number | undefined> {
    return this.inner.initPid ? this.inner.initPid(id) : Promise.resolve(undefined);
  }

  listUnmanaged(max: number): Promise<{ containers: ContainerInfo[]; omitted: number }> {
    return this.inner.listUnmanaged ? this.inner.listUnmanaged(max) : Promise.resolve({ containers: [], omitted: 0 });
  }

  inspectForAdoption(id: string): Promise<ContainerInfo | undefined> {
    if (!this.inner.inspectForAdoption) return Promise.reject(new RuntimeError("Unsupported", "this container runtime cannot inspect containers for adoption"));
    return this.inner.inspectForAdoption(id);
  }

  imageExists(image: string): Promise<boolean> {
    return this.inner.imageExists(image);
  }

  /** One pull per image at a time: a second caller waits and then finds it present. */
  pull(image: string, onProgress: (line: string) => void): Promise<void> {
    return this.queue.run(`image:${image}`, () => this.inner.pull(image, onProgress));
  }

  create(spec: CreateContainerSpec): Promise<string> {
    return this.queue.run(`name:${spec.name}`, () => this.inner.create(spec));
  }

  start(id: string): Promise<void> {
    return this.queue.run(id, () => this.inner.start(id));
  }

  stop(id: string, timeoutSeconds: number): Promise<void> {
    return this.queue.run(id, async () => {
      const stopping = this.inner.stop(id, timeoutSeconds);
      let timer: NodeJS.Timeout | undefined;
      const overdue = new Promise<"overdue">((resolve) => {
        timer = setTimeout(() => resolve("overdue"), timeoutSeconds * 1000 + this.stopGraceMs);
      });
      try {
        if ((await Promise.race([stopping, overdue])) !== "overdue") return;
      } finally {
        clearTimeout(timer);
      }
      this.opts.onEscalate?.(id);
      // The stop's own call is still bounded by its timeout; the kill usually ends it at once.
      await this.inner.kill(id);
      await stopping;
    });
  }

  /** Not queued: overtakes whatever is running or waiting for this container. */
  kill(id: string): Promise<void> {
    return this.inner.kill(id);
  }

  pause(id: string): Promise<void> {
    return this.queue.run(id, () => this.inner.pause(id));
  }

  unpause(id: string): Promise<void> {
    return this.queue.run(id, () => this.inner.unpause(id));
  }

  remove(id: string): Promise<void> {
    return this.queue.run(id, () => this.inner.remove(id));
  }

  /** Network calls are not queued here: the executor orders them per project network. */
  ensureNetwork(name: string, labels: Record<string, string>): Promise<NetworkIdentity> {
    return this.inner.ensureNetwork(name, labels);
  }

  inspectNetwork(nameOrId: string): Promise<NetworkInfo | undefined> {
    return this.inner.inspectNetwork(nameOrId);
  }

  removeNetwork(nameOrId: string): Promise<void> {
    return this.inner.removeNetwork(nameOrId);
  }

  listNetworks(max: number): Promise<{ networks: NetworkInfo[]; omitted: number }> {
    return this.inner.listNetworks(max);
  }

  /** In the container's queue: a network change never interleaves with its start or stop. */
  attachOnly(containerId: string, network: NetworkAttachment): Promise<void> {
    return this.queue.run(containerId, () => this.inner.attachOnly(containerId, network));
  }

  updateLimits(containerId: string, update: HostLimits): Promise<void> {
    const inner = this.inner;
    if (!inner.updateLimits) return Promise.reject(new RuntimeError("Unsupported", "this container runtime cannot change limits"));
    return this.queue.run(containerId, () => inner.updateLimits!(containerId, update));
  }

  subscribe(onEvent: (e: RuntimeEvent) => void, signal: AbortSignal): Promise<{ closed: Promise<void> }> {
    return this.inner.subscribe(onEvent, signal);
  }

  /** Not queued: a console line never waits behind a stop of the same container. */
  writeStdin(id: string, data: Uint8Array): Promise<void> {
    if (!this.inner.writeStdin) return Promise.reject(new RuntimeError("Unsupported", "this runtime has no consoles"));
    return this.inner.writeStdin(id, data);
  }

  /** Not queued, like reads: a one-off command never waits behind a stop. */
  exec(id: string, argv: string[], stdin: Uint8Array | undefined, signal: AbortSignal): Promise<ExecRun> {
    if (!this.inner.exec) return Promise.reject(new RuntimeError("Unsupported", "this runtime cannot run commands in containers"));
    return this.inner.exec(id, argv, stdin, signal);
  }

  logs(id: string, opts: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
    return this.inner.logs(id, opts, signal);
  }
}
