import { Protocol, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";

export interface PortOwner {
  name: string;
  ports: readonly PortMapping[];
}

export interface PortConflict {
  port: number;
  protocol: "tcp" | "udp";
  /** Name of the server already publishing it. */
  usedBy: string;
}

const proto = (p: Protocol): "tcp" | "udp" => (p === Protocol.UDP ? "udp" : "tcp");

/** Host ports in `wanted` already published by one of `others` (same host). */
export function findPortConflicts(wanted: readonly PortMapping[], others: readonly PortOwner[]): PortConflict[] {
  const used = new Map<string, string>();
  for (const o of others) for (const p of o.ports) used.set(`${p.hostPort}/${proto(p.protocol)}`, o.name);
  const out: PortConflict[] = [];
  for (const p of wanted) {
    const by = used.get(`${p.hostPort}/${proto(p.protocol)}`);
    if (by !== undefined) out.push({ port: p.hostPort, protocol: proto(p.protocol), usedBy: by });
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

/** "host port 25565/tcp is used by server mc-1 (try 25566)" for each conflict. */
export function describeConflicts(conflicts: readonly PortConflict[], suggestions: readonly number[]): string {
  return conflicts
    .map((c, i) => `host port ${c.port}/${c.protocol} is used by server "${c.usedBy}"${suggestions[i] ? ` (try ${suggestions[i]})` : ""}`)
    .join("; ");
}
