import { createHash } from "node:crypto";
import type { ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { openEnvValue, SecretKeyError, type SecretBox } from "../store/secrets.js";

/**
 * Hash of everything in a spec that shapes the container. A running container
 * whose `berth.spec-hash` label differs runs an older spec. Desired state and
 * restart policy are not part of it: changing them needs no new container.
 * Fields added later (capabilities given back, log rotation, console, ready
 * pattern, stop signal) count only when
 * set, so a spec without them keeps the hash it had before they existed and
 * upgrading the manager recreates no container. Log limits left at 0 follow
 * the manager's defaults, which are not hashed: a changed default reaches a
 * container when it is next created (an update, a rebuild), not by itself.
 *
 * A secret env value counts by its HMAC under the manager's secret key
 * (`secrets`), never by itself: the hash is a container label anyone with
 * Docker access reads, and a plain hash would let them test guesses. The
 * HMAC is of the plaintext, so re-sealing a value changes nothing; flagging
 * an existing key secret does change the hash (the container is recreated
 * once, at the next restart or rebuild).
 */
export function specHash(spec: ServerSpec, secrets?: { serverId: string; box: SecretBox | undefined }): string {
  const secret = new Set(spec.secretEnv);
  const value = (k: string): string | undefined => {
    const v = spec.env[k];
    if (v === undefined || !secret.has(k)) return v;
    if (!secrets?.box) throw new SecretKeyError(`the hash of a spec with secret env values needs the secret key`);
    return `hmac:${secrets.box.mac(openEnvValue(secrets.box, secrets.serverId, k, v))}`;
  };
  const canonical = JSON.stringify({
    image: spec.image,
    command: spec.command,
    env: Object.keys(spec.env)
      .sort()
      .map((k) => [k, value(k)]),
    ports: spec.ports.map((p) => [p.hostPort, p.containerPort, p.protocol]),
    dataMountPath: spec.dataMountPath,
    ...(spec.capAdd.length > 0 ? { capAdd: [...spec.capAdd].sort() } : {}),
    ...(spec.logMaxSizeBytes ? { logMaxSizeBytes: spec.logMaxSizeBytes } : {}),
    ...(spec.logMaxFiles ? { logMaxFiles: spec.logMaxFiles } : {}),
    ...(spec.console ? { console: true } : {}),
    // The container carries both (its berth.ready-pattern label, Docker's StopSignal).
    ...(spec.readyPattern ? { readyPattern: spec.readyPattern } : {}),
    ...(spec.stopSignal ? { stopSignal: spec.stopSignal } : {}),
  });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}
