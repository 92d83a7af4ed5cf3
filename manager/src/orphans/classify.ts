/**
 * Orphans: where the database and the hosts disagree. A pure function of the
 * observations (containers and data-root directories the agents reported),
 * the records (hosts, servers, open commands) and the time.
 *
 *   container labelled by this manager ── record on this host? ── yes: a server's (not an orphan)
 *        │                                       └── no ──► UNTRACKED
 *   container labelled by another manager ────────────────────► FOREIGN
 *   container without berth labels ── bound by AdoptOrphan? ── yes: a server's
 *        │                                       └── no ──► UNMANAGED (only when asked)
 *   directory under a data root ── a server of this host's? ── in use by a container?
 *        │                                       └── no, no ──► STRAY_DATA
 *   server record whose host was removed ─────────────────────► STRANDED
 *   project network made by this manager ── a server of that project on this host?
 *                                            └── no ──► NETWORK
 *
 * Only connected hosts are judged (their last inventory is current); an
 * offline host's containers and directories are not claimed to be anything
 * until it reconnects. A container younger than the grace period (by its
 * creation time on the host) and anything a command is in flight for are
 * never flagged: they may be on their way to having a record.
 */
import { createHash } from "node:crypto";
import { SERVER_ID_RE } from "../ids.js";
import type { ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import type { PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import type { ObservedNetwork } from "./network-inventory.js";
import type { ServerPlacement } from "../store/store.js";

export const DEFAULT_ORPHAN_GRACE_MS = 60_000;

export const LABEL_MANAGER = "berth.manager";
export const LABEL_SERVER = "berth.server";
export const LABEL_PROJECT = "berth.project";


export interface HostFact {
  id: string;
  name: string;
  removedAt: number | null;
  /** The agent is connected and its inventory stored. */
  connected: boolean;
  /** The agent's data root (from its Hello); "" if never reported. */
  dataRoot: string;
}

/** A server as orphan detection sees it (its placement; adoptedContainerId: a container AdoptOrphan bound to it without labels). */
export type ServerFact = ServerPlacement;

export interface OrphanInput {
  managerId: string;
  now: number;
  graceMs: number;
  /** List containers without berth labels too. */
  includeUnmanaged: boolean;
  hosts: readonly HostFact[];
  /** Every server record, soft-deleted ones included. */
  servers: readonly ServerFact[];
  containers: readonly { hostId: string; info: ContainerInfo }[];
  dataRootEntries: readonly { hostId: string; name: string; sizeBytes: number }[];
  /** Servers with a command in flight. */
  busyServerIds: ReadonlySet<string>;
  /** Containers a command in flight works on (an adoption copying their data). */
  busyContainerIds: ReadonlySet<string>;
  /** Project networks the connected hosts reported (NetworkInventory); absent: none. */
  networks?: readonly ObservedNetwork[];
}

export interface OrphanFinding {
  /** Stable while the orphan exists: derived from what it is (host + container id, host + directory, server id). */
  id: string;
  kind: OrphanKind;
  hostId: string;
  containerId: string;
  containerName: string;
  image: string;
  state: string;
  /** Container creation (host clock) or, stranded, the record's creation; 0 if unknown. */
  createTimeMs: number;
  labels: Record<string, string>;
  ports: PortMapping[];
  mounts: string[];
  reason: string;
  /** The directory's name under the host's data root that goes with it ("" if none). */
  dataDir: string;
  /** Its host path ("" if none). */
  dataPath: string;
  dataSizeBytes: number;
  /** UNTRACKED and FOREIGN: the berth.server label; STRANDED: the server. */
  serverId: string;
  /** UNTRACKED/FOREIGN: berth.manager label. */
  managerLabel: string;
  /** STRANDED: the record's project and name; NETWORK: the network's project. */
  project: string;
  serverName: string;
  /** NETWORK: the Docker network's id and name. */
  networkId?: string;
  networkName?: string;
}

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/** `orp_` + 20 base32 characters of SHA-256 of `key`: the same orphan gets the same id on every list. */
export function orphanId(key: string): string {
  const digest = createHash("sha256").update(key).digest();
  let out = "";
  for (let i = 0; i < 20; i++) out += ALPHABET[digest[i]! & 31];
  return `orp_${out}`;
}

/** A reported time (protobuf Timestamp) in whole milliseconds, truncated; 0 when absent. */
export function msOf(t: { seconds: bigint; nanos: number } | undefined): number {
  return t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0;
}

/** Mount sources of a container (from mount_points, else the "source:destination" strings). */
export function mountSources(info: ContainerInfo): { source: string; destination: string; type: string; readOnly: boolean }[] {
  if (info.mountPoints.length > 0) return info.mountPoints.map((m) => ({ source: m.source, destination: m.destination, type: m.type, readOnly: m.readOnly }));
  return info.mounts.map((s) => {
    const i = s.lastIndexOf(":/");
    return i > 0 ? { source: s.slice(0, i), destination: s.slice(i + 1), type: "bind", readOnly: false } : { source: s, destination: "", type: "bind", readOnly: false };
  });
}

/** The directory directly under `root` that `path` is in (or is), or "". */
export function entryUnder(root: string, path: string): string {
  if (!root || !path.startsWith(root.endsWith("/") ? root : `${root}/`)) return "";
  return path.slice(root.replace(/\/$/, "").length + 1).split("/")[0] ?? "";
}

/** Berth's own work directories (".copy-…") and file-system bookkeeping are never anyone's data. */
function ignoredEntry(name: string): boolean {
  return name.startsWith(".") || name === "lost+found";
}

export function classifyOrphans(input: OrphanInput): OrphanFinding[] {
  const out: OrphanFinding[] = [];
  const hosts = new Map(input.hosts.map((h) => [h.id, h]));
  const servers = new Map(input.servers.map((s) => [s.id, s]));
  const adopted = new Set(input.servers.filter((s) => s.adoptedContainerId).map((s) => `${s.hostId}/${s.adoptedContainerId}`));
  const entries = new Map<string, Map<string, number>>();
  for (const e of input.dataRootEntries) {
    let m = entries.get(e.hostId);
    if (!m) entries.set(e.hostId, (m = new Map()));
    m.set(e.name, e.sizeBytes);
  }

  for (const h of input.hosts) {
    if (h.removedAt !== null || !h.connected) continue;
    const onHost = entries.get(h.id) ?? new Map<string, number>();
    /** Directories some container on this host mounts (whatever it is), or an orphan claimed. */
    const inUse = new Set<string>();
    const root = h.dataRoot.replace(/\/+$/, "");
    const dataPathOf = (name: string) => (root ? `${root}/${name}` : name);
    const containers = input.containers.filter((c) => c.hostId === h.id);
    for (const c of containers) for (const m of mountSources(c.info)) {
      const name = entryUnder(root, m.source);
      if (name) inUse.add(name);
    }

    for (const { info } of containers) {
      if (adopted.has(`${h.id}/${info.id}`) || input.busyContainerIds.has(info.id)) continue;
      const sid = info.labels[LABEL_SERVER] ?? "";
      const mid = info.labels[LABEL_MANAGER] ?? "";
      let kind: OrphanKind;
      let reason: string;
      if (sid && mid === input.managerId) {
        const rec = servers.get(sid);
        if (rec && (rec.hostId === h.id || rec.transferHosts?.includes(h.id))) continue;
        if (input.busyServerIds.has(sid)) continue;
        kind = OrphanKind.UNTRACKED;
        reason = rec
          ? `labelled by this manager for server ${rec.name} (${sid}), which berth now runs on host ${hosts.get(rec.hostId)?.name ?? rec.hostId}: a stale copy; destroy it`
          : `labelled by this manager for server ${sid}, of which it has no record (purged while its host was away, or the database was restored from an older backup); adopt it to manage it again, or destroy it`;
      } else if (sid || mid) {
        kind = OrphanKind.FOREIGN;
        reason = mid
          ? `labelled by another berth manager (${mid})${sid ? ` for its server ${sid}` : ""}; berth never destroys it without force`
          : `carries berth.server=${sid} but no berth.manager label: not made by this manager; berth never destroys it without force`;
      } else {
        if (!input.includeUnmanaged) continue;
        kind = OrphanKind.UNMANAGED;
        reason = "no berth labels: created outside berth; adopt it to let berth manage it";
      }
      const created = msOf(info.createdTime);
      if (created > 0 && input.now - created < input.graceMs) continue;
      // Its data directory under this host's data root, if it has one there.
      let dataDir = "";
      if (kind === OrphanKind.UNTRACKED && onHost.has(sid)) dataDir = sid;
      for (const m of mountSources(info)) {
        const name = entryUnder(root, m.source);
        if (!dataDir && name && onHost.has(name) && !ignoredEntry(name)) dataDir = name;
      }
      if (dataDir) inUse.add(dataDir);
      out.push({
        id: orphanId(`container/${h.id}/${info.id}`),
        kind,
        hostId: h.id,
        containerId: info.id,
        containerName: info.name,
        image: info.image,
        state: info.state,
        createTimeMs: created,
        labels: { ...info.labels },
        ports: [...info.ports],
        mounts: [...info.mounts],
        reason,
        dataDir,
        dataPath: dataDir ? dataPathOf(dataDir) : "",
        dataSizeBytes: dataDir ? (onHost.get(dataDir) ?? 0) : 0,
        serverId: sid,
        managerLabel: mid,
        project: "",
        serverName: "",
      });
    }

    for (const [name, size] of onHost) {
      if (ignoredEntry(name) || inUse.has(name)) continue;
      let reason: string;
      if (SERVER_ID_RE.test(name)) {
        const rec = servers.get(name);
        if (rec && (rec.hostId === h.id || rec.transferHosts?.includes(h.id))) continue;
        if (input.busyServerIds.has(name)) continue;
        reason = rec
          ? `data directory of server ${rec.name} (${name}), which berth now runs on host ${hosts.get(rec.hostId)?.name ?? rec.hostId}: a leftover copy`
          : `data directory of server ${name}, of which this manager has no record (purged or dropped after deletion, data kept)`;
      } else {
        reason = "not a server's data directory (berth names them after server ids); nothing of berth's uses it";
      }
      out.push({
        id: orphanId(`data/${h.id}/${name}`),
        kind: OrphanKind.STRAY_DATA,
        hostId: h.id,
        containerId: "",
        containerName: "",
        image: "",
        state: "",
        createTimeMs: 0,
        labels: {},
        ports: [],
        mounts: [],
        reason,
        dataDir: name,
        dataPath: dataPathOf(name),
        dataSizeBytes: size,
        serverId: SERVER_ID_RE.test(name) ? name : "",
        managerLabel: "",
        project: "",
        serverName: "",
      });
    }
  }

  // Project networks of this manager for a project without a server record (deleted ones count) on that host.
  const projectsOnHost = new Set(input.servers.map((s) => `${s.hostId}\u0000${s.project}`));
  for (const n of input.networks ?? []) {
    const h = hosts.get(n.hostId);
    if (!h || h.removedAt !== null || !h.connected) continue;
    const project = n.labels[LABEL_PROJECT];
    if (project === undefined || n.labels[LABEL_MANAGER] !== input.managerId) continue;
    if (projectsOnHost.has(`${n.hostId}\u0000${project}`)) continue;
    if (n.createdMs > 0 && input.now - n.createdMs < input.graceMs) continue;
    out.push({
      id: orphanId(`network/${n.hostId}/${n.id}`),
      kind: OrphanKind.NETWORK,
      hostId: n.hostId,
      containerId: "",
      containerName: "",
      image: "",
      state: "",
      createTimeMs: n.createdMs,
      labels: { ...n.labels },
      ports: [],
      mounts: [],
      reason:
        `network ${n.name} of project ${project}, which has no server on this host any more (a container removed outside berth, or the agent stopped before it removed the network); destroy it` +
        (n.containers > 0 ? `; ${n.containers} container(s) still attached: remove them first` : ""),
      dataDir: "",
      dataPath: "",
      dataSizeBytes: 0,
      serverId: "",
      managerLabel: n.labels[LABEL_MANAGER] ?? "",
      project,
      serverName: "",
      networkId: n.id,
      networkName: n.name,
    });
  }

  for (const s of input.servers) {
    const h = hosts.get(s.hostId);
    if (h && h.removedAt === null) continue;
    const root = h?.dataRoot.replace(/\/+$/, "") ?? "";
    out.push({
      id: orphanId(`server/${s.id}`),
      kind: OrphanKind.STRANDED,
      hostId: s.hostId,
      containerId: "",
      containerName: "",
      image: s.image,
      state: "",
      createTimeMs: s.createdAt,
      labels: {},
      ports: [],
      mounts: [],
      reason: `server ${s.name} (project ${s.project}) is placed on host ${h?.name ?? s.hostId}, which was removed${h?.removedAt ? ` ${new Date(h.removedAt).toISOString()}` : ""}: reassign it to a host that has its data directory (ReassignServer), or purge it (PurgeServer with force, or DestroyOrphan)`,
      dataDir: s.id,
      dataPath: root ? `${root}/${s.id}` : "",
      dataSizeBytes: 0,
      serverId: s.id,
      managerLabel: "",
      project: s.project,
      serverName: s.name,
    });
  }

  const order = (f: OrphanFinding) => `${f.hostId}\u0000${f.kind}\u0000${f.containerName || f.dataDir || f.networkName || ""}\u0000${f.id}`;
  return out.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
}
