/**
 * Project networks: every project gets its own Docker bridge network on each
 * host, so a container reaches its own project's containers (by server name)
 * and no other project's, unless they publish a port. The manager names the
 * network in each container command; the agent creates it, puts containers
 * on it alone and removes it with the project's last container on the host.
 * The checks here keep what a command can ask for narrow: a network berth
 * made for that project, never "host", "none" or someone else's network.
 */
import type { NetworkInfo } from "@berth/proto/berth/v1/agent_pb.js";

export const LABEL_MANAGER = "berth.manager";
/** On a project network: the project it is for. */
export const LABEL_PROJECT = "berth.project";

/** Names berth gives project networks (the manager's projectNetworkName makes them). */
const NETWORK_NAME_RE = /^berth-[a-z0-9][a-z0-9_.-]{0,99}$/;
/** DNS labels: server names (and ids) as aliases. */
const ALIAS_RE = /^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$/i;

/** Is `name` one berth gives project networks? (Never "host", "none", "bridge".) */
export function isProjectNetworkName(name: string): boolean {
  return NETWORK_NAME_RE.test(name);
}

/** Why a command's network fields cannot be used, or undefined. Pure. */
export function networkFieldsRefusal(f: { network: string; project: string; aliases: readonly string[]; managerId: string }): string | undefined {
  if (!NETWORK_NAME_RE.test(f.network)) return `network "${f.network.slice(0, 120)}" is not a berth project network name (berth-<project>-<hash>)`;
  if (!f.project) return `network ${f.network} comes without its project`;
  if (!f.managerId) return `network ${f.network} comes without the manager's label`;
  const bad = f.aliases.find((a) => !ALIAS_RE.test(a));
  if (bad !== undefined) return `network alias "${bad.slice(0, 80)}" is not a DNS label`;
  return undefined;
}

/** The labels berth puts on a project's network. */
export function networkLabels(managerId: string, project: string): Record<string, string> {
  return { [LABEL_MANAGER]: managerId, [LABEL_PROJECT]: project };
}

/**
 * Why an existing network of the wanted name must not take the project's
 * containers (made outside berth, by another manager, or for another
 * project), or undefined when it is the project's own. Pure.
 */
export function foreignNetworkRefusal(found: Pick<NetworkInfo, "name" | "labels">, managerId: string, project: string): string | undefined {
  const mid = found.labels[LABEL_MANAGER];
  const proj = found.labels[LABEL_PROJECT];
  if (mid === managerId && proj === project) return undefined;
  if (mid === undefined && proj === undefined) {
    return `network ${found.name} exists but was not made by berth (no berth labels); remove or rename it, then start the server again`;
  }
  return `network ${found.name} is labelled for ${proj === undefined ? "no project" : `project ${JSON.stringify(proj)}`} of manager ${mid ?? "(none)"}, not project ${JSON.stringify(project)} of this manager; remove it if that manager is gone, then start the server again`;
}

/** Is this network one berth made for a project (and may remove when it is empty)? */
export function isProjectNetwork(n: Pick<NetworkInfo, "name" | "labels">, managerId: string): boolean {
  return NETWORK_NAME_RE.test(n.name) && n.labels[LABEL_MANAGER] === managerId && n.labels[LABEL_PROJECT] !== undefined;
}
