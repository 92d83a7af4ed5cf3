/**
 * The Servers table's filters and sort, and their round trip through the URL
 * query (`?host=…&phase=Running,Failed&q=web&sort=phase&desc=1`), so a view
 * can be bookmarked and shared. Pure; tested in table-query.test.ts.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Protocol, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { desiredName, isDeleted, needsAttention, phaseFromName, phaseName, runningSinceMs } from "./model.js";
import type { Phase } from "@berth/proto/berth/v1/server_pb.js";
import type { UsageSample } from "@berth/proto/berth/v1/usage_pb.js";

export const SORT_KEYS = ["name", "host", "project", "image", "container", "phase", "connect", "uptime", "cpu", "memory", "desired", "observed", "data", "generation", "changed", "ports"] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface TableQuery {
  /** Host id; "" = every host. */
  host: string;
  /** Empty = every phase. */
  phases: Phase[];
  /** Only what needs an operator (model.needsAttention); `?phase=attention`. */
  attention: boolean;
  /** "" = every project. */
  project: string;
  /** Free text, matched against name, id, image, container, host, project, reason, ports, labels (key=value). */
  q: string;
  showDeleted: boolean;
  /** A CEL filter the manager applies to WatchServers (`?cel=`, docs/explore.md); "" = normal mode. The filters above still apply on top. */
  cel: string;
  sort: SortKey;
  desc: boolean;
}

export const DEFAULT_QUERY: TableQuery = { host: "", phases: [], attention: false, project: "", q: "", showDeleted: false, cel: "", sort: "name", desc: false };

export function parseQuery(search: string): TableQuery {
  const p = new URLSearchParams(search);
  const sort = p.get("sort");
  return {
    host: p.get("host") ?? "",
    attention: (p.get("phase") ?? "") === "attention",
    phases: (p.get("phase") ?? "")
      .split(",")
      .map((n) => phaseFromName(n.trim()))
      .filter((x): x is Phase => x !== undefined),
    project: p.get("project") ?? "",
    q: p.get("q") ?? "",
    showDeleted: p.get("deleted") === "1",
    cel: (p.get("cel") ?? "").trim(),
    sort: (SORT_KEYS as readonly string[]).includes(sort ?? "") ? (sort as SortKey) : "name",
    desc: p.get("desc") === "1",
  };
}

/**
 * Writes the query into `base` (other parameters, e.g. the open server, are
 * kept); defaults are left out so a plain view has a plain URL.
 */
export function formatQuery(q: TableQuery, base = ""): string {
  const p = new URLSearchParams(base);
  const set = (k: string, v: string) => (v ? p.set(k, v) : p.delete(k));
  set("host", q.host);
  set("phase", q.attention ? "attention" : q.phases.map(phaseName).join(","));
  set("project", q.project);
  set("q", q.q);
  set("deleted", q.showDeleted ? "1" : "");
  set("cel", q.cel.trim());
  set("sort", q.sort === "name" ? "" : q.sort);
  set("desc", q.desc ? "1" : "");
  const s = p.toString();
  return s ? `?${s}` : "";
}

export function shortId(id: string): string {
  return id.slice(0, 12);
}

export function portsText(s: Server): string {
  return (s.spec?.ports ?? []).map((p) => `${p.hostPort}→${p.containerPort}${p.protocol === Protocol.UDP ? "/udp" : ""}`).join(", ");
}

/**
 * Where a client connects: the host and the first published port,
 * "alpha:25565" (", udp" is left to the ports column). Host carries no
 * advertised address, so the host's name stands for it (agents register
 * with their machine's hostname unless told otherwise). Undefined when
 * nothing is published.
 */
export function connectAddress(s: Server, hostName: string): string | undefined {
  const p = s.spec?.ports[0];
  if (!p || !hostName) return undefined;
  return `${hostName}:${p.hostPort}`;
}

/**
 * An image reference split for a narrow cell: the repository (which may
 * shrink to an ellipsis) and the tag or a shortened digest (which stays
 * whole). Docker Hub's implied "docker.io/" and "library/" are left out.
 */
export function imageParts(image: string): { repo: string; tag: string } {
  let ref = image.replace(/^docker\.io\//, "").replace(/^library\//, "");
  let tag = "";
  const at = ref.indexOf("@");
  if (at >= 0) {
    tag = `@${ref.slice(at + 1).replace(/^sha256:/, "").slice(0, 12)}`;
    ref = ref.slice(0, at);
  }
  const colon = ref.lastIndexOf(":");
  if (colon > ref.lastIndexOf("/")) {
    tag = ref.slice(colon) + tag;
    ref = ref.slice(0, colon);
  }
  return { repo: ref, tag };
}

/**
 * Optional columns of the servers table, chosen in the column chooser (kept in
 * localStorage). The internals are off unless chosen; DEFAULT_COLUMNS are on
 * unless turned off.
 */
export const OPTIONAL_COLUMNS = ["usage", "container", "desired", "observed", "generation", "ports"] as const;
export type OptionalColumn = (typeof OPTIONAL_COLUMNS)[number];
/** On unless turned off: the stored list names them "-usage" when they are. */
export const DEFAULT_COLUMNS: readonly OptionalColumn[] = ["usage"];

/**
 * The stored choice of optional columns: a JSON list of the chosen internals
 * and "-name" for a default column turned off (a list stored before a default
 * column existed shows it). Anything unreadable is the default.
 */
export function parseShownColumns(raw: string | null | undefined): ReadonlySet<OptionalColumn> {
  let list: unknown;
  try {
    list = JSON.parse(raw ?? "[]");
  } catch {
    list = [];
  }
  if (!Array.isArray(list)) list = [];
  const named = list as unknown[];
  return new Set(OPTIONAL_COLUMNS.filter((c) => (DEFAULT_COLUMNS.includes(c) ? !named.includes(`-${c}`) : named.includes(c))));
}

export function formatShownColumns(shown: ReadonlySet<OptionalColumn>): string {
  return JSON.stringify(OPTIONAL_COLUMNS.flatMap((c) => (DEFAULT_COLUMNS.includes(c) ? (shown.has(c) ? [] : [`-${c}`]) : shown.has(c) ? [c] : [])));
}

type HostNames = ReadonlyMap<string, string>;
/** The latest usage sample by server id (the page's WatchUsage stream). */
type Samples = ReadonlyMap<string, UsageSample>;

/** Sorting by these needs the usage samples (and follows them). */
export function sortsByUsage(key: SortKey): boolean {
  return key === "cpu" || key === "memory";
}

export function matches(s: Server, q: TableQuery, hostNames: HostNames): boolean {
  if (!q.showDeleted && isDeleted(s)) return false;
  if (q.host && s.spec?.hostId !== q.host) return false;
  if (q.project && s.project !== q.project) return false;
  if (q.attention && !needsAttention(s)) return false;
  if (q.phases.length > 0 && !q.phases.includes(s.status?.phase ?? 0)) return false;
  const text = q.q.trim().toLowerCase();
  if (!text) return true;
  const hostId = s.spec?.hostId ?? "";
  const hay = [
    s.id,
    s.spec?.name,
    s.project,
    s.spec?.image,
    s.status?.containerId.slice(0, 12),
    hostId,
    hostNames.get(hostId),
    phaseName(s.status?.phase),
    s.status?.reason,
    portsText(s),
    ...Object.entries(s.spec?.labels ?? {}).map(([k, v]) => `${k}=${v}`),
  ]
    .join(" ")
    .toLowerCase();
  return text.split(/\s+/).every((word) => hay.includes(word));
}

function sortValue(s: Server, key: SortKey, hostNames: HostNames, usage: Samples): string | number | bigint {
  switch (key) {
    case "name":
      return s.spec?.name ?? "";
    case "host":
      return hostNames.get(s.spec?.hostId ?? "") ?? s.spec?.hostId ?? "";
    case "project":
      return s.project;
    case "image":
      return s.spec?.image ?? "";
    case "container":
      return s.status?.containerId ?? "";
    case "phase":
      return phaseName(s.status?.phase);
    case "connect": {
      const port = s.spec?.ports[0]?.hostPort;
      return port === undefined ? "" : `${hostNames.get(s.spec?.hostId ?? "") ?? s.spec?.hostId ?? ""}:${port}`;
    }
    case "uptime": {
      // Ascending: shortest uptime first; not running counts as none at all.
      const since = runningSinceMs(s);
      return since === undefined ? -Infinity : -since;
    }
    // Ascending: least first; a server without a sample (not running, not measured yet) before any figure.
    case "cpu":
      return usage.get(s.id)?.cpuPercent ?? -1;
    case "memory": {
      const m = usage.get(s.id)?.memoryBytes;
      return m === undefined ? -1 : Number(m);
    }
    case "desired":
      return desiredName(s.spec?.desiredState);
    case "observed":
      return s.status?.containerState ?? "";
    case "data":
      return s.status?.dataExists ? Number(s.status.dataSizeBytes) + 1 : 0;
    case "generation":
      return s.generation;
    case "changed":
      return s.status?.lastChangeTime ? timestampMs(s.status.lastChangeTime) : 0;
    case "ports":
      return s.spec?.ports[0]?.hostPort ?? 0;
  }
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function compareValues(a: string | number | bigint, b: string | number | bigint): number {
  if (typeof a === "string" && typeof b === "string") return collator.compare(a, b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Filters and sorts. Stable and total: ties fall back to the name, then the
 * id, so rows never swap places when an unrelated field changes. `usage`: the
 * latest samples, for the CPU and memory sorts.
 */
export function applyQuery(servers: Iterable<Server>, q: TableQuery, hostNames: HostNames, usage: Samples = new Map()): Server[] {
  const out: { s: Server; v: string | number | bigint }[] = [];
  for (const s of servers) if (matches(s, q, hostNames)) out.push({ s, v: sortValue(s, q.sort, hostNames, usage) });
  const dir = q.desc ? -1 : 1;
  out.sort(
    (a, b) =>
      dir * compareValues(a.v, b.v) ||
      collator.compare(a.s.spec?.name ?? "", b.s.spec?.name ?? "") ||
      (a.s.id < b.s.id ? -1 : a.s.id > b.s.id ? 1 : 0),
  );
  return out.map((x) => x.s);
}
