import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import Docker from "dockerode";
import { ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { PortMappingSchema, Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { RuntimeError, type ContainerRuntime, type CreateContainerSpec, type RuntimeEvent } from "./container-runtime.js";

export const LABEL_SERVER = "berth.server";

/** Events that can change what berth shows; exec_*, attach, resize, ... are ignored. */
const INTERESTING = new Set(["create", "start", "restart", "die", "kill", "stop", "pause", "unpause", "oom", "destroy", "rename", "update"]);

const CALL_TIMEOUT_MS = 30_000;
const PULL_TIMEOUT_MS = 10 * 60_000;

/** Docker through dockerode; every call bounded by a timeout. */
export class DockerRuntime implements ContainerRuntime {
  private readonly docker: Docker;

  constructor(opts: { socketPath?: string } = {}) {
    this.docker = opts.socketPath ? new Docker({ socketPath: opts.socketPath }) : new Docker();
  }

  async version(): Promise<string> {
    const v = await timed("docker version", this.docker.version());
    return v.Version;
  }

  async list(serverId?: string): Promise<ContainerInfo[]> {
    const label = serverId ? `${LABEL_SERVER}=${serverId}` : LABEL_SERVER;
    const items = await timed("docker ps", this.docker.listContainers({ all: true, filters: { label: [label] } }));
    const out: ContainerInfo[] = [];
    for (const item of items) {
      const info = await this.inspect(item.Id);
      if (info) out.push(info);
    }
    return out;
  }

  async inspect(id: string): Promise<ContainerInfo | undefined> {
    try {
      const c = await timed("docker inspect", this.docker.getContainer(id).inspect());
      return toInfo(c);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async imageExists(image: string): Promise<boolean> {
    try {
      await timed("docker image inspect", this.docker.getImage(image).inspect());
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw err;
    }
  }

  async pull(image: string, onProgress: (line: string) => void): Promise<void> {
    try {
      const stream = await timed("docker pull", this.docker.pull(image) as Promise<NodeJS.ReadableStream>);
      await timed(
        "docker pull",
        new Promise<void>((resolve, reject) => {
          this.docker.modem.followProgress(
            stream,
            (err: Error | null) => (err ? reject(err) : resolve()),
            (e: { status?: string; progress?: string; id?: string }) => {
              if (e.status) onProgress([e.id, e.status, e.progress].filter(Boolean).join(" "));
            },
          );
        }),
        PULL_TIMEOUT_MS,
      );
    } catch (err) {
      throw new RuntimeError("ImagePullFailed", `pulling ${image}: ${messageOf(err)}`);
    }
  }

  async create(spec: CreateContainerSpec): Promise<string> {
    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostPort: string }[]> = {};
    for (const p of spec.ports) {
      const key = `${p.containerPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`;
      exposed[key] = {};
      (bindings[key] ??= []).push({ HostPort: String(p.hostPort) });
    }
    try {
      const c = await timed(
        "docker create",
        this.docker.createContainer({
          name: spec.name,
          Image: spec.image,
          ...(spec.command.length > 0 ? { Cmd: spec.command } : {}),
          Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
          Labels: spec.labels,
          ExposedPorts: exposed,
          HostConfig: {
            // An init process reaps zombies and forwards SIGTERM (busybox-like PID 1s ignore it).
            Init: true,
            Binds: [`${spec.dataDir}:${spec.mountPath}`],
            PortBindings: bindings,
            // The manager decides restarts, so Docker must not.
            RestartPolicy: { Name: "no" },
            Privileged: false,
            CapAdd: [],
            SecurityOpt: ["no-new-privileges"],
          },
        }),
      );
      return c.id;
    } catch (err) {
      throw new RuntimeError("CreateFailed", `creating container ${spec.name}: ${messageOf(err)}`);
    }
  }

  async start(id: string): Promise<void> {
    try {
      await timed("docker start", this.docker.getContainer(id).start());
    } catch (err) {
      if (statusOf(err) === 304) return; // already started
      const msg = messageOf(err);
      if (/port is already allocated|address already in use/i.test(msg)) throw new RuntimeError("PortConflict", msg);
      throw new RuntimeError("StartFailed", msg);
    }
  }

  async stop(id: string, timeoutSeconds: number): Promise<void> {
    try {
      await timed("docker stop", this.docker.getContainer(id).stop({ t: timeoutSeconds }), (timeoutSeconds + 30) * 1000);
    } catch (err) {
      if (statusOf(err) === 304) return; // already stopped
      throw new RuntimeError("StopFailed", messageOf(err));
    }
  }

  async kill(id: string): Promise<void> {
    try {
      await timed("docker kill", this.docker.getContainer(id).kill());
    } catch (err) {
      if (statusOf(err) === 409) return; // not running
      throw new RuntimeError("KillFailed", messageOf(err));
    }
  }

  async pause(id: string): Promise<void> {
    await timed("docker pause", this.docker.getContainer(id).pause()).catch((err: unknown) => {
      throw new RuntimeError("PauseFailed", messageOf(err));
    });
  }

  async unpause(id: string): Promise<void> {
    await timed("docker unpause", this.docker.getContainer(id).unpause()).catch((err: unknown) => {
      throw new RuntimeError("UnpauseFailed", messageOf(err));
    });
  }

  async remove(id: string): Promise<void> {
    try {
      await timed("docker rm", this.docker.getContainer(id).remove({ force: true, v: false }));
    } catch (err) {
      if (statusOf(err) === 404) return;
      if (statusOf(err) === 409 && /already in progress/.test(messageOf(err))) return;
      throw new RuntimeError("RemoveFailed", messageOf(err));
    }
  }

  async subscribe(onEvent: (e: RuntimeEvent) => void, signal: AbortSignal): Promise<{ closed: Promise<void> }> {
    const stream = (await timed(
      "docker events",
      this.docker.getEvents({ filters: { type: ["container"], label: [LABEL_SERVER] } }),
    )) as NodeJS.ReadableStream & { destroy(): void };
    const closed = new Promise<void>((resolve, reject) => {
      let buf = "";
      const onAbort = () => {
        stream.destroy();
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
          const e = JSON.parse(line) as DockerEvent;
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

interface DockerEvent {
  Type?: string;
  Action?: string;
  status?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
  timeNano?: number;
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
    command: c.Config.Cmd ?? [],
    env,
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

/** Rejects with a RuntimeError("DockerTimeout") when `p` takes longer than `ms`. */
async function timed<T>(what: string, p: Promise<T>, ms = CALL_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RuntimeError("DockerTimeout", `${what} did not answer within ${ms / 1000}s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
