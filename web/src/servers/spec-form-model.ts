/**
 * The server spec as a form edits it (strings), to and from `ServerSpec`, and
 * how the manager's validation problems map back onto the form's fields.
 * The manager is the validator; the form only parses what it must (KEY=VALUE
 * lines, numbers). Pure; tested in spec-form-model.test.ts.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { DesiredState, Protocol, RestartPolicy, type ResourceLimitsSchema, type ServerSpec, type ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";

export interface PortRow {
  host: string;
  container: string;
  udp: boolean;
}

export interface SpecForm {
  name: string;
  hostId: string;
  image: string;
  /** The argv, one argument per row, exactly as the spec holds it (spaces, quotes, empty arguments and all). */
  command: string[];
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
  /** Keep the main process's stdin open: the Console tab can send it lines. */
  console: boolean;
  /** Written to the console to stop the server (console only); empty: SIGTERM at once. */
  stopCommand: string;
  /**
   * Carried from the spec and sent back unchanged (the form has no input for
   * them; a template or the API sets them): ServerSpec.ready_pattern and
   * stop_signal. An edit must not drop them.
   */
  readyPattern: string;
  stopSignal: string;
  /** One key=value per line (ServerSpec.labels). */
  labels: string;
  /** Limits (ResourceLimits); each empty: none (pids: the manager's default). Sizes like "512M". */
  memLimit: string;
  memSwap: string;
  /** Cores, decimals allowed ("0.5"). */
  cpus: string;
  cpusetCpus: string;
  /** A number, or "none" (no limit); empty: the manager's default. */
  pidsLimit: string;
  cpuShares: string;
  blkioWeight: string;
  /** A soft quota of the data directory ("2G"); empty: none. */
  diskQuota: string;
  stopOverDiskQuota: boolean;
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
    command: [],
    env: "",
    secretEnv: "",
    ports: [],
    dataMountPath: "/data",
    restartPolicy: RestartPolicy.ON_FAILURE,
    desiredState: DesiredState.RUNNING,
    capAdd: [],
    logMaxSize: "",
    logMaxFiles: "",
    console: false,
    stopCommand: "",
    readyPattern: "",
    stopSignal: "",
    labels: "",
    ...NO_LIMITS,
  };
}

const NO_LIMITS = { memLimit: "", memSwap: "", cpus: "", cpusetCpus: "", pidsLimit: "", cpuShares: "", blkioWeight: "", diskQuota: "", stopOverDiskQuota: false };

export function formFromSpec(s: ServerSpec): SpecForm {
  return {
    name: s.name,
    hostId: s.hostId,
    image: s.image,
    command: [...s.command],
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
    console: s.console,
    stopCommand: s.stopCommand,
    readyPattern: s.readyPattern,
    stopSignal: s.stopSignal,
    labels: Object.entries(s.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join("\n"),
    ...limitsForm(s.resources),
  };
}

function limitsForm(r: ServerSpec["resources"]): Pick<SpecForm, keyof typeof NO_LIMITS> {
  if (!r) return { ...NO_LIMITS };
  const memory = Number(r.memoryBytes);
  const swap = Number(r.memorySwapBytes);
  return {
    memLimit: memory ? formatSize(memory) : "",
    // Swap equal to memory is no swap: shown empty.
    memSwap: swap && swap !== memory ? formatSize(swap) : "",
    cpus: r.cpus ? String(r.cpus) : "",
    cpusetCpus: r.cpusetCpus,
    pidsLimit: r.pidsLimit === -1n ? "none" : r.pidsLimit ? String(r.pidsLimit) : "",
    cpuShares: r.cpuShares ? String(r.cpuShares) : "",
    blkioWeight: r.blkioWeight ? String(r.blkioWeight) : "",
    diskQuota: r.diskQuotaBytes ? formatSize(Number(r.diskQuotaBytes)) : "",
    stopOverDiskQuota: r.stopOverDiskQuota,
  };
}

/** The limits to send, or undefined when the form sets none. Parse problems go to `problems`. */
function limitsFromForm(f: SpecForm, problems: FieldProblem[]): MessageInitShape<typeof ResourceLimitsSchema> | undefined {
  const size = (field: "memLimit" | "memSwap" | "diskQuota"): bigint => {
    const t = f[field].trim();
    if (!t) return 0n;
    const n = parseSize(t);
    if (n === undefined) problems.push({ field, message: `"${t}" is not a size: write bytes or a number with K, M or G (e.g. 512M)` });
    return BigInt(n ?? 0);
  };
  const whole = (field: "cpuShares" | "blkioWeight"): number => {
    const t = f[field].trim();
    if (!t) return 0;
    if (/^\d+$/.test(t)) return Number(t);
    problems.push({ field, message: `"${t}" is not a whole number` });
    return 0;
  };
  // In the form's order, so problems are listed as the fields are shown.
  const memoryBytes = size("memLimit");
  const memorySwapBytes = size("memSwap");
  const cpusText = f.cpus.trim();
  let cpus = 0;
  if (cpusText) {
    cpus = Number(cpusText);
    if (!/^\d+(\.\d+)?$/.test(cpusText) || !Number.isFinite(cpus)) problems.push({ field: "cpus", message: `"${cpusText}" is not a number of cores (e.g. 0.5 or 2)` });
  }
  const pidsText = f.pidsLimit.trim().toLowerCase();
  let pidsLimit = 0n;
  if (pidsText === "none" || pidsText === "-1") pidsLimit = -1n;
  else if (/^\d+$/.test(pidsText)) pidsLimit = BigInt(pidsText);
  else if (pidsText) problems.push({ field: "pidsLimit", message: `"${f.pidsLimit}" is not a number of processes (or "none")` });
  const r = {
    memoryBytes,
    memorySwapBytes,
    cpus,
    cpusetCpus: f.cpusetCpus.trim(),
    pidsLimit,
    cpuShares: whole("cpuShares"),
    blkioWeight: whole("blkioWeight"),
    diskQuotaBytes: size("diskQuota"),
    stopOverDiskQuota: f.stopOverDiskQuota,
  };
  const any = r.memoryBytes || r.memorySwapBytes || r.cpus || r.cpuShares || r.cpusetCpus || r.pidsLimit || r.blkioWeight || r.diskQuotaBytes || r.stopOverDiskQuota;
  return any ? r : undefined;
}

/** A form field a problem is about: "name", "ports", "ports.1.host", "command.0", ... */
export type FieldKey = string;

/** One thing wrong with what the form would send; `field` undefined when it is about no field of the form. */
export interface FieldProblem {
  field: FieldKey | undefined;
  message: string;
}

/** What the form cannot send, every problem at once. `field` is the first problem's. */
export class FormError extends Error {
  constructor(readonly problems: readonly FieldProblem[]) {
    super(problems.map((p) => p.message).join("; "));
  }

  get field(): FieldKey | undefined {
    return this.problems[0]?.field;
  }
}

function port(text: string, field: FieldKey, problems: FieldProblem[]): number {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  problems.push({ field, message: `"${text}" is not a port number` });
  return 0;
}

/** The form rows of the ports sent (rows left empty are not sent): the spec's ports[i] is the form's row `sentPortRows(f)[i]`. */
export function sentPortRows(f: Pick<SpecForm, "ports">): number[] {
  return f.ports.flatMap((p, i) => (p.host.trim() || p.container.trim() ? [i] : []));
}

/** Builds the spec to send; throws one FormError naming everything that cannot be parsed at all. */
export function specFromForm(f: SpecForm): MessageInitShape<typeof ServerSpecSchema> {
  const problems: FieldProblem[] = [];
  const env: Record<string, string> = {};
  f.env.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const eq = line.indexOf("=");
    if (eq <= 0) problems.push({ field: "env", message: `line ${i + 1}: write KEY=VALUE` });
    else env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  const labels: Record<string, string> = {};
  f.labels.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const eq = line.indexOf("=");
    if (eq <= 0) problems.push({ field: "labels", message: `line ${i + 1}: write key=value (e.g. tier=prod)` });
    else labels[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  });
  const secretEnv = f.secretEnv.split(/[\s,]+/).filter(Boolean);
  const missing = secretEnv.find((k) => !(k in env));
  if (missing !== undefined) problems.push({ field: "secretEnv", message: `${missing} is not set in Environment; add ${missing}=VALUE there` });
  const ports = sentPortRows(f).map((row) => {
    const p = f.ports[row]!;
    return {
      hostPort: port(p.host, `ports.${row}.host`, problems),
      containerPort: port(p.container || p.host, `ports.${row}.${p.container.trim() ? "container" : "host"}`, problems),
      protocol: p.udp ? Protocol.UDP : Protocol.TCP,
    };
  });
  const logMaxSizeBytes = logSize(f.logMaxSize, problems);
  const logMaxFiles = logFiles(f.logMaxFiles, problems);
  const resources = limitsFromForm(f, problems);
  // One problem per field: a bad host port is not reported again as its container port.
  const seen = new Set<FieldKey | undefined>();
  const unique = problems.filter((p) => !seen.has(p.field) && seen.add(p.field));
  if (unique.length) throw new FormError(unique);
  return {
    name: f.name.trim(),
    hostId: f.hostId,
    image: f.image.trim(),
    command: [...f.command],
    env,
    secretEnv,
    ports,
    dataMountPath: f.dataMountPath.trim(),
    restartPolicy: f.restartPolicy,
    desiredState: f.desiredState,
    capAdd: [...f.capAdd].sort(),
    logMaxSizeBytes,
    logMaxFiles,
    console: f.console,
    stopCommand: f.console ? f.stopCommand.trim() : "",
    readyPattern: f.readyPattern,
    stopSignal: f.stopSignal,
    labels,
    ...(resources ? { resources } : {}),
  };
}

function logSize(text: string, problems: FieldProblem[]): number {
  if (!text.trim()) return 0;
  const n = parseSize(text);
  if (n === undefined) problems.push({ field: "logMaxSize", message: `"${text}" is not a size: write bytes or a number with K, M or G (e.g. 10M)` });
  return n ?? 0;
}

function logFiles(text: string, problems: FieldProblem[]): number {
  if (!text.trim()) return 0;
  if (/^\d+$/.test(text.trim())) return Number(text.trim());
  problems.push({ field: "logMaxFiles", message: `"${text}" is not a number of files` });
  return 0;
}

const FIELD_OF_SPEC: Record<string, FieldKey> = {
  name: "name",
  image: "image",
  command: "command",
  env: "env",
  ports: "ports",
  data_mount_path: "dataMountPath",
  restart_policy: "restartPolicy",
  desired_state: "desiredState",
  host_id: "hostId",
  cap_add: "capAdd",
  secret_env: "secretEnv",
  log_max_size_bytes: "logMaxSize",
  log_max_files: "logMaxFiles",
  console: "console",
  stop_command: "stopCommand",
  labels: "labels",
};

const LIMIT_FIELDS: Record<string, FieldKey> = {
  memory_bytes: "memLimit",
  memory_swap_bytes: "memSwap",
  cpus: "cpus",
  cpuset_cpus: "cpusetCpus",
  pids_limit: "pidsLimit",
  cpu_shares: "cpuShares",
  blkio_weight: "blkioWeight",
  disk_quota_bytes: "diskQuota",
  stop_over_disk_quota: "diskQuota",
};

/**
 * The form field a request field path names, as the manager writes it
 * (a google.rpc.BadRequest violation's `field`, or the head of an
 * InvalidArgument message): "spec.ports[1].host_port" → "ports.1.host",
 * "spec.command[2]" → "command.2", 'spec.env["FOO"]' → "env", "project" →
 * "project". `form` maps the spec's ports back to the form's rows (rows left
 * empty are not sent; an empty container port is the host port's). Undefined
 * when it names no field of the form.
 */
export function fieldOfPath(path: string, form?: Pick<SpecForm, "ports">): FieldKey | undefined {
  if (path === "project") return "project";
  const m = /^(?:spec\.)?([a-z_]+)(?:\[(\d+)\]|\["(?:[^"\\]|\\.)*"\])?(?:\.([A-Za-z_][A-Za-z0-9_]*))?$/.exec(path);
  if (!m) return undefined;
  const [, field, index, sub] = m;
  // The message-level rule (swap against memory) is reported on "resources" itself.
  if (field === "resources") return sub ? LIMIT_FIELDS[sub] : "memSwap";
  const key = FIELD_OF_SPEC[field!];
  if (!key) return undefined;
  if (key === "command" && index !== undefined) return `command.${index}`;
  if (key === "ports" && index !== undefined) {
    const row = form ? sentPortRows(form)[Number(index)] : Number(index);
    if (row === undefined) return "ports";
    // A container port left empty is the host port's: its problem is the host port's.
    const container = sub === "container_port" && (!form || form.ports[row]!.container.trim() !== "");
    return `ports.${row}.${container ? "container" : "host"}`;
  }
  return key;
}

/**
 * The form field an InvalidArgument message names (the first, when it names
 * several): "spec.ports[1].host_port: …" → "ports.1.host";
 * 'spec.env["FOO"]: …' → "env". Undefined when it names none.
 */
export function fieldOfMessage(message: string, form?: Pick<SpecForm, "ports">): FieldKey | undefined {
  const m = /^((?:spec\.)?[a-z_]+(?:\[\d+\]|\["(?:[^"\\]|\\.)*"\])?(?:\.[A-Za-z_][A-Za-z0-9_]*)?):/.exec(message);
  return m ? fieldOfPath(m[1]!, form) : undefined;
}

/**
 * The problems in an answer of the manager, each on the form field it names:
 * every `google.rpc.BadRequest` field violation when the error carries them,
 * else the message, on the field it starts with. `violations` as the dashboard
 * decoded them from the error's details.
 */
export function problemsOfAnswer(
  answer: { message: string; violations: readonly { field: string; description: string }[] },
  form?: Pick<SpecForm, "ports">,
): FieldProblem[] {
  if (answer.violations.length === 0) return [{ field: fieldOfMessage(answer.message, form), message: answer.message }];
  const seen = new Set<string>();
  return answer.violations.flatMap((v) => {
    const field = fieldOfPath(v.field, form);
    // A violation on no field of the form keeps its path, so it still says what it is about.
    const message = field === undefined ? `${v.field}: ${v.description}` : v.description;
    // Two paths onto one field (a host port and the container port taken from it) say it once.
    const key = `${field}\u0000${message}`;
    if (seen.has(key)) return [];
    seen.add(key);
    return [{ field, message }];
  });
}

/** The form's value of `key` (a field, a port row's cell, one argument), comparable with ===. */
function valueAt(form: SpecForm & { project?: string }, key: FieldKey): unknown {
  const [head, index, cell] = key.split(".");
  if (head === "ports" && index !== undefined) {
    const row = form.ports[Number(index)];
    return row === undefined ? undefined : cell === "container" ? row.container : `${row.host}/${row.udp ? "udp" : "tcp"}`;
  }
  if (head === "command" && index !== undefined) return form.command[Number(index)];
  const v = (form as unknown as Record<string, unknown>)[head!];
  return typeof v === "object" ? JSON.stringify(v) : v;
}

/**
 * The problems still standing after an edit from `before` to `after`: a
 * problem goes away once the value of its field changes. Problems about no
 * field stay until the next submit.
 */
export function problemsAfterEdit(
  problems: readonly FieldProblem[],
  before: SpecForm & { project?: string },
  after: SpecForm & { project?: string },
): readonly FieldProblem[] {
  const left = problems.filter((p) => p.field === undefined || valueAt(before, p.field) === valueAt(after, p.field));
  return left.length === problems.length ? problems : left;
}

/** The fields in the order the form shows them. */
const FORM_ORDER = ["name", "project", "hostId", "dataMountPath", "image", "command", "env", "secretEnv", "labels", "ports", "restartPolicy", "desiredState", "logMaxSize", "logMaxFiles", "memLimit", "memSwap", "cpus", "cpusetCpus", "pidsLimit", "cpuShares", "blkioWeight", "diskQuota", "capAdd"];

/** Orders field keys as the form shows them: "name" before "ports.0.host" before "ports.1.host" before "capAdd". */
export function compareFields(a: FieldKey, b: FieldKey): number {
  const rank = (k: FieldKey) => {
    const [head, index, cell] = k.split(".");
    const at = FORM_ORDER.indexOf(head!);
    return [at < 0 ? FORM_ORDER.length : at, index === undefined ? -1 : Number(index), cell === "container" ? 1 : 0];
  };
  const [x, y] = [rank(a), rank(b)];
  return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
}

/** What the form calls a field, for a summary of problems: "Host port 2", "Argument 1". */
export function fieldLabel(key: FieldKey): string {
  const [head, index, cell] = key.split(".");
  if (head === "ports" && index !== undefined) return `${cell === "container" ? "Container" : "Host"} port ${Number(index) + 1}`;
  if (head === "command" && index !== undefined) return `Argument ${Number(index) + 1}`;
  const labels: Record<string, string> = {
    name: "Name",
    project: "Project",
    hostId: "Host",
    image: "Image",
    command: "Command",
    env: "Environment",
    labels: "Labels",
    secretEnv: "Secret keys",
    ports: "Ports",
    dataMountPath: "Data mount path",
    restartPolicy: "Restart policy",
    desiredState: "Desired state",
    capAdd: "Capabilities",
    logMaxSize: "Log size",
    logMaxFiles: "Log files",
    memLimit: "Memory limit",
    memSwap: "Memory + swap",
    cpus: "CPUs",
    cpusetCpus: "CPU set",
    pidsLimit: "Process limit",
    cpuShares: "CPU weight",
    blkioWeight: "IO weight",
    diskQuota: "Disk quota",
  };
  return labels[head!] ?? key;
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
