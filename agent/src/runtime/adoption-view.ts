import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type Docker from "dockerode";
import { ContainerInfoSchema, MountPointSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { PortMappingSchema, Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { ADDABLE_CAPABILITIES } from "./capabilities.js";

/** The parts of `docker image inspect` an adoption compares a container with. */
export interface ImageDefaults {
  env: string[];
  cmd: string[];
  entrypoint: string[];
  user: string;
  workingDir: string;
  labels: Record<string, string>;
}

export function imageDefaults(image: Docker.ImageInspectInfo | undefined): ImageDefaults {
  const c = image?.Config;
  return {
    env: c?.Env ?? [],
    cmd: asList(c?.Cmd),
    entrypoint: asList(c?.Entrypoint),
    user: c?.User ?? "",
    workingDir: c?.WorkingDir ?? "",
    labels: c?.Labels ?? {},
  };
}

/**
 * Marks an `unsupported` entry as a privilege berth never grants (privileged
 * mode, host namespaces, capabilities beyond its allow-list, devices,
 * unconfined security profiles): AdoptOrphan refuses such a container.
 */
export const PRIVILEGE_PREFIX = "privilege: ";

/** What Docker puts in a container's environment when its image sets no PATH. */
export const DOCKER_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * What AdoptOrphan takes from a container: its own environment and command
 * (Docker folds the image's ENV and CMD into the container's config; a berth
 * spec holds only what differs, so a container berth created hashes the same
 * again), and everything a berth spec cannot express, which a container
 * recreated by berth loses. Pure: from the two inspect answers.
 */
export function adoptionView(c: Docker.ContainerInspectInfo, image: ImageDefaults): { env: Record<string, string>; command: string[]; unsupported: string[] } {
  const imageEnv = new Set(image.env);
  // An image without PATH gets Docker's default one in every container made from it.
  if (!image.env.some((kv) => kv.startsWith("PATH="))) imageEnv.add(DOCKER_DEFAULT_PATH);
  const env: Record<string, string> = {};
  for (const kv of c.Config.Env ?? []) {
    if (imageEnv.has(kv)) continue;
    const i = kv.indexOf("=");
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const cmd = asList(c.Config.Cmd);
  const command = sameList(cmd, image.cmd) ? [] : cmd;

  const out: string[] = [];
  const h = c.HostConfig as Docker.HostConfig & { CgroupnsMode?: string; ReadonlyRootfs?: boolean; PidsLimit?: number | null; UTSMode?: string; UsernsMode?: string };
  // What berth would never grant, marked PRIVILEGE_PREFIX: the manager refuses to adopt it.
  const priv = (what: string) => out.push(`${PRIVILEGE_PREFIX}${what}`);
  if (h.Privileged) priv("privileged mode");
  const caps = ((h.CapAdd ?? []) as string[]).map((x) => x.toUpperCase().replace(/^CAP_/, ""));
  const beyond = caps.filter((x) => !ADDABLE_CAPABILITIES.includes(x));
  if (beyond.length > 0) priv(`added capabilities beyond berth's allow-list (${beyond.join(", ")})`);
  if (caps.length > beyond.length) out.push(`added capabilities (${caps.filter((x) => ADDABLE_CAPABILITIES.includes(x)).join(", ")}; give them back with the spec's cap_add)`);
  const net = h.NetworkMode ?? "";
  if (net === "host" || net.startsWith("container:")) priv(`network mode "${net}"`);
  else if (net && net !== "default" && net !== "bridge") out.push(`network mode "${net}" (berth puts it on its project's network)`);
  if (h.PidMode) priv(`pid mode "${h.PidMode}"`);
  if (h.IpcMode === "host" || h.IpcMode?.startsWith("container:")) priv(`ipc mode "${h.IpcMode}"`);
  else if (h.IpcMode && h.IpcMode !== "private" && h.IpcMode !== "shareable") out.push(`ipc mode "${h.IpcMode}"`);
  if (h.UTSMode === "host") priv(`uts mode "host"`);
  if (h.UsernsMode === "host") priv(`userns mode "host"`);
  if ((h.Devices ?? []).length > 0) priv(`devices (${((h.Devices ?? []) as { PathOnHost?: string }[]).map((d) => d.PathOnHost ?? "").join(", ")})`);
  if ((h.DeviceCgroupRules ?? []).length > 0) priv("device cgroup rules");
  const unconfined = ((h.SecurityOpt ?? []) as string[]).filter((o) => /unconfined|^label[=:]disable/.test(o));
  if (unconfined.length > 0) priv(`security options (${unconfined.join(", ")})`);
  const restart = h.RestartPolicy?.Name ?? "";
  if (restart && restart !== "no") out.push(`Docker restart policy "${restart}" (berth decides restarts; until berth recreates the container Docker may restart it too)`);
  if ((h.Memory ?? 0) > 0) out.push("memory limit");
  if ((h.NanoCpus ?? 0) > 0 || (h.CpuQuota ?? 0) > 0 || (h.CpuShares ?? 0) > 0) out.push("CPU limit");
  if (h.ReadonlyRootfs) out.push("read-only root file system");
  if ((h.ExtraHosts ?? []).length > 0) out.push("extra hosts");
  if ((h.Links ?? []).length > 0) out.push("links");
  if ((h.VolumesFrom ?? []).length > 0) out.push("volumes from other containers");
  if ((h.Dns ?? []).length > 0) out.push("DNS servers");
  const secOpts = ((h.SecurityOpt ?? []) as string[]).filter((o) => o !== "no-new-privileges" && o !== "no-new-privileges:true" && !unconfined.includes(o));
  if (secOpts.length > 0) out.push(`security options (${secOpts.join(", ")})`);
  const entrypoint = asList(c.Config.Entrypoint);
  if (!sameList(entrypoint, image.entrypoint)) out.push(`entrypoint ${JSON.stringify(entrypoint)} (berth runs the image's entrypoint)`);
  if (c.Config.User && c.Config.User !== image.user) out.push(`user "${c.Config.User}"`);
  if (c.Config.WorkingDir && c.Config.WorkingDir !== image.workingDir) out.push(`working directory "${c.Config.WorkingDir}"`);
  if (c.Config.Tty) out.push("a TTY");
  for (const [key, binds] of Object.entries(h.PortBindings ?? {}) as [string, { HostIp?: string; HostPort?: string }[] | null][]) {
    for (const b of binds ?? []) {
      if (!b.HostPort) out.push(`port ${key} published on a random host port (berth needs a fixed one; add it with UpdateServer)`);
      else if (b.HostIp && b.HostIp !== "0.0.0.0" && b.HostIp !== "::") out.push(`port ${key} published on ${b.HostIp} only (berth publishes on every address)`);
    }
  }
  const labels = Object.keys(c.Config.Labels ?? {}).filter((k) => !k.startsWith("berth.") && image.labels[k] !== c.Config.Labels[k]);
  if (labels.length > 0) out.push(`labels (${labels.sort().join(", ")})`);
  return { env, command, unsupported: out };
}

/**
 * A container from `docker ps` (the list answer, no inspect): enough to list
 * it as an orphan and follow its state. Environment and command are left out
 * on purpose: it is not berth's container, and they may hold secrets.
 */
export function summaryInfo(item: Docker.ContainerInfo): ContainerInfo {
  const ports = (item.Ports ?? [])
    .filter((p) => p.PublicPort)
    .map((p) => create(PortMappingSchema, { hostPort: p.PublicPort, containerPort: p.PrivatePort, protocol: p.Type === "udp" ? Protocol.UDP : Protocol.TCP }));
  // The same binding shows once per address family; once is enough.
  const seen = new Set<string>();
  const unique = ports.filter((p) => {
    const k = `${p.hostPort}/${p.containerPort}/${p.protocol}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const mounts = (item.Mounts ?? []) as { Type?: string; Source?: string; Destination?: string; RW?: boolean }[];
  return create(ContainerInfoSchema, {
    id: item.Id,
    name: (item.Names?.[0] ?? "").replace(/^\//, ""),
    image: item.Image,
    state: item.State,
    labels: item.Labels ?? {},
    exitCode: exitCodeOf(item.Status),
    ports: unique,
    mounts: mounts.map((m) => `${m.Source ?? ""}:${m.Destination ?? ""}`),
    mountPoints: mounts.map((m) => create(MountPointSchema, { type: m.Type ?? "", source: m.Source ?? "", destination: m.Destination ?? "", readOnly: m.RW === false })),
    ...(item.Created ? { createdTime: timestampFromMs(item.Created * 1000) } : {}),
  });
}

/** "Exited (137) 5 minutes ago" → 137. */
function exitCodeOf(status: string | undefined): number {
  const m = /^Exited \((-?\d+)\)/.exec(status ?? "");
  return m ? Number(m[1]) : 0;
}

function asList(v: string | string[] | null | undefined): string[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
