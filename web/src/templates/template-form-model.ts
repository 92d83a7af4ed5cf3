/**
 * The template editor's form as data: a Template to and from strings the
 * inputs edit, and the manager's field paths (`template.variables[1].rule.regex`,
 * `template.ports[0]`, `template.install.script`) mapped back onto the form's
 * inputs. The manager is the validator; the form only parses what it must
 * (numbers, sizes). Pure; tested in template-form-model.test.ts.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { HostPortMode, VariableKind, type Template, type TemplateSchema } from "@berth/proto/berth/v1/template_pb.js";
import { Protocol, RestartPolicy, type ResourceLimits, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { formatSize, parseSize, FormError, type FieldProblem } from "../servers/spec-form-model.js";
import { fieldOfTemplatePath } from "./variable-form.js";

export interface ImageRow {
  image: string;
  label: string;
}

export interface RuleForm {
  kind: VariableKind;
  nullable: boolean;
  /** The allowed values, one per line; none: any value. */
  allowed: string;
  /** Empty: no bound. */
  min: string;
  max: string;
  regex: string;
}

export interface VariableRow {
  /** Stable across reorders (React's key); not sent. */
  key: number;
  env: string;
  name: string;
  description: string;
  defaultValue: string;
  required: boolean;
  userEditable: boolean;
  hidden: boolean;
  secret: boolean;
  rule: RuleForm;
}

export interface PortForm {
  name: string;
  containerPort: string;
  udp: boolean;
  mode: HostPortMode;
  hostPort: string;
  hostPortMin: string;
  hostPortMax: string;
}

export interface TemplateForm {
  /** Create only (all-projects tokens): the project; empty: global. */
  project: string;
  name: string;
  description: string;
  images: ImageRow[];
  startup: string;
  startupShell: boolean;
  variables: VariableRow[];
  ports: PortForm[];
  dataMountPath: string;
  stopCommand: string;
  stopSignal: string;
  console: boolean;
  restartPolicy: RestartPolicy;
  /** Resource defaults: sizes like "512M", cores, processes ("none": no limit). Empty: none. */
  memory: string;
  memorySwap: string;
  cpus: string;
  pidsLimit: string;
  diskQuota: string;
  /** The template's other limits (CPU weight, CPU set, IO weight, stop over quota), kept as they are. */
  otherLimits: ResourceLimits | undefined;
  install: boolean;
  installImage: string;
  installScript: string;
  installEntrypoint: string;
  installTimeout: string;
  readyPattern: string;
}

/** The signals a template may stop its server with (Template.stop_signal); "" is none. */
export const STOP_SIGNALS = ["", "SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"] as const;

let nextKey = 1;
/** A new key for a variable row. */
export function rowKey(): number {
  return nextKey++;
}

export function emptyRule(): RuleForm {
  return { kind: VariableKind.STRING, nullable: false, allowed: "", min: "", max: "", regex: "" };
}

export function emptyVariable(): VariableRow {
  return { key: rowKey(), env: "", name: "", description: "", defaultValue: "", required: false, userEditable: true, hidden: false, secret: false, rule: emptyRule() };
}

export function emptyPort(): PortForm {
  return { name: "", containerPort: "", udp: false, mode: HostPortMode.SAME, hostPort: "", hostPortMin: "", hostPortMax: "" };
}

export function emptyTemplateForm(): TemplateForm {
  return {
    project: "",
    name: "",
    description: "",
    images: [{ image: "", label: "" }],
    startup: "",
    startupShell: false,
    variables: [],
    ports: [],
    dataMountPath: "",
    stopCommand: "",
    stopSignal: "",
    console: false,
    restartPolicy: RestartPolicy.ON_FAILURE,
    memory: "",
    memorySwap: "",
    cpus: "",
    pidsLimit: "",
    diskQuota: "",
    otherLimits: undefined,
    install: false,
    installImage: "",
    installScript: "",
    installEntrypoint: "",
    installTimeout: "",
    readyPattern: "",
  };
}

const num = (n: number | bigint) => (n ? String(n) : "");

export function formFromTemplate(t: Template): TemplateForm {
  const r = t.resources;
  const memory = Number(r?.memoryBytes ?? 0n);
  return {
    project: t.project,
    name: t.name,
    description: t.description,
    images: t.images.length ? t.images.map((i) => ({ image: i.image, label: i.label })) : [{ image: "", label: "" }],
    startup: t.startup,
    startupShell: t.startupShell,
    variables: t.variables.map((v) => ({
      key: rowKey(),
      env: v.env,
      name: v.name,
      description: v.description,
      defaultValue: v.defaultValue,
      required: v.required,
      userEditable: v.userEditable,
      hidden: v.hidden,
      secret: v.secret,
      rule: v.rule
        ? {
            kind: v.rule.kind,
            nullable: v.rule.nullable,
            allowed: v.rule.allowed.join("\n"),
            min: v.rule.min === undefined ? "" : String(v.rule.min),
            max: v.rule.max === undefined ? "" : String(v.rule.max),
            regex: v.rule.regex,
          }
        : { ...emptyRule(), kind: VariableKind.UNSPECIFIED },
    })),
    ports: t.ports.map((p) => ({
      name: p.name,
      containerPort: num(p.containerPort),
      udp: p.protocol === Protocol.UDP,
      mode: p.hostPortMode === HostPortMode.UNSPECIFIED ? HostPortMode.SAME : p.hostPortMode,
      hostPort: num(p.hostPort),
      hostPortMin: num(p.hostPortMin),
      hostPortMax: num(p.hostPortMax),
    })),
    dataMountPath: t.dataMountPath,
    stopCommand: t.stopCommand,
    stopSignal: t.stopSignal,
    console: t.console,
    restartPolicy: t.restartPolicy === RestartPolicy.UNSPECIFIED ? RestartPolicy.ON_FAILURE : t.restartPolicy,
    memory: memory ? formatSize(memory) : "",
    memorySwap: r?.memorySwapBytes ? formatSize(Number(r.memorySwapBytes)) : "",
    cpus: r?.cpus ? String(r.cpus) : "",
    pidsLimit: r?.pidsLimit === -1n ? "none" : num(r?.pidsLimit ?? 0n),
    diskQuota: r?.diskQuotaBytes ? formatSize(Number(r.diskQuotaBytes)) : "",
    otherLimits: r,
    install: t.install !== undefined,
    installImage: t.install?.image ?? "",
    installScript: t.install?.script ?? "",
    installEntrypoint: t.install?.entrypoint ?? "",
    installTimeout: num(t.install?.timeoutSeconds ?? 0),
    readyPattern: t.readyPattern,
  };
}

/** A copy of `t` to create anew (a built-in's copy): the same content, another name. */
export function copyForm(t: Template): TemplateForm {
  return { ...formFromTemplate(t), project: "", name: `${t.name} copy`.slice(0, 100) };
}

type Init = MessageInitShape<typeof TemplateSchema>;

/**
 * The template to send (CreateTemplate / UpdateTemplate); throws one
 * FormError naming every input that is not a number or size where one must
 * be. Everything else is the manager's to check.
 */
export function templateFromForm(f: TemplateForm): Init {
  const problems: FieldProblem[] = [];
  const whole = (text: string, field: string): number => {
    const t = text.trim();
    if (!t) return 0;
    if (/^\d+$/.test(t)) return Number(t);
    problems.push({ field, message: `"${t}" is not a whole number` });
    return 0;
  };
  const decimal = (text: string, field: string): number | undefined => {
    const t = text.trim();
    if (!t) return undefined;
    const n = Number(t);
    if (!Number.isFinite(n) || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
      problems.push({ field, message: `"${t}" is not a number` });
      return undefined;
    }
    return n;
  };
  const size = (text: string, field: string): bigint => {
    const t = text.trim();
    if (!t) return 0n;
    const n = parseSize(t);
    if (n === undefined) problems.push({ field, message: `"${t}" is not a size: write bytes or a number with K, M or G (e.g. 512M)` });
    return BigInt(n ?? 0);
  };
  const images = f.images.flatMap((i) => (i.image.trim() || i.label.trim() ? [{ image: i.image.trim(), label: i.label.trim() }] : []));
  const variables = f.variables.map((v, i) => {
    const r = v.rule;
    const allowed = r.allowed.split("\n").map((a) => a.replace(/\r$/, "")).filter((a) => a !== "");
    const min = decimal(r.min, `variables[${i}].rule.min`);
    const max = decimal(r.max, `variables[${i}].rule.max`);
    const hasRule = r.kind !== VariableKind.UNSPECIFIED || r.nullable || allowed.length > 0 || min !== undefined || max !== undefined || r.regex !== "";
    return {
      env: v.env.trim(),
      name: v.name.trim(),
      description: v.description,
      defaultValue: v.defaultValue,
      required: v.required,
      userEditable: v.userEditable,
      hidden: v.hidden,
      secret: v.secret,
      ...(hasRule ? { rule: { kind: r.kind, nullable: r.nullable, allowed, regex: r.regex, ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) } } : {}),
    };
  });
  const ports = f.ports.map((p, i) => ({
    name: p.name.trim(),
    containerPort: whole(p.containerPort, `ports[${i}].container_port`),
    protocol: p.udp ? Protocol.UDP : Protocol.TCP,
    hostPortMode: p.mode,
    hostPort: p.mode === HostPortMode.FIXED ? whole(p.hostPort, `ports[${i}].host_port`) : 0,
    hostPortMin: p.mode === HostPortMode.RANGE ? whole(p.hostPortMin, `ports[${i}].host_port_min`) : 0,
    hostPortMax: p.mode === HostPortMode.RANGE ? whole(p.hostPortMax, `ports[${i}].host_port_max`) : 0,
  }));
  const memoryBytes = size(f.memory, "resources.memory_bytes");
  const memorySwapBytes = size(f.memorySwap, "resources.memory_swap_bytes");
  const cpusText = f.cpus.trim();
  let cpus = 0;
  if (cpusText) {
    cpus = Number(cpusText);
    if (!/^\d+(\.\d+)?$/.test(cpusText)) problems.push({ field: "resources.cpus", message: `"${cpusText}" is not a number of cores (e.g. 0.5 or 2)` });
  }
  const pidsText = f.pidsLimit.trim().toLowerCase();
  let pidsLimit = 0n;
  if (pidsText === "none" || pidsText === "-1") pidsLimit = -1n;
  else if (/^\d+$/.test(pidsText)) pidsLimit = BigInt(pidsText);
  else if (pidsText) problems.push({ field: "resources.pids_limit", message: `"${f.pidsLimit}" is not a number of processes (or "none")` });
  const diskQuotaBytes = size(f.diskQuota, "resources.disk_quota_bytes");
  const o = f.otherLimits;
  const resources = {
    memoryBytes,
    memorySwapBytes,
    cpus,
    pidsLimit,
    diskQuotaBytes,
    cpuShares: o?.cpuShares ?? 0,
    cpusetCpus: o?.cpusetCpus ?? "",
    blkioWeight: o?.blkioWeight ?? 0,
    stopOverDiskQuota: (o?.stopOverDiskQuota ?? false) && diskQuotaBytes > 0n,
  };
  const anyLimit = Object.values(resources).some((x) => x !== 0 && x !== 0n && x !== "" && x !== false);
  const installTimeout = whole(f.installTimeout, "install.timeout_seconds");
  if (problems.length) throw new FormError(problems);
  return {
    project: f.project.trim(),
    name: f.name.trim(),
    description: f.description,
    images,
    startup: f.startup,
    startupShell: f.startupShell,
    variables,
    ports,
    dataMountPath: f.dataMountPath.trim(),
    stopCommand: f.stopCommand,
    stopSignal: f.stopSignal,
    console: f.console,
    restartPolicy: f.restartPolicy,
    ...(anyLimit ? { resources } : {}),
    ...(f.install ? { install: { image: f.installImage.trim(), script: f.installScript, entrypoint: f.installEntrypoint.trim(), timeoutSeconds: installTimeout } } : {}),
    readyPattern: f.readyPattern,
  };
}

/**
 * Every input key the form has, as the manager's paths under `template.`
 * name them: "name", "images[0].image", "variables[1].rule.regex",
 * "ports[0].host_port", "install.script", … plus the lists themselves
 * ("images", "variables", "ports", "resources").
 */
export function fieldKeysOf(f: Pick<TemplateForm, "images" | "variables" | "ports">): Set<string> {
  const keys = new Set([
    "project",
    "name",
    "description",
    "images",
    "startup",
    "startup_shell",
    "variables",
    "ports",
    "data_mount_path",
    "stop_command",
    "stop_signal",
    "console",
    "restart_policy",
    "resources",
    "resources.memory_bytes",
    "resources.memory_swap_bytes",
    "resources.cpus",
    "resources.pids_limit",
    "resources.disk_quota_bytes",
    "install",
    "install.image",
    "install.script",
    "install.entrypoint",
    "install.timeout_seconds",
    "ready_pattern",
  ]);
  f.images.forEach((_, i) => ["image", "label"].forEach((k) => keys.add(`images[${i}].${k}`)));
  f.variables.forEach((_, i) => {
    for (const k of ["env", "name", "description", "default_value", "rule.kind", "rule.allowed", "rule.min", "rule.max", "rule.regex"]) keys.add(`variables[${i}].${k}`);
  });
  f.ports.forEach((_, i) => {
    for (const k of ["name", "container_port", "protocol", "host_port_mode", "host_port", "host_port_min", "host_port_max"]) keys.add(`ports[${i}].${k}`);
  });
  return keys;
}

/** Paths that name a message as a whole, and the input that shows their problem. */
const WHOLE: [RegExp, (m: RegExpExecArray) => string][] = [
  [/^ports\[(\d+)\]$/, (m) => `ports[${m[1]}].host_port_mode`],
  [/^variables\[(\d+)\]\.rule$/, (m) => `variables[${m[1]}].rule.kind`],
  [/^resources$/, () => "resources.memory_swap_bytes"],
];

/**
 * The form input a manager's field path names (`template.variables[1].rule.regex`
 * → "variables[1].rule.regex"; `template.ports[0]` → its host port mode;
 * `template.variables[1].rule.allowed[3]` → the allowed list;
 * `template.variables["X"]` → X's default), or undefined when the form has
 * no such input (the problem is shown under the form).
 */
export function editorFieldOf(path: string, form: Pick<TemplateForm, "images" | "variables" | "ports">): string | undefined {
  const keys = fieldKeysOf(form);
  let p = path.replace(/^template\./, "");
  const byName = /^variables\["((?:[^"\\]|\\.)*)"\]/.exec(p);
  if (byName) {
    const i = form.variables.findIndex((v) => v.env.trim() === JSON.parse(`"${byName[1]!}"`));
    return i < 0 ? undefined : `variables[${i}].default_value`;
  }
  for (const [re, to] of WHOLE) {
    const m = re.exec(p);
    if (m) return to(m);
  }
  // The longest prefix the form has an input for: "variables[1].rule.allowed[3]" → "variables[1].rule.allowed".
  while (p) {
    if (keys.has(p)) return p;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) return undefined;
    p = p.slice(0, cut);
  }
  return undefined;
}

/**
 * The problems a failed CreateTemplate / UpdateTemplate brings to the editor:
 * every field violation of an InvalidArgument on its input (the rest, with
 * their path, under the form); a taken name on the name; anything else
 * (PermissionDenied, FailedPrecondition, …) as the manager worded it.
 */
export function problemsOfSave(err: unknown, form: Pick<TemplateForm, "images" | "variables" | "ports">): FieldProblem[] {
  if (err instanceof FormError) return [...err.problems];
  const e = ConnectError.from(err);
  if (e.code === Code.AlreadyExists) return [{ field: "name", message: e.rawMessage }];
  if (e.code !== Code.InvalidArgument) return [{ field: undefined, message: `${Code[e.code]}: ${e.rawMessage}` }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  if (violations.length === 0) {
    const m = /^([\w.[\]"]+): (.*)$/s.exec(e.rawMessage);
    const field = m ? editorFieldOf(m[1]!, form) : undefined;
    return [{ field, message: field && m ? m[2]! : `${Code[e.code]}: ${e.rawMessage}` }];
  }
  return violations.map((v) => {
    const field = editorFieldOf(v.field, form);
    return { field, message: field === undefined ? `${v.field}: ${v.description}` : v.description };
  });
}

/** The preview form's field a RenderTemplate problem names (`ref.variables["X"]` → X's example value, `ref.image` → the image). */
export function previewFieldOf(path: string): string | undefined {
  return fieldOfTemplatePath(path.replace(/^ref\./, "template.").replace(/^draft_(variables|image)\b/, "template.$1"));
}

/** The problems of a failed RenderTemplate: on the preview's example values, or under it. */
export function problemsOfPreview(err: unknown): FieldProblem[] {
  const e = ConnectError.from(err);
  if (e.code !== Code.InvalidArgument) return [{ field: undefined, message: `${Code[e.code]}: ${e.rawMessage}` }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  if (violations.length === 0) return [{ field: undefined, message: `${Code[e.code]}: ${e.rawMessage}` }];
  return violations.map((v) => {
    const field = previewFieldOf(v.field);
    return { field, message: field === undefined ? `${v.field.replace(/^(?:ref\.|draft\.|draft_)/, "")}: ${v.description}` : v.description };
  });
}

/** What a preview shows of a rendered spec: the command, the environment (sorted) and the ports. */
export function previewOf(spec: ServerSpec): { command: string[]; env: [string, string][]; ports: string[] } {
  return {
    command: [...spec.command],
    env: Object.entries(spec.env).sort(([a], [b]) => a.localeCompare(b)),
    ports: spec.ports.map((p) => `${p.hostPort ? p.hostPort : "(not published)"} → ${p.containerPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`),
  };
}

/** Moves item `from` of `list` to `to` (a new array; out-of-range moves change nothing). */
export function move<T>(list: readonly T[], from: number, to: number): T[] {
  if (from < 0 || from >= list.length || to < 0 || to >= list.length || from === to) return [...list];
  const out = [...list];
  const [x] = out.splice(from, 1);
  out.splice(to, 0, x!);
  return out;
}

/**
 * The problems still standing after an edit from `before` to `after`: the
 * problems of the inputs whose values changed go; a reorder or removal of
 * variables, ports or images drops all the problems of that list (their
 * indexes moved).
 */
export function problemsAfterEdit(problems: readonly FieldProblem[], before: TemplateForm, after: TemplateForm): FieldProblem[] {
  const lists = (["variables", "ports", "images"] as const).filter((k) => before[k].length !== after[k].length || (k === "variables" && before.variables.some((v, i) => after.variables[i]?.key !== v.key)));
  return problems.filter((p) => {
    if (p.field === undefined) return true;
    if (lists.some((l) => p.field === l || p.field!.startsWith(`${l}[`))) return false;
    return sameAt(before, after, p.field);
  });
}

/** Whether the input `field` holds the same value in both forms (approximately: by its list row). */
function sameAt(a: TemplateForm, b: TemplateForm, field: string): boolean {
  const m = /^(variables|ports|images)\[(\d+)\]/.exec(field);
  if (m) {
    const k = m[1] as "variables" | "ports" | "images";
    const i = Number(m[2]);
    return JSON.stringify(a[k][i]) === JSON.stringify(b[k][i]);
  }
  const strip = (f: TemplateForm) => ({ ...f, variables: [], ports: [], images: [], otherLimits: undefined });
  const top = FORM_OF[field.split(".")[0]!];
  if (top) return top.every((k) => JSON.stringify(a[k]) === JSON.stringify(b[k]));
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

const FORM_OF: Record<string, (keyof TemplateForm)[]> = {
  project: ["project"],
  name: ["name"],
  description: ["description"],
  startup: ["startup", "startupShell", "variables"],
  startup_shell: ["startupShell"],
  data_mount_path: ["dataMountPath"],
  stop_command: ["stopCommand"],
  stop_signal: ["stopSignal"],
  console: ["console"],
  restart_policy: ["restartPolicy"],
  resources: ["memory", "memorySwap", "cpus", "pidsLimit", "diskQuota"],
  install: ["install", "installImage", "installScript", "installEntrypoint", "installTimeout"],
  ready_pattern: ["readyPattern"],
};

/** "Host port: …" in words, for a port's mode. */
export const HOST_PORT_MODES: { mode: HostPortMode; label: string }[] = [
  { mode: HostPortMode.SAME, label: "same number as the container port" },
  { mode: HostPortMode.FIXED, label: "a fixed host port" },
  { mode: HostPortMode.RANGE, label: "the first free port of a range" },
  { mode: HostPortMode.NONE, label: "not published" },
];
