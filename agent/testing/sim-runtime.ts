import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { randomBytes } from "node:crypto";
import { ContainerInfoSchema, NetworkInfoSchema, type ContainerInfo, type NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";
import type { PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { RuntimeError, type ContainerRuntime, type CreateContainerSpec, type LogOptions, type NetworkAttachment, type NetworkIdentity, type RuntimeEvent } from "../src/runtime/container-runtime.js";
import { LABEL_SERVER } from "../src/runtime/docker-runtime.js";
import type { LogFrame } from "../src/runtime/log-demux.js";
import { LABEL_PROJECT } from "../src/runtime/project-network.js";

/** How long each engine call takes, in ms (0: answered on the next microtask). */
export interface SimLatencies {
  create: number;
  start: number;
  stop: number;
  kill: number;
  remove: number;
  pause: number;
  unpause: number;
  inspect: number;
  list: number;
  pull: number;
}

/**
 * Roughly what a local dockerd takes for a small image on an idle machine
 * (create 30 ms, start 50 ms, stop of a process that exits on SIGTERM 20 ms).
 */
export const DOCKER_LIKE_LATENCIES: SimLatencies = {
  create: 30,
  start: 50,
  stop: 20,
  kill: 10,
  remove: 20,
  pause: 10,
  unpause: 10,
  inspect: 0,
  list: 0,
  pull: 500,
};

export interface SimRuntimeOptions {
  latencies?: Partial<SimLatencies>;
  /** Images present from the start; omitted: every image is present (pulls never happen). */
  images?: Iterable<string>;
  /** Reported as the engine version. */
  version?: string;
  now?: () => number;
}

type SimState = "created" | "running" | "paused" | "exited";

interface SimContainer {
  id: string;
  name: string;
  image: string;
  command: string[];
  env: Record<string, string>;
  labels: Record<string, string>;
  ports: PortMapping[];
  mounts: string[];
  /** Names of the networks it is attached to. */
  networks: string[];
  state: SimState;
  exitCode: number;
  createdMs: number;
  startedMs: number;
  finishedMs: number;
}

interface SimNetwork {
  id: string;
  name: string;
  labels: Record<string, string>;
  createdMs: number;
}

/** What a container looks like when `seed` puts it on the simulated host. */
export interface SeedContainer {
  name: string;
  image: string;
  labels: Record<string, string>;
  state?: SimState;
  exitCode?: number;
  command?: string[];
  env?: Record<string, string>;
  ports?: PortMapping[];
  mounts?: string[];
  networks?: string[];
}

/**
 * An in-memory container engine behind the agent's `ContainerRuntime`, for
 * load tests only (behaviour is tested against Docker): thousands of
 * simulated hosts fit in one process. Calls take `latencies` (setTimeout),
 * state changes produce the events Docker emits for them, in Docker's order
 * (`docker stop`: kill, die, stop; `rm -f` of a running one: kill, die,
 * destroy), delivered asynchronously like an events stream.
 *
 * The `simulate*` methods are what happens on a host outside berth: a
 * process exiting by itself, an operator's `docker stop` or `docker rm`.
 */
export class SimRuntime implements ContainerRuntime {
  private readonly containers = new Map<string, SimContainer>();
  private readonly byName = new Map<string, string>();
  /** Networks by name (no traffic is simulated: only which containers are attached). */
  private readonly networks = new Map<string, SimNetwork>();
  private readonly subscribers = new Set<{ onEvent: (e: RuntimeEvent) => void; fail: (err: Error) => void }>();
  private readonly latencies: SimLatencies;
  private readonly images: Set<string> | undefined;
  private readonly now: () => number;
  private readonly engineVersion: string;
  private reachable = true;

  constructor(opts: SimRuntimeOptions = {}) {
    this.latencies = { ...DOCKER_LIKE_LATENCIES, ...opts.latencies };
    this.images = opts.images ? new Set(opts.images) : undefined;
    this.now = opts.now ?? Date.now;
    this.engineVersion = opts.version ?? "sim-27.0.0";
  }

  /** Number of containers on this simulated host. */
  get size(): number {
    return this.containers.size;
  }

  async version(): Promise<string> {
    await this.delay(0);
    return this.engineVersion;
  }

  async acceptsConnections(): Promise<boolean> {
    return this.reachable;
  }

  async list(serverId?: string): Promise<ContainerInfo[]> {
    await this.delay(this.latencies.list);
    const out: ContainerInfo[] = [];
    for (const c of this.containers.values()) {
      const sid = c.labels[LABEL_SERVER];
      if (sid === undefined || (serverId !== undefined && sid !== serverId)) continue;
      out.push(toInfo(c));
    }
    return out;
  }

  async inspect(id: string): Promise<ContainerInfo | undefined> {
    await this.delay(this.latencies.inspect);
    const c = this.find(id);
    return c && toInfo(c);
  }

  async imageExists(image: string): Promise<boolean> {
    await this.delay(0);
    return this.images === undefined || this.images.has(image);
  }

  async pull(image: string, onProgress: (line: string) => void): Promise<void> {
    onProgress(`${image} Pulling from sim`);
    await this.delay(this.latencies.pull);
    this.images?.add(image);
    onProgress(`${image} Pull complete`);
  }

  async create(spec: CreateContainerSpec): Promise<string> {
    await this.delay(this.latencies.create);
    if (this.byName.has(spec.name)) {
      throw new RuntimeError("CreateFailed", `creating container ${spec.name}: Conflict. The container name "/${spec.name}" is already in use`);
    }
    if (!(await this.imageExists(spec.image))) throw new RuntimeError("CreateFailed", `creating container ${spec.name}: No such image: ${spec.image}`);
    if (spec.network && !this.networks.has(spec.network.name)) throw new RuntimeError("CreateFailed", `creating container ${spec.name}: network ${spec.network.name} not found`);
    const c: SimContainer = {
      id: randomBytes(32).toString("hex"),
      name: spec.name,
      image: spec.image,
      command: [...spec.command],
      env: { ...spec.env },
      labels: { ...spec.labels },
      ports: [...spec.ports],
      mounts: [`${spec.dataDir}:${spec.mountPath}`],
      networks: [spec.network?.name ?? "bridge"],
      state: "created",
      exitCode: 0,
      createdMs: this.now(),
      startedMs: 0,
      finishedMs: 0,
    };
    this.add(c);
    this.emit(c, "create");
    return c.id;
  }

  async start(id: string): Promise<void> {
    await this.delay(this.latencies.start);
    const c = this.mustFind(id, "StartFailed");
    if (c.state === "running") return; // Docker answers 304
    if (c.state === "paused") throw new RuntimeError("StartFailed", "cannot start a paused container, try unpause instead");
    c.state = "running";
    c.exitCode = 0;
    c.startedMs = this.now();
    this.emit(c, "start");
  }

  async stop(id: string, _timeoutSeconds: number): Promise<void> {
    await this.delay(this.latencies.stop);
    const c = this.mustFind(id, "StopFailed");
    if (c.state !== "running" && c.state !== "paused") return; // Docker answers 304
    this.emit(c, "kill");
    this.exit(c, 143);
    this.emit(c, "stop");
  }

  async kill(id: string): Promise<void> {
    await this.delay(this.latencies.kill);
    const c = this.mustFind(id, "KillFailed");
    if (c.state !== "running" && c.state !== "paused") return; // Docker answers 409: not running
    this.emit(c, "kill");
    this.exit(c, 137);
  }

  async pause(id: string): Promise<void> {
    await this.delay(this.latencies.pause);
    const c = this.mustFind(id, "PauseFailed");
    if (c.state !== "running") throw new RuntimeError("PauseFailed", `container ${id.slice(0, 12)} is not running`);
    c.state = "paused";
    this.emit(c, "pause");
  }

  async unpause(id: string): Promise<void> {
    await this.delay(this.latencies.unpause);
    const c = this.mustFind(id, "UnpauseFailed");
    if (c.state !== "paused") throw new RuntimeError("UnpauseFailed", `container ${id.slice(0, 12)} is not paused`);
    c.state = "running";
    this.emit(c, "unpause");
  }

  async remove(id: string): Promise<void> {
    await this.delay(this.latencies.remove);
    const c = this.find(id);
    if (!c) return; // Docker answers 404
    this.destroy(c);
  }

  async subscribe(onEvent: (e: RuntimeEvent) => void, signal: AbortSignal): Promise<{ closed: Promise<void> }> {
    await this.delay(0);
    if (!this.reachable) throw new RuntimeError("DockerUnreachable", "docker events: the simulated engine is down");
    const closed = new Promise<void>((resolve, reject) => {
      const sub = {
        onEvent,
        fail: (err: Error) => {
          this.subscribers.delete(sub);
          reject(err);
        },
      };
      this.subscribers.add(sub);
      signal.addEventListener(
        "abort",
        () => {
          this.subscribers.delete(sub);
          resolve();
        },
        { once: true },
      );
    });
    return { closed };
  }

  /** No output is simulated: the log ends at once (with `follow`, when the container stops or `signal` aborts). */
  async logs(id: string, opts: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
    const c = this.mustFind(id, "LogsFailed");
    const isRunning = () => c.state === "running" || c.state === "paused";
    return (async function* () {
      while (opts.follow && isRunning() && !signal.aborted) await new Promise((r) => setTimeout(r, 100));
    })();
  }

  async ensureNetwork(name: string, labels: Record<string, string>): Promise<NetworkIdentity> {
    await this.delay(this.latencies.create);
    if (!this.networks.has(name)) this.networks.set(name, { id: randomBytes(32).toString("hex"), name, labels: { ...labels }, createdMs: this.now() });
    // Read back like Docker's network inspect, without counting containers.
    await this.delay(this.latencies.inspect);
    const n = this.networks.get(name)!;
    return { id: n.id, name: n.name, labels: { ...n.labels } };
  }

  async inspectNetwork(nameOrId: string): Promise<NetworkInfo | undefined> {
    await this.delay(this.latencies.inspect);
    const n = this.findNetwork(nameOrId);
    if (!n) return undefined;
    let containers = 0;
    for (const c of this.containers.values()) if (c.networks.includes(n.name)) containers++;
    return networkInfo(n, containers);
  }

  /** Like Docker: refused while a running container is attached; stopped ones do not hold it. */
  async removeNetwork(nameOrId: string): Promise<void> {
    await this.delay(this.latencies.remove);
    const n = this.findNetwork(nameOrId);
    if (!n) return;
    for (const c of this.containers.values()) {
      if (c.networks.includes(n.name) && (c.state === "running" || c.state === "paused")) {
        throw new RuntimeError("NetworkInUse", `removing network ${n.name}: error while removing network: network ${n.name} has active endpoints`);
      }
    }
    this.networks.delete(n.name);
  }

  async listNetworks(max: number): Promise<{ networks: NetworkInfo[]; omitted: number }> {
    await this.delay(this.latencies.list);
    const project = [...this.networks.values()].filter((n) => n.labels[LABEL_PROJECT] !== undefined).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // One pass over the containers for every count, like DockerRuntime's one listing.
    const counts = new Map<string, number>();
    for (const c of this.containers.values()) for (const name of new Set(c.networks)) counts.set(name, (counts.get(name) ?? 0) + 1);
    return { networks: project.slice(0, max).map((n) => networkInfo(n, counts.get(n.name) ?? 0)), omitted: Math.max(0, project.length - max) };
  }

  async attachOnly(containerId: string, network: NetworkAttachment): Promise<void> {
    await this.delay(this.latencies.inspect);
    const c = this.mustFind(containerId, "ContainerMissing");
    if (!this.networks.has(network.name)) throw new RuntimeError("NetworkFailed", `network ${network.name} not found`);
    c.networks = [network.name];
  }

  // --- outside berth ------------------------------------------------------------

  /** Puts a container on the host as if it had been there before the agent started (no latency, no event). */
  seed(s: SeedContainer): string {
    const at = this.now();
    const state = s.state ?? "running";
    const c: SimContainer = {
      id: randomBytes(32).toString("hex"),
      name: s.name,
      image: s.image,
      command: s.command ?? [],
      env: s.env ?? {},
      labels: { ...s.labels },
      ports: s.ports ?? [],
      mounts: s.mounts ?? [],
      networks: s.networks ?? ["bridge"],
      state,
      exitCode: s.exitCode ?? 0,
      createdMs: at,
      startedMs: state === "created" ? 0 : at,
      finishedMs: state === "exited" ? at : 0,
    };
    this.add(c);
    return c.id;
  }

  /** The container's process exits by itself with `exitCode` (emits `die`; also for one already exited). */
  simulateExit(id: string, exitCode: number): void {
    const c = this.mustFind(id, "NoSuchContainer");
    this.exit(c, exitCode);
  }

  /** `docker stop` by someone else: kill, die, stop. */
  simulateExternalStop(id: string): void {
    const c = this.mustFind(id, "NoSuchContainer");
    if (c.state !== "running" && c.state !== "paused") return;
    this.emit(c, "kill");
    this.exit(c, 143);
    this.emit(c, "stop");
  }

  /** `docker rm -f` by someone else. */
  simulateExternalRemove(id: string): void {
    const c = this.find(id);
    if (c) this.destroy(c);
  }

  /**
   * The engine stops answering (every call fails with DockerUnreachable and
   * event streams break) or comes back. Containers are kept as they are.
   */
  setReachable(reachable: boolean): void {
    this.reachable = reachable;
    if (!reachable) {
      for (const s of [...this.subscribers]) s.fail(new Error("simulated engine went away"));
    }
  }

  // --- internals ----------------------------------------------------------------

  private add(c: SimContainer): void {
    this.containers.set(c.id, c);
    this.byName.set(c.name, c.id);
  }

  private destroy(c: SimContainer): void {
    if (c.state === "running" || c.state === "paused") {
      this.emit(c, "kill");
      this.exit(c, 137);
    }
    this.containers.delete(c.id);
    this.byName.delete(c.name);
    this.emit(c, "destroy");
  }

  private exit(c: SimContainer, exitCode: number): void {
    c.state = "exited";
    c.exitCode = exitCode;
    c.finishedMs = this.now();
    this.emit(c, "die");
  }

  /** Docker accepts a full id, a unique id prefix, or a name. */
  private find(idOrName: string): SimContainer | undefined {
    const byId = this.containers.get(idOrName) ?? this.containers.get(this.byName.get(idOrName) ?? "");
    if (byId || idOrName.length < 12) return byId;
    for (const c of this.containers.values()) if (c.id.startsWith(idOrName)) return c;
    return undefined;
  }

  private findNetwork(nameOrId: string): SimNetwork | undefined {
    const byName = this.networks.get(nameOrId);
    if (byName) return byName;
    for (const n of this.networks.values()) if (n.id === nameOrId || (nameOrId.length >= 12 && n.id.startsWith(nameOrId))) return n;
    return undefined;
  }

  private mustFind(id: string, reason: string): SimContainer {
    const c = this.find(id);
    if (!c) throw new RuntimeError(reason, `No such container: ${id}`);
    return c;
  }

  /** Events reach subscribers on a later turn of the event loop, in order, like a stream would deliver them. */
  private emit(c: SimContainer, action: string): void {
    if (this.subscribers.size === 0) return;
    // Docker's event attributes: the labels, the name and image, and a die's exit code.
    const labels = { ...c.labels, name: c.name, image: c.image, ...(action === "die" ? { exitCode: String(c.exitCode) } : {}) };
    const e: RuntimeEvent = { action, containerId: c.id, labels, timeMs: this.now() };
    const subs = [...this.subscribers];
    setImmediate(() => {
      for (const s of subs) if (this.subscribers.has(s)) s.onEvent(e);
    });
  }

  private async delay(ms: number): Promise<void> {
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    if (!this.reachable) throw new RuntimeError("DockerUnreachable", "the simulated engine is down");
  }
}

function toInfo(c: SimContainer): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: c.id,
    name: c.name,
    image: c.image,
    state: c.state,
    labels: { ...c.labels },
    exitCode: c.exitCode,
    ports: c.ports,
    mounts: c.mounts,
    networks: [...c.networks],
    command: c.command,
    env: c.env,
    createdTime: timestampFromMs(c.createdMs),
    ...(c.startedMs ? { startedTime: timestampFromMs(c.startedMs) } : {}),
    ...(c.finishedMs ? { finishedTime: timestampFromMs(c.finishedMs) } : {}),
  });
}

function networkInfo(n: SimNetwork, containers: number): NetworkInfo {
  return create(NetworkInfoSchema, { id: n.id, name: n.name, labels: { ...n.labels }, containers, createdTime: timestampFromMs(n.createdMs) });
}
