/**
 * What one host may make the manager store. An agent is trusted with its own
 * host, not with the manager: a broken or hostile one once reported 30,000
 * labelled containers, which became 30,001 alerts and 60,000 events, stalled
 * /healthz for minutes and dropped every other agent. Everything an agent
 * reports goes through these pure functions first; what they refuse is not
 * stored, only counted (by reason) and reported as a host event.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { ContainerInfo, DataDir } from "@berth/proto/berth/v1/agent_pb.js";
import { SERVER_ID_RE } from "../ids.js";
import { LABEL_SERVER } from "../domain/labels.js";

export interface HostLimits {
  /** Containers stored per host, of every kind (the server's own ones first). */
  maxContainers: number;
  /** Of those: labelled containers that are not a server of this host's (untracked, foreign, unknown ids). */
  maxOtherLabelled: number;
  /** Containers without berth labels (the agent sends at most 1,000). */
  maxUnmanaged: number;
  /** Directories under the data root (data-root entries). */
  maxDataRootEntries: number;
  /** Messages per second from one agent, sustained (log chunks and command results are not counted). */
  messagesPerSecond: number;
  /** Messages one agent may send in a burst. */
  messageBurst: number;
}

export const DEFAULT_HOST_LIMITS: HostLimits = {
  maxContainers: 2_000,
  maxOtherLabelled: 200,
  maxUnmanaged: 1_000,
  maxDataRootEntries: 2_000,
  messagesPerSecond: 1_000,
  messageBurst: 10_000,
};

/** Why a report was not stored (the `reason` of refused counts). */
export type RefusalReason =
  | "BadServerId"
  | "BadContainerId"
  | "BadDataDirName"
  | "UnknownServer"
  | "TooManyContainers"
  | "TooManyOtherContainers"
  | "TooManyUnmanaged"
  | "TooManyDataDirs"
  | "ContainerTooLarge"
  | "RateLimited";

export type RefusedCounts = Partial<Record<RefusalReason, number>>;

/** Docker ids are 64 hex digits; other runtimes' ids stay plain and short. */
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * A directory name under the data root as the manager accepts it: one plain
 * path segment (it is handed back in REMOVE_STRAY_DATA and shown in paths).
 */
export function isPlainDirName(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name) <= 255 && name !== "." && name !== ".." && !/[/\\\0]/.test(name) && !/[\u0000-\u001f\u007f]/.test(name);
}

export function addRefused(into: RefusedCounts, reason: RefusalReason, n = 1): void {
  if (n > 0) into[reason] = (into[reason] ?? 0) + n;
}

export interface InventoryContent {
  containers: ContainerInfo[];
  unmanaged: ContainerInfo[];
  dataDirs: DataDir[];
  otherDataDirs: string[];
  /**
   * After boundInventory: checks of server-id directories of no server on
   * this host. Stored as checks while the host lists them (AdoptOrphan of an
   * untracked container with its own server id finds its data at once;
   * Store.replaceHostInventory forgets them after), and listed as data-root
   * entries (with their size), where OrphanService finds an untracked
   * container's data.
   */
  foreignDataDirs?: DataDir[];
}

/**
 * Cuts one host's inventory down to what the manager stores: valid ids and
 * names only, containers of servers placed on this host always (up to
 * `maxContainers`), other labelled containers up to `maxOtherLabelled` (so
 * OrphanService can still list a few untracked or foreign ones), unmanaged
 * ones up to `maxUnmanaged`, data-directory checks only for this host's
 * servers, data-root entries up to `maxDataRootEntries`.
 */
export function boundInventory(inv: InventoryContent, serversOnHost: ReadonlySet<string>, limits: HostLimits = DEFAULT_HOST_LIMITS): InventoryContent & { refused: RefusedCounts } {
  const refused: RefusedCounts = {};
  const own: ContainerInfo[] = [];
  const other: ContainerInfo[] = [];
  for (const reported of inv.containers) {
    const c = slimContainer(reported);
    if (!c) {
      addRefused(refused, "ContainerTooLarge");
      continue;
    }
    if (!CONTAINER_ID_RE.test(c.id)) {
      addRefused(refused, "BadContainerId");
      continue;
    }
    const sid = c.labels[LABEL_SERVER] ?? "";
    if (sid && !SERVER_ID_RE.test(sid)) addRefused(refused, "BadServerId");
    else if (sid && serversOnHost.has(sid)) own.push(c);
    else if (other.length < limits.maxOtherLabelled) other.push(c);
    else addRefused(refused, "TooManyOtherContainers");
  }
  const labelled = [...own, ...other];
  addRefused(refused, "TooManyContainers", labelled.length - limits.maxContainers);
  const containers = labelled.slice(0, limits.maxContainers);
  const room = Math.max(0, Math.min(limits.maxUnmanaged, limits.maxContainers - containers.length));
  const plain: ContainerInfo[] = [];
  for (const reported of inv.unmanaged) {
    const c = slimContainer(reported);
    if (!c) addRefused(refused, "ContainerTooLarge");
    else if (!CONTAINER_ID_RE.test(c.id) || c.labels[LABEL_SERVER]) addRefused(refused, "BadContainerId");
    else plain.push(c);
  }
  addRefused(refused, "TooManyUnmanaged", plain.length - room);
  const dataDirs: DataDir[] = [];
  const foreign: DataDir[] = [];
  for (const d of [...inv.dataDirs, ...(inv.foreignDataDirs ?? [])]) {
    if (!SERVER_ID_RE.test(d.serverId)) addRefused(refused, "BadServerId");
    else if (serversOnHost.has(d.serverId)) dataDirs.push(d);
    else foreign.push(d);
  }
  const names = inv.otherDataDirs.filter(isPlainDirName);
  addRefused(refused, "BadDataDirName", inv.otherDataDirs.length - names.length);
  // Every directory is an entry: this host's servers' first, then the others, up to the cap.
  const foreignRoom = Math.max(0, limits.maxDataRootEntries - dataDirs.length);
  const entryRoom = Math.max(0, foreignRoom - foreign.length);
  addRefused(refused, "TooManyDataDirs", Math.max(0, foreign.length - foreignRoom) + Math.max(0, names.length - entryRoom));
  return { containers, unmanaged: plain.slice(0, room), dataDirs, foreignDataDirs: foreign.slice(0, foreignRoom), otherDataDirs: names.slice(0, entryRoom), refused };
}

/**
 * Whether one reported container (a Docker event, a command's result) may be
 * stored: a valid id and server label, and room on the host unless it is a
 * container of a server placed on this host or one already stored (an
 * update). The counts are asked for only when they matter.
 */
export function admitContainer(
  c: ContainerInfo,
  ctx: { own: boolean; alreadyStored: () => boolean; counts: () => { total: number; other: number } },
  limits: HostLimits = DEFAULT_HOST_LIMITS,
): RefusalReason | undefined {
  if (!CONTAINER_ID_RE.test(c.id)) return "BadContainerId";
  const sid = c.labels[LABEL_SERVER] ?? "";
  if (sid && !SERVER_ID_RE.test(sid)) return "BadServerId";
  if (ctx.own || ctx.alreadyStored()) return undefined;
  const { total, other } = ctx.counts();
  if (total >= limits.maxContainers) return "TooManyContainers";
  if (sid && other >= limits.maxOtherLabelled) return "TooManyOtherContainers";
  return undefined;
}

/** A stored container weighs at most this (its strings summed), after env and command are dropped. */
export const MAX_CONTAINER_BYTES = 16 * 1024;

/**
 * A container as the manager stores it: without `env` and `command` (the
 * manager decides by labels, state, ports and mounts; older agents still
 * sent them), with only berth's labels when the others are too heavy.
 * Undefined when even that is over MAX_CONTAINER_BYTES.
 */
export function slimContainer(c: ContainerInfo): ContainerInfo | undefined {
  let out = c;
  if (Object.keys(c.env).length > 0 || c.command.length > 0) out = { ...c, env: {}, command: [] };
  // A time JSON cannot hold (before year 1, after 9999, negative nanos) made the write throw and
  // closed the agent's stream, again after every reconnect: it is dropped, as if not reported.
  if (!storableTime(out.createdTime) || !storableTime(out.startedTime) || !storableTime(out.finishedTime) || !storableTime(out.readyTime)) {
    out = {
      ...out,
      readyTime: storableTime(out.readyTime) ? out.readyTime : undefined,
      createdTime: storableTime(out.createdTime) ? out.createdTime : undefined,
      startedTime: storableTime(out.startedTime) ? out.startedTime : undefined,
      finishedTime: storableTime(out.finishedTime) ? out.finishedTime : undefined,
    };
  }
  if (weight(out) <= MAX_CONTAINER_BYTES) return out;
  out = { ...out, labels: Object.fromEntries(Object.entries(out.labels).filter(([k]) => k.startsWith("berth."))), unsupported: [] };
  return weight(out) <= MAX_CONTAINER_BYTES ? out : undefined;
}

/** Timestamps the protobuf JSON mapping (how containers are stored) accepts: 0001-01-01 to 9999-12-31, nanos 0..999,999,999. */
function storableTime(t: Timestamp | undefined): boolean {
  return t === undefined || (t.seconds >= -62_135_596_800n && t.seconds <= 253_402_300_799n && t.nanos >= 0 && t.nanos <= 999_999_999);
}

function weight(c: ContainerInfo): number {
  let n = c.id.length + c.name.length + c.image.length + c.state.length + c.error.length + c.ports.length * 16;
  for (const [k, v] of Object.entries(c.labels)) n += k.length + v.length;
  for (const m of c.mounts) n += m.length;
  for (const m of c.mountPoints) n += m.source.length + m.destination.length + m.type.length;
  for (const u of c.unsupported) n += u.length;
  for (const net of c.networks) n += net.length;
  return n;
}

