import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import Docker from "dockerode";
import { connect } from "node:net";
import { ContainerInfoSchema, MountPointSchema, NetworkInfoSchema, type ContainerInfo, type NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { PortMappingSchema, Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { RuntimeError, type ContainerRuntime, type CreateContainerSpec, type ExecRun, type LogOptions, type NetworkAttachment, type NetworkIdentity, type RuntimeEvent } from "./container-runtime.js";
import { adoptionView, imageDefaults, summaryInfo } from "./adoption-view.js";
import { LogDemuxer, mergeFrames, type LogFrame } from "./log-demux.js";
import { isProjectNetworkName, LABEL_PROJECT } from "./project-network.js";
import { capabilitiesToDrop } from "./capabilities.js";
import { RotationDuplicates } from "./log-dedup.js";
import { giveToContainerRoot, remappedRoot } from "./userns.js";
import { hostConfigLimits, limitsOf, type HostLimits } from "./limits.js";

export const LABEL_SERVER = "berth.server";
/** "install" on a server's install container (RUN_INSTALL), which is not the server's own container. */
export const LABEL_ROLE = "berth.role";
export const ROLE_INSTALL = "install";

/** Events that can change what berth shows; exec_*, attach, resize, ... are ignored. */
const INTERESTING = new Set(["create", "start", "restart", "die", "kill", "stop", "pause", "unpause", "oom", "destroy", "rename", "update"]);

const CALL_TIMEOUT_MS = 30_000;
const PULL_TIMEOUT_MS = 10 * 60_000;
/** Opening a log stream (not reading it: a followed log stays open as long as the container runs). */
const LOGS_OPEN_TIMEOUT_MS = 15_000;
/** Lines read together from Docker are relayed as one frame of up to this size. */
const MERGED_FRAME_BYTES = 64 * 1024;

/**
 * Docker through dockerode; every call bounded by a timeout, after which the
 * HTTP request is aborted (a hung engine does not pile up open requests).
 */
export class DockerRuntime implements ContainerRuntime {
  private readonly docker: Docker;
  private readonly socketPath: string;
  /** The engine's `docker info`, asked once per engine connection (see shareDataDir). */
  private engineInfo: Promise<EngineInfo> | undefined;

  constructor(opts: { socketPath?: string } = {}) {
    this.docker = opts.socketPath ? new Docker({ socketPath: opts.socketPath }) : new Docker();
    this.socketPath = opts.socketPath ?? "/var/run/docker.sock";
  }

  acceptsConnections(timeoutMs = 2_000): Promise<boolean> {
    return new Promise((resolve) => {
      const s = connect(this.socketPath);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        s.destroy();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      s.once("connect", () => done(true));
      s.once("error", () => done(false));
    });
  }

  async version(timeoutMs = CALL_TIMEOUT_MS): Promise<string> {
    const v = await timed("docker version", (abortSignal) => (this.docker.version as (o: object) => Promise<Docker.DockerVersion>).call(this.docker, { abortSignal }), timeoutMs);
    return v.Version;
  }

  async list(serverId?: string): Promise<ContainerInfo[]> {
    const label = serverId ? `${LABEL_SERVER}=${serverId}` : LABEL_SERVER;
    const items = await timed("docker ps", (abortSignal) => this.docker.listContainers({ all: true, filters: { label: [label] }, abortSignal } as object));
    const out: ContainerInfo[] = [];
    for (const item of items) {
      const info = await this.inspect(item.Id);
      if (info) out.push(info);
    }
    return out;
  }

  async listUnmanaged(max: number): Promise<{ containers: ContainerInfo[]; omitted: number }> {
    const items = await timed("docker ps", (abortSignal) => this.docker.listContainers({ all: true, abortSignal } as object));
    // Docker cannot filter on a missing label: one unfiltered listing, no inspects.
    const plain = items.filter((i) => !(i.Labels ?? {})[LABEL_SERVER]);
    return { containers: plain.slice(0, max).map(summaryInfo), omitted: Math.max(0, plain.length - max) };
  }

  async inspectForAdoption(id: string): Promise<ContainerInfo | undefined> {
    let c: Docker.ContainerInspectInfo;
    try {
      c = await timed("docker inspect", (abortSignal) => this.docker.getContainer(id).inspect({ abortSignal } as object));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
    // The image the container was created from (by id: its tag may have moved since).
    const image = await timed("docker image inspect", (abortSignal) => this.docker.getImage(c.Image).inspect({ abortSignal } as object)).catch(() => undefined);
    return create(ContainerInfoSchema, { ...toInfo(c), ...adoptionView(c, imageDefaults(image)) });
  }

  async inspect(id: string): Promise<ContainerInfo | undefined> {
    try {
      const c = await timed("docker inspect", (abortSignal) => this.docker.getContainer(id).inspect({ abortSignal } as object));
      return toInfo(c);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async initPid(id: string): Promise<number | undefined> {
    try {
      const c = await timed("docker inspect", (abortSignal) => this.docker.getContainer(id).inspect({ abortSignal } as object));
      return c.State.Running && c.State.Pid > 0 ? c.State.Pid : undefined;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async imageExists(image: string): Promise<boolean> {
    try {
      await timed("docker image inspect", (abortSignal) => this.docker.getImage(image).inspect({ abortSignal } as object));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw err;
    }
  }

  async pull(image: string, onProgress: (line: string) => void): Promise<void> {
    try {
      await timed(
        "docker pull",
        async (abortSignal) => {
          const stream = (await this.docker.pull(image, { abortSignal })) as NodeJS.ReadableStream;
          // Failures (unknown tag, denied, ...) arrive in-band as {error}, not as a stream error.
          const failed = await new Promise<string | undefined>((resolve, reject) => {
            let inBand: string | undefined;
            this.docker.modem.followProgress(
              stream,
              (err: Error | null) => (err ? reject(err) : resolve(inBand)),
              (e: { status?: string; progress?: string; id?: string; error?: string; errorDetail?: { message?: string } }) => {
                if (e.error || e.errorDetail) inBand ??= e.errorDetail?.message ?? e.error;
                else if (e.status) onProgress([e.id, e.status, e.progress].filter(Boolean).join(" "));
              },
            );
          });
          if (failed) throw new Error(failed);
        },
        PULL_TIMEOUT_MS,
      );
    } catch (err) {
      if (err instanceof RuntimeError && err.reason === "DockerUnreachable") throw err;
      throw new RuntimeError("ImagePullFailed", `pulling ${image}: ${messageOf(err)}`);
    }
  }

  async create(spec: CreateContainerSpec): Promise<string> {
    let config: Docker.ContainerCreateOptions;
    try {
      config = containerConfig(spec);
    } catch (err) {
      throw new RuntimeError("BadCommand", messageOf(err));
    }
    await this.shareDataDir(spec.dataDir);
    try {
      // The config goes in the body and only the name in the query: handed to createContainer
      // as a plain object, dockerode (docker-modem) writes every field into the URL too, and a
      // large environment then made the engine answer 431 (request header fields too large).
      const { name, ...body } = config;
      const c = await timed("docker create", (abortSignal) =>
        this.docker.createContainer({ _query: { name }, _body: body, abortSignal } as unknown as Docker.ContainerCreateOptions),
      );
      return c.id;
    } catch (err) {
      if (err instanceof RuntimeError) throw err;
      throw new RuntimeError("CreateFailed", `creating container ${spec.name}: ${messageOf(err)}`);
    }
  }

  /**
   * Under userns-remap the container's root is an unprivileged host uid that
   * cannot write a data directory the agent made as root: hand it over
   * (userns.ts). Asked of the engine once per engine connection: subscribe()
   * forgets the answer, so an engine restarted with or without remapping is
   * followed.
   */
  private async shareDataDir(dataDir: string): Promise<void> {
    const info = await this.info();
    try {
      const owner = remappedRoot(info);
      if (owner) await giveToContainerRoot(dataDir, owner);
    } catch (err) {
      throw new RuntimeError("CreateFailed", `giving ${dataDir} to the container's remapped root: ${messageOf(err)}`);
    }
  }

  /**
   * `docker info`, asked once and shared by concurrent creates until
   * subscribe() forgets it; a failed call is not kept (the next create asks again).
   */
  private info(): Promise<EngineInfo> {
    if (this.engineInfo) return this.engineInfo;
    const asking = timed("docker info", (abortSignal) => (this.docker.info as (o: object) => Promise<EngineInfo>).call(this.docker, { abortSignal }));
    this.engineInfo = asking;
    asking.catch(() => {
      if (this.engineInfo === asking) this.engineInfo = undefined;
    });
    return asking;
  }

  async start(id: string): Promise<void> {
    try {
      await timed("docker start", (abortSignal) => this.docker.getContainer(id).start({ abortSignal }));
    } catch (err) {
      if (statusOf(err) === 304) return; // already started
      if (err instanceof RuntimeError) throw err;
      const msg = messageOf(err);
      if (/port is already allocated|address already in use/i.test(msg)) throw new RuntimeError("PortConflict", msg);
      throw new RuntimeError("StartFailed", msg);
    }
  }

  async stop(id: string, timeoutSeconds: number): Promise<void> {
    try {
      await timed("docker stop", (abortSignal) => this.docker.getContainer(id).stop({ t: timeoutSeconds, abortSignal }), (timeoutSeconds + 30) * 1000);
    } catch (err) {
      if (statusOf(err) === 304) return; // already stopped
      if (err instanceof RuntimeError) throw err;
      throw new RuntimeError("StopFailed", messageOf(err));
    }
  }

  async kill(id: string): Promise<void> {
    try {
      await timed("docker kill", (abortSignal) => this.docker.getContainer(id).kill({ abortSignal }));
    } catch (err) {
      if (statusOf(err) === 409) return; // not running
      if (err instanceof RuntimeError) throw err;
      throw new RuntimeError("KillFailed", messageOf(err));
    }
  }

  async exec(id: string, argv: string[], stdin: Uint8Array | undefined, signal: AbortSignal): Promise<ExecRun> {
    const info = await this.inspect(id);
    if (!info) throw new RuntimeError("ContainerMissing", `container ${id.slice(0, 12)} no longer exists`);
    if (info.state !== "running") throw new RuntimeError("ContainerNotRunning", `the container is ${info.state}; start the server to run commands in it`);
    const withStdin = stdin !== undefined && stdin.length > 0;
    const ex = await timed("docker exec", (abortSignal) =>
      this.docker.getContainer(id).exec({ Cmd: argv, AttachStdout: true, AttachStderr: true, AttachStdin: withStdin, Tty: false, abortSignal }),
    ).catch((err: unknown) => {
      throw err instanceof RuntimeError ? err : new RuntimeError("ExecFailed", messageOf(err));
    });
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    const body = (await ex.start({ hijack: true, stdin: withStdin, Tty: false, abortSignal: ac.signal } as Docker.ExecStartOptions).catch((err: unknown) => {
      signal.removeEventListener("abort", onAbort);
      throw new RuntimeError("ExecFailed", messageOf(err));
    })) as NodeJS.ReadWriteStream;
    if (withStdin) {
      // The command reads it, then its end: half-close the hijacked connection's writing side.
      body.write(stdin);
      body.end();
    }
    const inspectExec = async () => (await ex.inspect()) as { ExitCode: number | null; Running: boolean; Pid: number };
    return {
      output: demuxed(body, signal, undefined, () => {
        signal.removeEventListener("abort", onAbort);
        ac.abort();
      }),
      exitCode: async () => {
        // Docker sets the exit code a moment after the output ends.
        for (let i = 0; i < 50; i++) {
          const r = await inspectExec();
          if (!r.Running && r.ExitCode !== null) return r.ExitCode;
          await new Promise((res) => setTimeout(res, 100));
        }
        throw new RuntimeError("ExecFailed", "the command's output ended but Docker did not report its exit code");
      },
      kill: async () => {
        // Docker has no API to end an exec: its process is killed on this host (the agent runs here, as root).
        const { Pid, Running } = await inspectExec();
        if (Running && Pid > 0) {
          try {
            process.kill(Pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
      },
    };
  }

  async writeStdin(id: string, data: Uint8Array): Promise<void> {
    const info = await this.inspect(id);
    if (!info) throw new RuntimeError("ContainerMissing", `container ${id.slice(0, 12)} no longer exists`);
    if (info.state !== "running") throw new RuntimeError("ContainerNotRunning", `the container is ${info.state}; start the server to use its console`);
    const raw = (await this.docker.getContainer(id).inspect()) as { Config?: { OpenStdin?: boolean } };
    if (!raw.Config?.OpenStdin) throw new RuntimeError("ConsoleClosed", "this container was made without a console (spec.console false when it was created); set console and restart or rebuild the server");
    await timed("docker attach", async (abortSignal) => {
      const stream = (await this.docker.getContainer(id).attach({ stream: true, stdin: true, stdout: false, stderr: false, hijack: true, abortSignal })) as NodeJS.ReadWriteStream & { destroy(): void };
      try {
        await new Promise<void>((resolve, reject) => {
          stream.once("error", reject);
          stream.write(data, (err) => (err ? reject(err) : resolve()));
        });
        // Our end of the attach, then Docker's (it has copied what it read by then); at most a second.
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 1_000);
          stream.once("close", () => (clearTimeout(t), resolve()));
          stream.end();
        });
      } finally {
        // Closing the attach does not close the container's stdin (StdinOnce is false).
        stream.destroy();
      }
    }).catch((err: unknown) => {
      throw err instanceof RuntimeError ? err : new RuntimeError("ConsoleWriteFailed", messageOf(err));
    });
  }

  async pause(id: string): Promise<void> {
    await timed("docker pause", (abortSignal) => this.docker.getContainer(id).pause({ abortSignal })).catch((err: unknown) => {
      throw err instanceof RuntimeError ? err : new RuntimeError("PauseFailed", messageOf(err));
    });
  }

  async unpause(id: string): Promise<void> {
    await timed("docker unpause", (abortSignal) => this.docker.getContainer(id).unpause({ abortSignal })).catch((err: unknown) => {
      throw err instanceof RuntimeError ? err : new RuntimeError("UnpauseFailed", messageOf(err));
    });
  }

  async remove(id: string): Promise<void> {
    try {
      await timed("docker rm", (abortSignal) => this.docker.getContainer(id).remove({ force: true, v: false, abortSignal }));
    } catch (err) {
      if (statusOf(err) === 404) return;
      if (statusOf(err) === 409 && /already in progress/.test(messageOf(err))) return;
      if (err instanceof RuntimeError) throw err;
      throw new RuntimeError("RemoveFailed", messageOf(err));
    }
  }

  async ensureNetwork(name: string, labels: Record<string, string>): Promise<NetworkIdentity> {
    const found = await this.rawNetwork(name);
    if (found) return networkIdentity(found);
    try {
      // A plain bridge, not internal: published ports and outbound traffic work as on
      // Docker's default bridge; with iptables Docker isolates bridge networks from each other.
      const body = { Name: name, Driver: "bridge", Internal: false, Attachable: false, CheckDuplicate: true, Labels: labels };
      await timed("docker network create", (abortSignal) => this.docker.createNetwork({ _query: {}, _body: body, abortSignal } as unknown as Docker.NetworkCreateOptions));
    } catch (err) {
      if (err instanceof RuntimeError) throw err;
      // 409: made meanwhile by someone else; inspected below like any existing one.
      if (statusOf(err) !== 409) throw new RuntimeError("NetworkFailed", `creating network ${name}: ${messageOf(err)}`);
    }
    const made = await this.rawNetwork(name);
    if (!made) throw new RuntimeError("NetworkFailed", `network ${name} vanished right after it was created`);
    return networkIdentity(made);
  }

  /** `docker network inspect`, or undefined when there is no such network; no containers counted. */
  private async rawNetwork(nameOrId: string): Promise<Docker.NetworkInspectInfo | undefined> {
    try {
      const net = this.docker.getNetwork(nameOrId);
      return await timed("docker network inspect", (abortSignal) => (net.inspect as (o: object) => Promise<Docker.NetworkInspectInfo>).call(net, { abortSignal }));
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async inspectNetwork(nameOrId: string): Promise<NetworkInfo | undefined> {
    const n = await this.rawNetwork(nameOrId);
    if (!n) return undefined;
    // The network's own list holds running containers only: stopped ones attached to it count too.
    const attached = await timed("docker ps", (abortSignal) => this.docker.listContainers({ all: true, filters: { network: [n.Id] }, abortSignal } as object));
    return toNetworkInfo(n, attached.length);
  }

  async removeNetwork(nameOrId: string): Promise<void> {
    try {
      await timed("docker network rm", (abortSignal) => this.docker.getNetwork(nameOrId).remove({ abortSignal } as object));
    } catch (err) {
      if (statusOf(err) === 404) return;
      if (err instanceof RuntimeError) throw err;
      const reason = statusOf(err) === 403 || /active endpoints/.test(messageOf(err)) ? "NetworkInUse" : "NetworkFailed";
      throw new RuntimeError(reason, `removing network ${nameOrId}: ${messageOf(err)}`);
    }
  }

  async listNetworks(max: number): Promise<{ networks: NetworkInfo[]; omitted: number }> {
    const nets = await timed("docker network ls", (abortSignal) => this.docker.listNetworks({ filters: { label: [LABEL_PROJECT] }, abortSignal } as object));
    if (nets.length === 0) return { networks: [], omitted: 0 };
    // One listing for every count (stopped containers stay attached to their networks).
    const containers = await timed("docker ps", (abortSignal) => this.docker.listContainers({ all: true, abortSignal } as object));
    const counts = new Map<string, number>();
    for (const c of containers) {
      for (const ep of Object.values(c.NetworkSettings?.Networks ?? {})) counts.set(ep.NetworkID, (counts.get(ep.NetworkID) ?? 0) + 1);
    }
    const sorted = [...nets].sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0));
    return { networks: sorted.slice(0, max).map((n) => toNetworkInfo(n, counts.get(n.Id) ?? 0)), omitted: Math.max(0, sorted.length - max) };
  }

  async updateLimits(containerId: string, update: HostLimits): Promise<void> {
    try {
      await timed("docker update", (abortSignal) => this.docker.getContainer(containerId).update({ ...update, abortSignal } as object));
    } catch (err) {
      if (statusOf(err) === 404) throw new RuntimeError("ContainerMissing", `container ${containerId.slice(0, 12)} no longer exists`);
      // e.g. "Minimum memory limit allowed is 6MB", a memory limit below what the container uses now.
      throw new RuntimeError("LimitsRefused", `Docker refused the new limits: ${messageOf(err)}`);
    }
  }

  async attachOnly(containerId: string, network: NetworkAttachment): Promise<void> {
    const c = await timed("docker inspect", (abortSignal) => this.docker.getContainer(containerId).inspect({ abortSignal } as object)).catch((err: unknown) => {
      if (statusOf(err) === 404) throw new RuntimeError("ContainerMissing", `container ${containerId.slice(0, 12)} no longer exists`);
      throw err;
    });
    const current = c.NetworkSettings?.Networks ?? {};
    const fail = (err: unknown, what: string) => {
      throw err instanceof RuntimeError ? err : new RuntimeError("NetworkFailed", `${what}: ${messageOf(err)}`);
    };
    if (!current[network.name]) {
      // Joined first, left after: a running container keeps a network (and its published ports) throughout.
      const body = { Container: c.Id, EndpointConfig: { Aliases: network.aliases } };
      await timed("docker network connect", (abortSignal) => this.docker.getNetwork(network.name).connect({ _query: {}, _body: body, abortSignal } as object)).catch((err: unknown) =>
        fail(err, `connecting container ${c.Name.replace(/^\//, "")} to network ${network.name}`),
      );
    }
    for (const name of Object.keys(current)) {
      if (name === network.name) continue;
      const body = { Container: c.Id, Force: true };
      await timed("docker network disconnect", (abortSignal) => this.docker.getNetwork(name).disconnect({ _query: {}, _body: body, abortSignal } as object)).catch((err: unknown) => {
        if (statusOf(err) === 404) return;
        fail(err, `disconnecting container ${c.Name.replace(/^\//, "")} from network ${name}`);
      });
    }
  }

  async logs(id: string, opts: LogOptions, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
    // A follower asks for timestamps: RotationDuplicates needs them to drop what a rotation repeats.
    const base = {
      stdout: true,
      stderr: true,
      timestamps: opts.follow,
      ...(opts.tailLines > 0 ? { tail: opts.tailLines } : {}),
      ...(opts.sinceSeconds !== undefined ? { since: opts.sinceSeconds.toFixed(6) } : {}),
    };
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    let body: NodeJS.ReadableStream;
    try {
      body = opts.follow
        ? await timed("docker logs", () => this.docker.getContainer(id).logs({ ...base, follow: true, abortSignal: ac.signal }), LOGS_OPEN_TIMEOUT_MS)
        : await timed("docker logs", () => this.logStream(id, base, ac.signal), LOGS_OPEN_TIMEOUT_MS);
    } catch (err) {
      signal.removeEventListener("abort", onAbort);
      if (err instanceof RuntimeError) throw err;
      if (statusOf(err) === 404) throw new RuntimeError("ContainerMissing", `container ${id.slice(0, 12)} no longer exists`);
      throw new RuntimeError("LogsFailed", messageOf(err));
    }
    return demuxed(body, signal, opts.follow ? new RotationDuplicates() : undefined, () => {
      signal.removeEventListener("abort", onAbort);
      ac.abort();
    });
  }

  /**
   * A log without follow as a stream: dockerode's `logs({follow: false})`
   * buffers the whole log in memory (any size) before returning it.
   */
  private logStream(id: string, options: object, abortSignal: AbortSignal): Promise<NodeJS.ReadableStream> {
    const modem = this.docker.modem as { dial(o: object, cb: (err: unknown, data: unknown) => void): void };
    return new Promise((resolve, reject) => {
      modem.dial(
        { path: `/containers/${id}/logs?`, method: "GET", abortSignal, isStream: true, statusCodes: { 200: true, 404: "no such container", 500: "server error" }, options: { ...options, follow: false } },
        (err, data) => (err ? reject(err) : resolve(data as NodeJS.ReadableStream)),
      );
    });
  }

  async subscribe(onEvent: (e: RuntimeEvent) => void, signal: AbortSignal): Promise<{ closed: Promise<void> }> {
    // Each subscription is to a new or restarted engine: what it said of itself may have changed.
    this.engineInfo = undefined;
    // The stream itself has no timeout (it is idle when nothing happens); the
    // agent's engine probe aborts it when the engine stops answering.
    const ac = new AbortController();
    const stream = (await timed("docker events", () =>
      this.docker.getEvents({ filters: { type: ["container"], label: [LABEL_SERVER] }, abortSignal: ac.signal } as object),
    )) as NodeJS.ReadableStream & { destroy(): void };
    const closed = new Promise<void>((resolve, reject) => {
      let buf = "";
      const onAbort = () => {
        stream.destroy();
        ac.abort();
        resolve();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      stream.on("data", (chunk: Buffer) => {
        buf += chunk.toString("utf8");
        // The events API is newline-delimited JSON; a chunk may hold several or half of one.
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          let e: DockerEvent;
          try {
            e = JSON.parse(line) as DockerEvent;
          } catch {
            continue; // not an event; the periodic inventory heals anything missed
          }
          const action = (e.Action ?? e.status ?? "").split(":")[0]!;
          if (!INTERESTING.has(action) || !e.Actor?.ID) continue;
          onEvent({
            action,
            containerId: e.Actor.ID,
            labels: e.Actor.Attributes ?? {},
            timeMs: e.timeNano ? Math.floor(e.timeNano / 1e6) : (e.time ?? 0) * 1000,
          });
        }
      });
      stream.on("error", (err: Error) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      });
      stream.on("end", () => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) resolve();
        else reject(new Error("docker events stream ended"));
      });
    });
    return { closed };
  }
}

/** What berth reads of `docker info`. */
interface EngineInfo {
  SecurityOptions?: string[];
  DockerRootDir?: string;
}

interface DockerEvent {
  Type?: string;
  Action?: string;
  status?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
  timeNano?: number;
}

function networkIdentity(n: Docker.NetworkInspectInfo): NetworkIdentity {
  return { id: n.Id, name: n.Name, labels: n.Labels ?? {} };
}

function toNetworkInfo(n: Docker.NetworkInspectInfo, containers: number): NetworkInfo {
  return create(NetworkInfoSchema, {
    id: n.Id,
    name: n.Name,
    labels: n.Labels ?? {},
    containers,
    ...(n.Created && validTime(n.Created) ? { createdTime: timestampFromMs(Date.parse(n.Created)) } : {}),
  });
}

function toInfo(c: Docker.ContainerInspectInfo): ContainerInfo {
  const ports = [];
  for (const [key, binds] of Object.entries(c.HostConfig.PortBindings ?? {}) as [string, { HostPort: string }[] | null][]) {
    const [port, proto] = key.split("/");
    for (const b of binds ?? []) {
      ports.push(
        create(PortMappingSchema, {
          hostPort: Number(b.HostPort),
          containerPort: Number(port),
          protocol: proto === "udp" ? Protocol.UDP : Protocol.TCP,
        }),
      );
    }
  }
  const env: Record<string, string> = {};
  for (const kv of c.Config.Env ?? []) {
    const i = kv.indexOf("=");
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return create(ContainerInfoSchema, {
    id: c.Id,
    name: c.Name.replace(/^\//, ""),
    image: c.Config.Image,
    state: c.State.Status,
    labels: c.Config.Labels ?? {},
    exitCode: c.State.ExitCode,
    oomKilled: c.State.OOMKilled,
    error: c.State.Error ?? "",
    ports,
    mounts: (c.Mounts ?? []).map((m) => `${m.Source}:${m.Destination}`),
    mountPoints: (c.Mounts ?? []).map((m) => create(MountPointSchema, { type: m.Type ?? "", source: m.Source, destination: m.Destination, readOnly: m.RW === false })),
    command: c.Config.Cmd ?? [],
    env,
    networks: Object.keys(c.NetworkSettings?.Networks ?? {}),
    resources: limitsOf(c.HostConfig as HostLimits & { PidsLimit?: number | null }),
    ...(c.Created ? { createdTime: timestampFromMs(Date.parse(c.Created)) } : {}),
    ...(validTime(c.State.StartedAt) ? { startedTime: timestampFromMs(Date.parse(c.State.StartedAt)) } : {}),
    ...(validTime(c.State.FinishedAt) ? { finishedTime: timestampFromMs(Date.parse(c.State.FinishedAt)) } : {}),
  });
}

/** Docker reports "0001-01-01T00:00:00Z" for never. */
function validTime(s: string | undefined): s is string {
  return !!s && !s.startsWith("0001-");
}

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number } | null)?.statusCode;
}

export function messageOf(err: unknown): string {
  const e = err as { json?: { message?: string }; message?: string } | null;
  return e?.json?.message ?? e?.message ?? String(err);
}

/** Errors that mean the engine did not answer at all (socket gone, refused, reset). */
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ENOENT", "ECONNRESET", "EPIPE", "EACCES", "ETIMEDOUT", "EHOSTUNREACH"]);

/**
 * Runs `call` with an abort signal; past `ms` the request is aborted and the
 * call rejects with RuntimeError("DockerTimeout"). Connection failures become
 * RuntimeError("DockerUnreachable"); Docker's own answers (404, 409, ...) pass through.
 */
async function timed<T>(what: string, call: (signal: AbortSignal) => Promise<T>, ms = CALL_TIMEOUT_MS): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new RuntimeError("DockerTimeout", `${what} did not answer within ${ms / 1000}s; is the Docker engine hung?`));
    }, ms);
  });
  try {
    return await Promise.race([call(ac.signal), timeout]);
  } catch (err) {
    const code = (err as { code?: string } | null)?.code;
    if (code && UNREACHABLE_CODES.has(code) && statusOf(err) === undefined) {
      throw new RuntimeError("DockerUnreachable", `${what}: the Docker engine is unreachable (${messageOf(err)})`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The engine config for a server's container, built only from the fields of
 * CreateContainerSpec: this is the whole of what berth can ask Docker for.
 * No privileges, no added capabilities (and DROPPED_CAPABILITIES dropped
 * unless the spec gives a few back), no-new-privileges, the project's network
 * (or Docker's default bridge without one) and private pid/ipc namespaces, one bind mount of the
 * server's data directory, restart policy "no" (the manager decides
 * restarts), and a json-file log that rotates (so a chatty server cannot
 * fill the host's disk).
 */
export function containerConfig(spec: CreateContainerSpec): Docker.ContainerCreateOptions {
  if (!spec.dataDir.startsWith("/")) throw new Error(`data directory "${spec.dataDir}" must be an absolute host path`);
  const capDrop = capabilitiesToDrop(spec.capAdd);
  const log = logRotation(spec);
  if (!spec.mountPath.startsWith("/") || spec.mountPath === "/") {
    throw new Error(`data mount path "${spec.mountPath}" must be an absolute path in the container other than /`);
  }
  if (spec.network && !isProjectNetworkName(spec.network.name)) throw new Error(`network "${spec.network.name}" is not a berth project network`);
  if (spec.stopSignal && !STOP_SIGNALS.has(spec.stopSignal)) throw new Error(`stop signal "${spec.stopSignal}" is not one of ${[...STOP_SIGNALS].join(", ")}`);
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostPort: string }[]> = {};
  for (const p of spec.ports) {
    const key = `${p.containerPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostPort: String(p.hostPort) });
  }
  return {
    name: spec.name,
    Image: spec.image,
    ...(spec.entrypoint && spec.entrypoint.length > 0 ? { Entrypoint: spec.entrypoint } : {}),
    ...(spec.command.length > 0 ? { Cmd: spec.command } : {}),
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    Labels: spec.labels,
    ExposedPorts: exposed,
    // Never a TTY: logs are read as a multiplexed stdout/stderr stream.
    Tty: false,
    // What docker stop sends first (the init process passes it on to the server's process).
    ...(spec.stopSignal ? { StopSignal: spec.stopSignal } : {}),
    // A console keeps stdin open across attaches (writeStdin); StdinOnce would close it after the first.
    ...(spec.openStdin ? { OpenStdin: true, StdinOnce: false, AttachStdin: false } : {}),
    // The project's own network, alone: other projects' containers are on other networks.
    ...(spec.network ? { NetworkingConfig: { EndpointsConfig: { [spec.network.name]: { Aliases: [...spec.network.aliases] } } } } : {}),
    HostConfig: {
      ...(spec.network ? { NetworkMode: spec.network.name } : {}),
      // An init process reaps zombies and forwards SIGTERM (busybox-like PID 1s ignore it).
      Init: true,
      // A structured mount, not a "src:dst" string: nothing in the path can add options.
      Mounts: [{ Type: "bind", Source: spec.dataDir, Target: spec.mountPath, ReadOnly: false }],
      PortBindings: bindings,
      // The manager decides restarts, so Docker must not.
      RestartPolicy: { Name: "no" },
      Privileged: false,
      CapAdd: [],
      CapDrop: capDrop,
      SecurityOpt: ["no-new-privileges"],
      // Always json-file, whatever the engine's default driver: TailLogs reads it back.
      LogConfig: { Type: "json-file", Config: { "max-size": String(log.maxSizeBytes), "max-file": String(log.maxFiles) } },
      ...(spec.resources ? hostConfigLimits(spec.resources) : {}),
    },
  };
}

/** The stop signals a container may be made with (ServerSpec.stop_signal). */
export const STOP_SIGNALS: ReadonlySet<string> = new Set(["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"]);

/** Log rotation when a command carries none (a manager older than these fields). */
const DEFAULT_LOG_MAX_SIZE_BYTES = 10 * 1024 * 1024;
const DEFAULT_LOG_MAX_FILES = 3;

/** The spec's log rotation, defaults filled in; refuses values Docker would take but no one means. */
function logRotation(spec: Pick<CreateContainerSpec, "logMaxSizeBytes" | "logMaxFiles">): { maxSizeBytes: number; maxFiles: number } {
  const maxSizeBytes = spec.logMaxSizeBytes || DEFAULT_LOG_MAX_SIZE_BYTES;
  const maxFiles = spec.logMaxFiles || DEFAULT_LOG_MAX_FILES;
  if (!Number.isInteger(maxSizeBytes) || maxSizeBytes < 64 * 1024) throw new Error(`log max size ${maxSizeBytes} must be at least 65536 bytes`);
  if (!Number.isInteger(maxFiles) || maxFiles > 20) throw new Error(`log max files ${maxFiles} must be 1 to 20`);
  return { maxSizeBytes, maxFiles };
}

/** Demultiplexes a log stream (followed or not) into frames. */
async function* demuxed(body: NodeJS.ReadableStream, signal: AbortSignal, dedup: RotationDuplicates | undefined, done: () => void): AsyncGenerator<LogFrame> {
  const demux = new LogDemuxer();
  try {
    for await (const chunk of body as AsyncIterable<Buffer | string>) {
      if (signal.aborted) return;
      const frames = demux.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
      yield* mergeFrames(dedup ? dedup.filter(frames) : frames, MERGED_FRAME_BYTES);
    }
  } catch (err) {
    // Aborting the request (caller gone) surfaces as an error: that is a normal end.
    if (signal.aborted) return;
    throw err;
  } finally {
    done();
    (body as { destroy?: () => void }).destroy?.();
  }
}
