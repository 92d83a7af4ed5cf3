import type { ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";

/** One container whose observed state differs between two pictures of the host. */
export interface ContainerChange {
  id: string;
  server: string;
  what: "appeared" | "vanished" | "changed";
  /** For "changed": the fields that differ, e.g. `state running→exited`. */
  details: string[];
}

/** The fields berth acts on; anything else (timestamps of unrelated events, env) is noise. */
function facts(c: ContainerInfo): Record<string, string> {
  return {
    state: c.state,
    "spec-hash": c.labels["berth.spec-hash"] ?? "",
    exit: String(c.exitCode),
    started: c.startedTime ? String(c.startedTime.seconds) : "",
    name: c.name,
  };
}

/**
 * What changed between the picture the agent believed (last inventory plus
 * the Docker events applied since) and a fresh inventory. The agent sends the
 * full inventory anyway; a non-empty diff means the event stream missed
 * something, which is worth a log line: it is how "state drifted silently"
 * shows up before anyone notices.
 */
export function diffContainers(believed: Iterable<ContainerInfo>, fresh: Iterable<ContainerInfo>): ContainerChange[] {
  const before = new Map([...believed].map((c) => [c.id, c]));
  const after = new Map([...fresh].map((c) => [c.id, c]));
  const out: ContainerChange[] = [];
  for (const [id, c] of after) {
    const server = c.labels["berth.server"] ?? "";
    const old = before.get(id);
    if (!old) {
      out.push({ id, server, what: "appeared", details: [`state ${c.state}`] });
      continue;
    }
    const a = facts(old);
    const b = facts(c);
    const details = Object.keys(b)
      .filter((k) => a[k] !== b[k])
      .map((k) => `${k} ${a[k] || "-"}→${b[k] || "-"}`);
    if (details.length > 0) out.push({ id, server, what: "changed", details });
  }
  for (const [id, c] of before) {
    if (!after.has(id)) out.push({ id, server: c.labels["berth.server"] ?? "", what: "vanished", details: [] });
  }
  return out.sort((x, y) => x.id.localeCompare(y.id));
}
