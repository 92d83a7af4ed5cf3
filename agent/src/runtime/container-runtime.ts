import type { ContainerInfo, NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";
import type { ResourceLimits } from "@berth/proto/berth/v1/server_pb.js";
import type { HostLimits } from "./limits.js";
import type { PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import type { LogFrame } from "./log-demux.js";

/**
 * Everything the agent needs to create a server's container; nothing more can
 * be expressed. The runtime turns it into a full engine config itself (no
 * privileges, no added capabilities, no host network/pid/ipc, one bind mount),
 * so no command from the manager can ask for more.
 */
export interface CreateContainerSpec {
  name: string;
  image: string;
  command: string[];
  env: Record<string, string>;
  labels: Record<string, string>;
  ports: PortMapping[];
  /** Host directory (under the data root) bind-mounted at `mountPath`. */
  dataDir: string;
  mountPath: string;
  /** Dropped capabilities to give back (capabilities.ts ADDABLE_CAPABILITIES only). */
  capAdd?: string[];
  /** json-file rotation; 0 or absent means 10 MiB and 3 files. */
  logMaxSizeBytes?: number;
  logMaxFiles?: number;
  /**
   * The project network the container joins, alone (not Docker's default
   * bridge), reachable there by `aliases`. Absent: Docker's default bridge.
   */
  network?: NetworkAttachment;
  /** Keep stdin open for writeStdin (a console): OpenStdin, not StdinOnce. */
  openStdin?: boolean;
  /** Resource limits (limits.ts); absent: none. */
  resources?: ResourceLimits;
  /**
   * The program and its first arguments instead of the image's entrypoint
   * (an install script's `sh -c <script>`); the image's command is then not
   * used either. Absent: the image's.
   */
  entrypoint?: string[];
  /** Docker's StopSignal (STOP_SIGNALS in docker-runtime.ts only), what `stop` sends first; absent: SIGTERM. */
  stopSignal?: string;
}

/** A container's place on a project network. */
export interface NetworkAttachment {
  /** The network's name (it must exist; see ContainerRuntime.ensureNetwork). */
  name: string;
  /** DNS names the project's other containers reach this one by. */
  aliases: string[];
}

/** A network as ensureNetwork answers it: which one and whose, without counting what is attached. */
export type NetworkIdentity = Pick<NetworkInfo, "id" | "name" | "labels">;

/** A container lifecycle event from the engine. */
export interface RuntimeEvent {
  action: string;
  containerId: string;
  /** Labels as carried by the event (all that is left after destroy). */
  labels: Record<string, string>;
  timeMs: number;
}

/** Failure with a CamelCase reason the manager shows as the server's failure reason. */
export class RuntimeError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "RuntimeError";
  }
}

/** Options of a log read. */
export interface LogOptions {
  /** Keep streaming new output until the container stops or the signal aborts. */
  follow: boolean;
  /** Start with this many lines from the end; 0 means the whole log. */
  tailLines: number;
  /** Only output Docker received at or after this time (epoch seconds, fractions allowed). */
  sinceSeconds?: number;
}

/**
 * The agent's view of a container engine. The Docker implementation is the
 * real one; an in-memory one serves load tests. Every call has a timeout.
 * Implementations do not serialize calls: `LockedRuntime` wraps one to allow
 * one operation per container at a time.
 */
export interface ContainerRuntime {
  /** Engine version, e.g. "26.1.5"; throws when unreachable or slower than `timeoutMs`. */
  version(timeoutMs?: number): Promise<string>;
  /**
   * Whether the engine accepts a new connection right now. A dockerd that is
   * shutting down closes its socket first and then stops its containers,
   * while connections already open (the event stream, pooled keep-alive
   * sockets) keep working for a moment: only a fresh connection tells an
   * engine shutdown from an operator's `docker stop`.
   */
  acceptsConnections(timeoutMs?: number): Promise<boolean>;
  /** Every container carrying a berth server label, or only `serverId`'s. */
  list(serverId?: string): Promise<ContainerInfo[]>;
  /**
   * Containers without a berth server label (OrphanService's unmanaged kind),
   * at most `max`, from one listing call (no per-container inspect), without
   * environment or command. Optional: a runtime without it reports none.
   */
  listUnmanaged?(max: number): Promise<{ containers: ContainerInfo[]; omitted: number }>;
  /**
   * One container as AdoptOrphan needs it: environment and command without
   * the image's defaults, and `unsupported` naming what a berth spec cannot
   * express. Undefined if it does not exist. Optional.
   */
  inspectForAdoption?(id: string): Promise<ContainerInfo | undefined>;
  /** One container, or undefined if it does not exist. */
  inspect(id: string): Promise<ContainerInfo | undefined>;
  /**
   * The host pid of a running container's init process (Docker's State.Pid),
   * for the usage sampler; undefined when it does not run. Optional: a runtime
   * without it reports no container usage.
   */
  initPid?(id: string): Promise<number | undefined>;
  imageExists(image: string): Promise<boolean>;
  /** Pulls an image; `onProgress` gets human-readable status lines. */
  pull(image: string, onProgress: (line: string) => void): Promise<void>;
  create(spec: CreateContainerSpec): Promise<string>;
  start(id: string): Promise<void>;
  /** The container's stop signal (SIGTERM unless made with another), then SIGKILL after `timeoutSeconds`. */
  stop(id: string, timeoutSeconds: number): Promise<void>;
  kill(id: string): Promise<void>;
  pause(id: string): Promise<void>;
  unpause(id: string): Promise<void>;
  /** Force-removes the container; volumes and bind-mounted data are untouched. */
  remove(id: string): Promise<void>;
  /**
   * Subscribes to container events. Resolves once the subscription is live;
   * `closed` then settles when `signal` aborts (resolves) or the stream breaks (rejects).
   */
  subscribe(onEvent: (e: RuntimeEvent) => void, signal: AbortSignal): Promise<{ closed: Promise<void> }>;
  /**
   * Creates the bridge network `name` (not internal: published ports work)
   * with `labels`, unless a network of that name exists. Answers the network
   * as it is then (an existing one with its own labels: the caller checks
   * they are berth's), without counting its containers.
   */
  ensureNetwork(name: string, labels: Record<string, string>): Promise<NetworkIdentity>;
  /** One network with its attached containers counted (running or not), or undefined. */
  inspectNetwork(nameOrId: string): Promise<NetworkInfo | undefined>;
  /** Removes a network; one that does not exist is done. */
  removeNetwork(nameOrId: string): Promise<void>;
  /** Networks labelled `berth.project` (of any manager), at most `max`. */
  listNetworks(max: number): Promise<{ networks: NetworkInfo[]; omitted: number }>;
  /**
   * Puts an existing container on `network` (with its aliases) and takes it
   * off every other network, without stopping it: how a container made
   * before project networks moves onto its project's. Idempotent.
   */
  attachOnly(containerId: string, network: NetworkAttachment): Promise<void>;
  /**
   * Changes a container's resource limits in place (docker update), running
   * or not. Optional: a runtime without it leaves limits as they were made.
   */
  updateLimits?(containerId: string, update: HostLimits): Promise<void>;
  /**
   * A container's stdout/stderr. Resolves once the log stream is open; the
   * iterable ends when the output does (with `follow`, when the container
   * stops) and stops early when `signal` aborts.
   */
  logs(id: string, opts: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>>;
  /**
   * Writes `data` to the stdin of a running container made with `openStdin`
   * (a console), through a short attach; the container's stdin stays open.
   * Optional: a runtime without it has no consoles.
   */
  writeStdin?(id: string, data: Uint8Array): Promise<void>;
  /**
   * Runs `argv` in a running container (no TTY), `stdin` given then closed.
   * `output` is its stdout/stderr; after it ends, `exitCode()` answers. `kill()`
   * ends it (SIGKILL to its process). Optional: a runtime without it has no exec.
   */
  exec?(id: string, argv: string[], stdin: Uint8Array | undefined, signal: AbortSignal): Promise<ExecRun>;
}

/** A command started by ContainerRuntime.exec. */
export interface ExecRun {
  output: AsyncIterable<LogFrame>;
  exitCode(): Promise<number>;
  kill(): Promise<void>;
}
