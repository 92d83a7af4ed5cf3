import { createHash } from "node:crypto";
import type { ServerSpec } from "@berth/proto/berth/v1/server_pb.js";

/**
 * Hash of everything in a spec that shapes the container. A running container
 * whose `berth.spec-hash` label differs runs an older spec. Desired state and
 * restart policy are not part of it: changing them needs no new container.
 */
export function specHash(spec: ServerSpec): string {
  const canonical = JSON.stringify({
    image: spec.image,
    command: spec.command,
    env: Object.keys(spec.env)
      .sort()
      .map((k) => [k, spec.env[k]]),
    ports: spec.ports.map((p) => [p.hostPort, p.containerPort, p.protocol]),
    dataMountPath: spec.dataMountPath,
  });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}
