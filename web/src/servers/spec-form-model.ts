/**
 * The server spec as a form edits it (strings), to and from `ServerSpec`, and
 * how the manager's validation messages map back onto the form's fields.
 * The manager is the validator; the form only parses what it must (command
 * words, KEY=VALUE lines, numbers). Pure; tested in spec-form-model.test.ts.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { DesiredState, Protocol, RestartPolicy, type ServerSpec, type ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { joinWords, splitWords } from "../ui/format.js";

export interface PortRow {
  host: string;
  container: string;
  udp: boolean;
}

export interface SpecForm {
  name: string;
  hostId: string;
  image: string;
  command: string;
  env: string;
  /**
   * Env keys whose values are secret: stored encrypted, shown as ******** to
   * everyone; leaving ******** as a value keeps the stored one. Comma- or
   * space-separated.
   */
  secretEnv: string;
  ports: PortRow[];
  dataMountPath: string;
  restartPolicy: RestartPolicy;
  desiredState: DesiredState;
  /** Capabilities given back, from GIVABLE_CAPABILITIES. */
  capAdd: string[];
  /** Log rotation: a size like "10M", "512K" or bytes; empty means the manager's default. */
  logMaxSize: string;
  /** Log files kept; empty means the manager's default. */
  logMaxFiles: string;
}

/**
 * The capabilities a spec may give back (the contract's rule on
 * ServerSpec.cap_add; docs/security.md says why each is dropped).
 */
export const GIVABLE_CAPABILITIES = ["AUDIT_WRITE", "FSETID", "NET_RAW", "SETPCAP", "SYS_CHROOT"] as const;

const UNITS: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** "10M" → 10485760; "512K", "65536", "1 GiB" too. Undefined when it is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+)\s*([KMG]?)(?:i?B)?$/i.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : undefined;
}

/** Bytes in the largest binary unit that divides them: 10485760 → "10M". */
export function formatSize(bytes: number): string {
  for (const u of ["G", "M", "K"]) if (bytes % UNITS[u]! === 0) return `${bytes / UNITS[u]!}${u}`;
  return String(bytes);
}

export function emptyForm(): SpecForm {
  return {
    name: "",
    hostId: "",
    image: "",
    command: "",
    env: "",
    secretEnv: "",
    ports: [],
    dataMountPath: "/data",
    restartPolicy: RestartPolicy.ON_FAILURE,
    desiredState: DesiredState.RUNNING,
    capAdd: [],
    logMaxSize: "",
    logMaxFiles: "",
  };
}

export function formFromSpec(s: ServerSpec): SpecForm {
  return {
    name: s.name,
    hostId: s.hostId,
    image: s.image,
    command: joinWords(s.command),
    env: Object.entries(s.env)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join("\n"),
    secretEnv: s.secretEnv.join(", "),
    ports: s.ports.map((p) => ({ host: String(p.hostPort), container: String(p.containerPort), udp: p.protocol === Protocol.UDP })),
    dataMountPath: s.dataMountPath,
    restartPolicy: s.restartPolicy,
    desiredState: s.desiredState,
    capAdd: [...s.capAdd],
    logMaxSize: s.logMaxSizeBytes ? formatSize(s.logMaxSizeBytes) : "",
    logMaxFiles: s.logMaxFiles ? String(s.logMaxFiles) : "",
  };
}

/** A form field a message is about: "name", "ports", "ports.1.host", ... */
export type FieldKey = string;

export class FormError extends Error {
  constructor(
    readonly field: FieldKey,
    message: string,
  ) {
    super(message);
  }
}

function port(text: string, field: FieldKey): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new FormError(field, `"${text}" is not a port number`);
  return Number(t);
}

/** Builds the spec to send; throws FormError for what cannot be parsed at all. */
export function specFromForm(f: SpecForm): MessageInitShape<typeof ServerSpecSchema> {
  let command: string[];
  try {
    command = splitWords(f.command);
  } catch (e) {
    throw new FormError("command", (e as Error).message);
  }
  const env: Record<string, string> = {};
  f.env.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new FormError("env", `line ${i + 1}: write KEY=VALUE`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  const secretEnv = f.secretEnv.split(/[\s,]+/).filter(Boolean);
  const missing = secretEnv.find((k) => !(k in env));
  if (missing !== undefined) throw new FormError("secretEnv", `${missing} is not set in Environment; add ${missing}=VALUE there`);
  const ports = f.ports
    .filter((p) => p.host.trim() || p.container.trim())
    .map((p, i) => ({
      hostPort: port(p.host, `ports.${i}.host`),
      containerPort: port(p.container || p.host, `ports.${i}.container`),
      protocol: p.udp ? Protocol.UDP : Protocol.TCP,
    }));
  return {
    name: f.name.trim(),
    hostId: f.hostId,
    image: f.image.trim(),
    command,
    env,
    secretEnv,
    ports,
    dataMountPath: f.dataMountPath.trim(),
    restartPolicy: f.restartPolicy,
    desiredState: f.desiredState,
    capAdd: [...f.capAdd].sort(),
    logMaxSizeBytes: logSize(f.logMaxSize),
    logMaxFiles: logFiles(f.logMaxFiles),
  };
}

function logSize(text: string): number {
  if (!text.trim()) return 0;
  const n = parseSize(text);
  if (n === undefined) throw new FormError("logMaxSize", `"${text}" is not a size: write bytes or a number with K, M or G (e.g. 10M)`);
  return n;
}

function logFiles(text: string): number {
  if (!text.trim()) return 0;
  if (!/^\d+$/.test(text.trim())) throw new FormError("logMaxFiles", `"${text}" is not a number of files`);
  return Number(text.trim());
}

/**
 * The form field an InvalidArgument message names (the first, when it names
 * several): "spec.ports[1].host_port: …" → "ports.1.host";
 * 'spec.env["FOO"]: …' → "env". Undefined when it names none.
 */
export function fieldOfMessage(message: string): FieldKey | undefined {
  const m = /^(?:spec\.)?([a-z_]+)(?:\[(\d+)\]|\["(?:[^"\\]|\\.)*"\])?(?:\.([A-Za-z_][A-Za-z0-9_]*))?:/.exec(message);
  if (!m) return undefined;
  const [, field, index, sub] = m;
  const map: Record<string, string> = { name: "name", image: "image", command: "command", env: "env", ports: "ports", data_mount_path: "dataMountPath", restart_policy: "restartPolicy", desired_state: "desiredState", host_id: "hostId", cap_add: "capAdd", secret_env: "secretEnv", log_max_size_bytes: "logMaxSize", log_max_files: "logMaxFiles" };
  const key = map[field!];
  if (!key) return undefined;
  if (key === "ports" && index !== undefined) return `ports.${index}.${sub === "container_port" ? "container" : "host"}`;
  return key;
}

/** Port conflicts in a FailedPrecondition message, with the free port the manager suggests. */
export function portSuggestions(message: string): { port: number; udp: boolean; usedBy: string; suggestion: number | undefined }[] {
  const out: { port: number; udp: boolean; usedBy: string; suggestion: number | undefined }[] = [];
  // Another project's server is not named: "used by a server in another project".
  const re = /host port (\d+)\/(tcp|udp) is used by (?:server "([^"]*)"|(a server in another project))(?: \(try (\d+)\))?/g;
  for (let m = re.exec(message); m; m = re.exec(message)) {
    out.push({ port: Number(m[1]), udp: m[2] === "udp", usedBy: m[3] ?? m[4]!, suggestion: m[5] ? Number(m[5]) : undefined });
  }
  return out;
}
