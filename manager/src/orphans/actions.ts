/**
 * What AdoptOrphan and DestroyOrphan would do with one orphan, decided
 * without I/O (the service then asks the agent and writes the store).
 */
import { posix } from "node:path";
import type { ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState, RestartPolicy, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { formatBytes } from "../domain/limits.js";
import { InvalidArgumentError, PreconditionError } from "../errors.js";
import { entryUnder, mountSources, type OrphanFinding } from "./classify.js";

/** How an adopted container becomes a server's. */
export type AdoptionMode =
  /** Labelled by this manager: the record takes the id of its berth.server label, so everything matches. */
  | "same-id"
  /** No data to move: a new record, bound to the container by its Docker id until berth recreates it. */
  | "bind"
  /** move_data: the agent stops it, copies its data mount into the data root, removes it; berth recreates it. */
  | "copy";

export interface AdoptionPlan {
  mode: AdoptionMode;
  /** The server id to use ("same-id"), or "" for a new one. */
  serverId: string;
  generation: number;
  spec: {
    image: string;
    command: string[];
    env: Record<string, string>;
    ports: PortMapping[];
    dataMountPath: string;
    restartPolicy: RestartPolicy;
    desiredState: DesiredState;
  };
  /** "copy": the container's mount (path inside it) whose source is copied. */
  copyMountPath: string;
  /** The server's data directory already exists under the data root ("same-id"). */
  dataPresent: boolean;
  /** Settings berth cannot keep: lost when it recreates the container. */
  warnings: string[];
}

export interface AdoptionRequest {
  moveData: boolean;
  dataMountPath: string;
  force: boolean;
  /**
   * Host directories outside the data root an admin allows move_data to copy
   * (--adoptable-path); empty: none.
   */
  adoptablePaths?: readonly string[];
  /** The name of the server whose record owns data-root entry `entry`, if any. */
  dataDirOwner?: (entry: string) => string | undefined;
}

/** Marks a privilege in `ContainerInfo.unsupported` (the agent's adoption-view.ts). */
const PRIVILEGE_PREFIX = "privilege: ";

/**
 * Refuses a container running with what berth never grants a server
 * (privileged mode, host network/PID/IPC/UTS/user namespaces, capabilities
 * beyond berth's allow-list, devices, unconfined security profiles): adopted
 * as it is ("bind", "same-id") it would keep them as an ordinary project's
 * server. There is no override; recreate the container without them first.
 */
function refusePrivileges(containerName: string, info: ContainerInfo): void {
  const privileges = info.unsupported.filter((u) => u.startsWith(PRIVILEGE_PREFIX)).map((u) => u.slice(PRIVILEGE_PREFIX.length));
  if (privileges.length === 0) return;
  throw new PreconditionError(
    `container ${containerName} runs with privileges berth never gives a server: ${privileges.join("; ")}. ` +
      "Recreate it without them (and without --privileged, --network/--pid/--ipc/--uts host, --cap-add beyond AUDIT_WRITE, FSETID, NET_RAW, SETPCAP, SYS_CHROOT, --device, unconfined security options), then adopt it, or destroy it",
  );
}

/**
 * Refuses to copy `source` into a new server (move_data): berth's data root
 * itself, another server's data directory (anything in an entry a record
 * owns), and anything outside the data root that is not under an adoptable
 * path (default: none). Without this, an admin adopting a container that
 * bind-mounts /etc or another project's data would copy it into a server.
 */
function refuseDataSource(source: string, root: string, req: Pick<AdoptionRequest, "adoptablePaths" | "dataDirOwner">): void {
  const src = normalSource(source);
  if (root && src === root) throw new PreconditionError(`the mount source ${src} is berth's data root itself; a server's data is one directory in it`);
  const entry = entryUnder(root, src);
  if (entry) {
    const owner = req.dataDirOwner?.(entry);
    if (owner !== undefined) {
      throw new PreconditionError(`the mount source ${src} is the data directory of server ${owner}; another server's data is never copied into a new one`);
    }
    return;
  }
  const allowed = (req.adoptablePaths ?? []).some((p) => src === p || src.startsWith(p.endsWith("/") ? p : `${p}/`));
  if (!allowed) {
    throw new PreconditionError(
      `the mount source ${src} is outside berth's data root ${root || "(unknown)"} and not under an adoptable path; ` +
        `an admin allows copying from a directory with the manager setting --adoptable-path DIR (BERTH_ADOPTABLE_PATH; ${(req.adoptablePaths ?? []).length ? `now: ${(req.adoptablePaths ?? []).join(", ")}` : "none set"})`,
    );
  }
}

/** A mount source as the refusals compare it: normalized, without a trailing slash. */
function normalSource(source: string): string {
  return posix.normalize(source).replace(/(.)\/+$/, "$1");
}

/**
 * The data-root entries the mounts of `info` are in: the only ones whose
 * owner `AdoptionRequest.dataDirOwner` may be asked about (so the caller can
 * look them up before planning).
 */
export function dataRootEntriesOfMounts(info: ContainerInfo, dataRoot: string): string[] {
  const root = dataRoot.replace(/\/+$/, "");
  return [...new Set(mountSources(info).map((m) => entryUnder(root, normalSource(m.source))).filter((e) => e !== ""))];
}

const DEFAULT_MOUNT = "/data";

/** Throws when `f` cannot be adopted at all, whatever its container holds. */
export function refuseAdoption(f: OrphanFinding, force: boolean): void {
  if (f.kind === OrphanKind.NETWORK) {
    throw new PreconditionError(`${f.networkName ?? "the network"} is a project network without servers: there is nothing to adopt; destroy it (berth makes the network again when the project gets a server on this host)`);
  }
  if (f.kind === OrphanKind.STRAY_DATA) {
    throw new PreconditionError(`${f.dataPath || f.dataDir} is a data directory without a container: there is no configuration to adopt; create a server (its data starts empty) or destroy the directory`);
  }
  if (f.kind === OrphanKind.STRANDED) {
    throw new PreconditionError(`server ${f.serverName} already has a record; its host is gone: move it with ReassignServer (to a host that has its data directory) or purge it`);
  }
  if (f.kind === OrphanKind.FOREIGN && !force) {
    throw new PreconditionError(
      `container ${f.containerName} belongs to another berth manager (${f.managerLabel || "no berth.manager label"}); two managers would fight over it. ` +
        "Adopt it with force=true only if that manager is gone for good",
    );
  }
}

/**
 * The server record AdoptOrphan makes from a container's actual config
 * (`info` from the agent's INSPECT_CONTAINER: environment and command
 * without the image's defaults, `unsupported` filled), or a typed error
 * saying why not and what to do instead.
 */
export function planAdoption(f: OrphanFinding, info: ContainerInfo, dataRoot: string, req: AdoptionRequest): AdoptionPlan {
  refuseAdoption(f, req.force);
  refusePrivileges(f.containerName, info);
  const root = dataRoot.replace(/\/+$/, "");
  const warnings = info.unsupported.map((u) => `${u}: lost when berth recreates the container`);
  const mounts = mountSources(info);
  const ports = info.ports.filter((p) => p.hostPort > 0);
  const running = info.state === "running" || info.state === "restarting";
  const base = {
    image: info.image,
    command: [...info.command],
    env: { ...info.env },
    ports,
    restartPolicy: RestartPolicy.ON_FAILURE,
    desiredState: running ? DesiredState.RUNNING : info.state === "paused" ? DesiredState.PAUSED : DesiredState.STOPPED,
  };
  const dropped = (keep: string) =>
    mounts
      .filter((m) => m.destination !== keep)
      .map((m) => `mount ${m.source || m.type} → ${m.destination}: berth mounts only the data directory; lost when berth recreates the container`);

  if (f.kind === OrphanKind.UNTRACKED) {
    const own = `${root}/${f.serverId}`;
    const dataMount = mounts.find((m) => m.source === own);
    const dataMountPath = dataMount?.destination ?? DEFAULT_MOUNT;
    if (!dataMount) warnings.push(`no mount of its data directory ${own}: berth mounts it at ${DEFAULT_MOUNT} when it recreates the container`);
    warnings.push(...dropped(dataMountPath));
    const generation = Math.max(1, Number.parseInt(info.labels["berth.generation"] ?? "1", 10) || 1);
    return { mode: "same-id", serverId: f.serverId, generation, spec: { ...base, dataMountPath }, copyMountPath: "", dataPresent: f.dataDir === f.serverId, warnings };
  }

  // Unmanaged, or foreign with force: its data mount, if any, must be chosen and copied.
  const candidates = mounts.filter((m) => m.type === "bind" || m.type === "volume");
  for (const m of mounts.filter((x) => !candidates.includes(x))) warnings.push(`${m.type} mount at ${m.destination}: lost when berth recreates the container`);
  let data: (typeof mounts)[number] | undefined;
  if (req.dataMountPath) {
    data = candidates.find((m) => m.destination === req.dataMountPath);
    if (!data) {
      throw new InvalidArgumentError(
        "data_mount_path",
        `container ${f.containerName} has no bind mount or volume at ${req.dataMountPath}; its mounts: ${describe(candidates)}`,
      );
    }
  } else if (candidates.length === 1) {
    data = candidates[0];
  } else if (candidates.length > 1) {
    throw new PreconditionError(
      `container ${f.containerName} has ${candidates.length} mounts (${describe(candidates)}); a berth server has one data directory: ` +
        "name the one holding its data with data_mount_path (the others are dropped when berth recreates the container)",
    );
  }
  if (!data) {
    return { mode: "bind", serverId: "", generation: 1, spec: { ...base, dataMountPath: DEFAULT_MOUNT }, copyMountPath: "", dataPresent: false, warnings };
  }
  if (!req.moveData) {
    const where = entryUnder(root, data.source) ? `${data.source}, not in the directory berth keeps for it` : `${data.source}, outside berth's data root ${root || "(unknown)"}`;
    throw new PreconditionError(
      `container ${f.containerName} keeps its data (mounted at ${data.destination}) in ${where}. ` +
        `Adopt it with move_data=true: berth stops the container, copies that directory into ${root || "<data root>"}/<new server id> (the original stays where it is), ` +
        `and recreates the container with berth's labels and the copy mounted at ${data.destination}`,
    );
  }
  if (data.readOnly) throw new PreconditionError(`the mount at ${data.destination} is read-only, so it is not the container's data; name another with data_mount_path`);
  refuseDataSource(data.source, root, req);
  warnings.push(...dropped(data.destination));
  return {
    mode: "copy",
    serverId: "",
    generation: 1,
    // Recreated running if it ran; otherwise it waits, stopped, for StartServer.
    spec: { ...base, desiredState: running || info.state === "paused" ? DesiredState.RUNNING : DesiredState.STOPPED, dataMountPath: data.destination },
    copyMountPath: data.destination,
    dataPresent: true,
    warnings,
  };
}

function describe(ms: { source: string; destination: string }[]): string {
  return ms.map((m) => `${m.source} → ${m.destination}`).join(", ") || "none";
}

/** One thing DestroyOrphan removes. */
export type DestroyAction =
  | { what: "container"; containerId: string }
  | { what: "data"; name: string }
  | { what: "record"; serverId: string }
  | { what: "network"; networkId: string };

export interface DestroyPlan {
  actions: DestroyAction[];
  /** What goes, in words (the answer's `removed`). */
  removed: string[];
  /** What stays, and why (the answer's `kept`). */
  kept: string[];
}

/**
 * What DestroyOrphan removes: the container; its data directory under the
 * data root only with remove_data; never anything outside the data root. A
 * foreign container needs force. A stranded server's record is dropped (its
 * host is gone: nothing there can be reached).
 */
export function planDestroy(f: OrphanFinding, hostName: string, req: { removeData: boolean; force: boolean }): DestroyPlan {
  const removed: string[] = [];
  const kept: string[] = [];
  const actions: DestroyAction[] = [];
  const on = `on host ${hostName}`;
  if (f.kind === OrphanKind.STRANDED) {
    actions.push({ what: "record", serverId: f.serverId });
    removed.push(`server record ${f.serverName} (${f.serverId}, project ${f.project})`);
    kept.push(`its data directory${f.dataPath ? ` ${f.dataPath}` : ""} on removed host ${hostName}: berth can no longer reach that host`);
    return { actions, removed, kept };
  }
  if (f.kind === OrphanKind.NETWORK) {
    actions.push({ what: "network", networkId: f.networkId ?? "" });
    removed.push(`network ${f.networkName ?? f.networkId} of project ${f.project} ${on}`);
    return { actions, removed, kept };
  }
  if (f.kind === OrphanKind.FOREIGN && !req.force) {
    throw new PreconditionError(
      `container ${f.containerName} belongs to another berth manager (${f.managerLabel || "no berth.manager label"}), perhaps one sharing this Docker engine; ` +
        "destroying it needs force=true (check that manager is gone first)",
    );
  }
  if (f.containerId) {
    actions.push({ what: "container", containerId: f.containerId });
    removed.push(`container ${f.containerName} (${f.containerId.slice(0, 12)}, ${f.image}, ${f.state}) ${on}`);
  }
  if (f.dataDir) {
    const size = f.dataSizeBytes > 0 ? `, ${formatBytes(f.dataSizeBytes)}` : "";
    if (req.removeData) {
      actions.push({ what: "data", name: f.dataDir });
      removed.push(`data directory ${f.dataPath}${size} ${on}`);
    } else {
      kept.push(`data directory ${f.dataPath}${size} ${on}: set remove_data to delete it`);
    }
  }
  for (const m of f.mounts) {
    const source = m.slice(0, Math.max(0, m.lastIndexOf(":/"))) || m;
    if (f.dataPath && (source === f.dataPath || source.startsWith(`${f.dataPath}/`))) continue;
    kept.push(`${source} (mounted by the container): berth never deletes anything outside the server's data directory`);
  }
  return { actions, removed, kept };
}
