import { Protocol, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";

export interface PortOwner {
  name: string;
  /** The owner's project: another project's server names are not the caller's to learn. */
  project: string;
  ports: readonly PortMapping[];
}

export interface PortConflict {
  port: number;
  protocol: "tcp" | "udp";
  /** Name of the server already publishing it. */
  usedBy: string;
  /** That server's project. */
  project: string;
}

const proto = (p: Protocol): "tcp" | "udp" => (p === Protocol.UDP ? "udp" : "tcp");

/** Host ports in `wanted` already published by one of `others` (same host). */
export function findPortConflicts(wanted: readonly PortMapping[], others: readonly PortOwner[]): PortConflict[] {
  const used = new Map<string, PortOwner>();
  for (const o of others) for (const p of o.ports) used.set(`${p.hostPort}/${proto(p.protocol)}`, o);
  const out: PortConflict[] = [];
  for (const p of wanted) {
    const by = used.get(`${p.hostPort}/${proto(p.protocol)}`);
    if (by !== undefined) out.push({ port: p.hostPort, protocol: proto(p.protocol), usedBy: by.name, project: by.project });
  }
  return out;
}

/** The nearest free host ports above each conflicting one, for the error message. */
export function suggestFreePorts(conflicts: readonly PortConflict[], others: readonly PortOwner[], wanted: readonly PortMapping[]): number[] {
  const taken = new Set<string>();
  for (const o of others) for (const p of o.ports) taken.add(`${p.hostPort}/${proto(p.protocol)}`);
  for (const p of wanted) taken.add(`${p.hostPort}/${proto(p.protocol)}`);
  return conflicts.map((c) => {
    for (let port = c.port + 1; port <= 65535; port++) {
      const key = `${port}/${c.protocol}`;
      if (!taken.has(key)) {
        taken.add(key);
        return port;
      }
    }
    return 0;
  });
}

/**
 * `wanted` with each host port that one of `others` publishes moved to the
 * nearest free one (suggestFreePorts); undefined when one has none left.
 */
export function repickPorts(wanted: readonly PortMapping[], others: readonly PortOwner[]): PortMapping[] | undefined {
  const conflicts = findPortConflicts(wanted, others);
  if (conflicts.length === 0) return [...wanted];
  const free = suggestFreePorts(conflicts, others, wanted);
  if (free.includes(0)) return undefined;
  const moved = new Map(conflicts.map((c, i) => [`${c.port}/${c.protocol}`, free[i]!]));
  return wanted.map((p) => {
    const to = moved.get(`${p.hostPort}/${proto(p.protocol)}`);
    return to ? { ...p, hostPort: to } : p;
  });
}

/** At most this many conflicts are spelled out in one message; the rest are counted. */
export const MAX_CONFLICTS_LISTED = 5;

/**
 * "host port 25565/tcp is used by server "mc-1" (try 25566)" for each conflict
 * (the first few, then a count). A server of another project than `viewerProject`
 * is not named: "used by a server in another project".
 */
export function describeConflicts(conflicts: readonly PortConflict[], suggestions: readonly number[], viewerProject: string | null): string {
  const parts = conflicts.slice(0, MAX_CONFLICTS_LISTED).map((c, i) => {
    const owner = viewerProject === null || c.project === viewerProject ? `server "${c.usedBy}"` : "a server in another project";
    return `host port ${c.port}/${c.protocol} is used by ${owner}${suggestions[i] ? ` (try ${suggestions[i]})` : ""}`;
  });
  const more = conflicts.length - MAX_CONFLICTS_LISTED;
  if (more > 0) parts.push(`and ${more} more port${more === 1 ? "" : "s"} in use`);
  return parts.join("; ");
}
