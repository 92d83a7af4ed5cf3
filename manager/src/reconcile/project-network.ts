import { createHash } from "node:crypto";

/**
 * The Docker network of `project` on every host of this manager:
 * `berth-<project, made safe>-<8 hex of a hash of manager id and project>`.
 * The readable part is for `docker network ls`; the hash keeps two projects
 * whose names differ only in characters Docker does not allow (or two
 * managers sharing an engine) on different networks. The agent creates it
 * on demand and removes it with the project's last container on the host.
 */
export function projectNetworkName(managerId: string, project: string): string {
  const readable =
    project
      .toLowerCase()
      .replace(/[^a-z0-9_.-]+/g, "-")
      .replace(/^[^a-z0-9]+/, "")
      .slice(0, 40)
      .replace(/[^a-z0-9]+$/, "") || "project";
  const hash = createHash("sha256").update(`${managerId}\u0000${project}`).digest("hex").slice(0, 8);
  return `berth-${readable}-${hash}`;
}
