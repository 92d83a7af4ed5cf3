import { create } from "@bufbuild/protobuf";
import {
  DesiredState,
  PortMappingSchema,
  Protocol,
  RestartPolicy,
  ServerSpecSchema,
  type ServerSpec,
} from "@berth/proto/berth/v1/server_pb.js";
import { InvalidArgumentError } from "../errors.js";

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// Docker reference grammar, loosely: [registry[:port]/]path[:tag][@digest].
const IMAGE_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ENV = 200;
const MAX_PORTS = 100;
const MAX_COMMAND_ARGS = 256;
const MAX_VALUE_BYTES = 32 * 1024;
/**
 * The whole environment, as Docker holds it ("KEY=value" per variable). It
 * travels in every create command and the engine keeps it in the container's
 * config; a spec over this was accepted before and then could not be created.
 */
export const MAX_ENV_TOTAL_BYTES = 256 * 1024;

/**
 * Checks a spec from an API request and returns a normalized copy (defaults
 * filled in). Throws InvalidArgumentError naming the first bad field.
 */
export function validateSpec(input: ServerSpec | undefined, field = "spec"): ServerSpec {
  if (!input) throw new InvalidArgumentError(field, "required");
  const name = input.name.trim();
  if (!NAME_RE.test(name)) {
    throw new InvalidArgumentError(`${field}.name`, `"${truncate(input.name)}" is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
  }
  const image = input.image.trim();
  if (!image) throw new InvalidArgumentError(`${field}.image`, "required, e.g. \"postgres:16\"");
  if (image.length > 255 || !IMAGE_RE.test(image)) {
    throw new InvalidArgumentError(`${field}.image`, `"${truncate(image)}" is not a valid image reference (e.g. "registry.example.com/team/app:1.2")`);
  }
  if (input.command.length > MAX_COMMAND_ARGS) throw new InvalidArgumentError(`${field}.command`, `at most ${MAX_COMMAND_ARGS} arguments`);
  input.command.forEach((arg, i) => {
    if (arg.includes("\0")) throw new InvalidArgumentError(`${field}.command[${i}]`, "must not contain NUL bytes");
    if (Buffer.byteLength(arg) > MAX_VALUE_BYTES) throw new InvalidArgumentError(`${field}.command[${i}]`, `longer than ${MAX_VALUE_BYTES} bytes`);
  });
  const envKeys = Object.keys(input.env);
  if (envKeys.length > MAX_ENV) throw new InvalidArgumentError(`${field}.env`, `at most ${MAX_ENV} variables`);
  for (const k of envKeys) {
    if (!ENV_KEY_RE.test(k)) throw new InvalidArgumentError(`${field}.env`, `"${truncate(k)}" is not a valid variable name (letters, digits, '_', not starting with a digit)`);
    const v = input.env[k]!;
    if (v.includes("\0")) throw new InvalidArgumentError(`${field}.env.${k}`, "must not contain NUL bytes");
    if (Buffer.byteLength(v) > MAX_VALUE_BYTES) throw new InvalidArgumentError(`${field}.env.${k}`, `longer than ${MAX_VALUE_BYTES} bytes`);
  }
  const envBytes = envKeys.reduce((n, k) => n + Buffer.byteLength(k) + 1 + Buffer.byteLength(input.env[k]!), 0);
  if (envBytes > MAX_ENV_TOTAL_BYTES) {
    throw new InvalidArgumentError(`${field}.env`, `${envBytes} bytes in total (as KEY=value), more than ${MAX_ENV_TOTAL_BYTES} (256 KiB); keep large values in a file in the server's data directory`);
  }
  if (input.ports.length > MAX_PORTS) throw new InvalidArgumentError(`${field}.ports`, `at most ${MAX_PORTS} ports`);
  const seen = new Map<string, number>();
  const ports = input.ports.map((p, i) => {
    const f = `${field}.ports[${i}]`;
    if (p.hostPort < 1 || p.hostPort > 65535) throw new InvalidArgumentError(`${f}.host_port`, `${p.hostPort} is out of range 1-65535`);
    if (p.containerPort < 1 || p.containerPort > 65535) throw new InvalidArgumentError(`${f}.container_port`, `${p.containerPort} is out of range 1-65535`);
    const protocol = p.protocol === Protocol.UNSPECIFIED ? Protocol.TCP : p.protocol;
    if (protocol !== Protocol.TCP && protocol !== Protocol.UDP) throw new InvalidArgumentError(`${f}.protocol`, "must be PROTOCOL_TCP or PROTOCOL_UDP");
    const key = `${p.hostPort}/${protocol === Protocol.UDP ? "udp" : "tcp"}`;
    const dup = seen.get(key);
    if (dup !== undefined) throw new InvalidArgumentError(`${f}.host_port`, `host port ${key} is already used by ports[${dup}]`);
    seen.set(key, i);
    return create(PortMappingSchema, { hostPort: p.hostPort, containerPort: p.containerPort, protocol });
  });
  const dataMountPath = input.dataMountPath.trim() || "/data";
  if (!dataMountPath.startsWith("/") || dataMountPath.split("/").includes("..") || dataMountPath.includes("\0") || dataMountPath.length > 1024) {
    throw new InvalidArgumentError(`${field}.data_mount_path`, `"${truncate(dataMountPath)}" must be an absolute path inside the container without '..'`);
  }
  if (dataMountPath === "/") throw new InvalidArgumentError(`${field}.data_mount_path`, "cannot be '/'; use a directory such as /data");
  const restartPolicy = input.restartPolicy === RestartPolicy.UNSPECIFIED ? RestartPolicy.ON_FAILURE : input.restartPolicy;
  if (!(restartPolicy in RestartPolicy)) throw new InvalidArgumentError(`${field}.restart_policy`, "unknown value");
  const desiredState = input.desiredState === DesiredState.UNSPECIFIED ? DesiredState.RUNNING : input.desiredState;
  if (!(desiredState in DesiredState)) throw new InvalidArgumentError(`${field}.desired_state`, "unknown value");
  return create(ServerSpecSchema, {
    name,
    hostId: input.hostId.trim(),
    image,
    command: [...input.command],
    env: { ...input.env },
    ports,
    dataMountPath,
    restartPolicy,
    desiredState,
  });
}

/** Validates an id-or-name field; returns it trimmed. */
export function requireId(value: string, field = "id"): string {
  const v = value.trim();
  if (!v) throw new InvalidArgumentError(field, "required: a server id (srv_...) or name");
  if (v.length > 253) throw new InvalidArgumentError(field, "too long");
  return v;
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
