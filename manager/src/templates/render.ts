/**
 * Templates to server specs, without I/O: checking a template, validating
 * the variables an operator gives, and rendering a ServerSpec
 * (docs/templates.md).
 *
 * The startup command is split into argv words like a shell splits them
 * (quotes and backslashes), and only then are `{{VAR}}` placeholders
 * replaced, so a value always stays inside the one word it was written in:
 * `--motd {{MOTD}}` with MOTD = `hi; rm -rf /` is two words, the second of
 * them the whole value. A template whose startup needs a shell
 * (`startup_shell`) runs as `/bin/sh -c <startup>` with each placeholder
 * turned into a reference `${VAR}` to the environment: values are expanded by
 * the shell, never parsed as shell code.
 */
import { create } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol, ResourceLimitsSchema, ServerInstallSchema, ServerSpecSchema, type PortMapping, type ResourceLimits, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { HostPortMode, VariableKind, type Template, type TemplateVariable } from "@berth/proto/berth/v1/template_pb.js";
import { InvalidArgumentError, type FieldViolation } from "../errors.js";
import { unsafeRegexReason } from "./regex-safety.js";

/**
 * Placeholders berth fills in itself, also set as environment variables of
 * the container (as Pterodactyl's Wings does):
 * - SERVER_MEMORY: the memory limit in MiB (rounded down), "0" without one;
 * - SERVER_PORT: the first template port's container port (what the process
 *   listens on), "" without ports;
 * - SERVER_IP: "0.0.0.0" (listen on every address of the container).
 */
export const BUILTIN_VARIABLES = ["SERVER_MEMORY", "SERVER_PORT", "SERVER_IP"] as const;
const BUILTINS: ReadonlySet<string> = new Set(BUILTIN_VARIABLES);

/** `{{NAME}}`, spaces inside the braces allowed. */
const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
const PLACEHOLDER_AT = /\{\{[^{}]*\}\}/y;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** ServerSpec's bound on an env value and a command word. */
export const MAX_VALUE_BYTES = 32768;
const MIB = 1024n * 1024n;

/** One word of a split startup. `quoted`: some of it was in quotes (so it stays even when it renders empty). */
export interface StartupWord {
  text: string;
  quoted: boolean;
}

/** A startup a shell would read otherwise than berth's splitting does. */
export class StartupSyntaxError extends Error {}

/**
 * Splits a startup command into words: blanks separate words, '...' keeps
 * everything literally, "..." keeps everything but \" \\ \$ \`, and \ outside
 * quotes makes the next character literal. Shell syntax berth does not run
 * (; & | < > ( ) $ `) must be quoted, or the template must use startup_shell.
 */
export function splitStartup(startup: string): StartupWord[] {
  const words: StartupWord[] = [];
  let cur: StartupWord | undefined;
  const word = () => (cur ??= { text: "", quoted: false });
  const end = () => {
    if (cur) words.push(cur);
    cur = undefined;
  };
  for (let i = 0; i < startup.length; i++) {
    const c = startup[i]!;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      end();
    } else if (c === "'") {
      const close = startup.indexOf("'", i + 1);
      if (close < 0) throw new StartupSyntaxError(`the ' at character ${i + 1} is not closed; close it or escape it as \\'`);
      const w = word();
      w.text += startup.slice(i + 1, close);
      w.quoted = true;
      i = close;
    } else if (c === '"') {
      const w = word();
      w.quoted = true;
      let j = i + 1;
      for (; j < startup.length && startup[j] !== '"'; j++) {
        const d = startup[j]!;
        if (d === "\\" && j + 1 < startup.length && '"\\$`\n'.includes(startup[j + 1]!)) {
          j++;
          if (startup[j] !== "\n") w.text += startup[j];
        } else if (d === "$" || d === "`") {
          throw new StartupSyntaxError(`"${d}" at character ${j + 1} is shell syntax berth does not run; escape it as \\${d} or set startup_shell`);
        } else w.text += d;
      }
      if (j >= startup.length) throw new StartupSyntaxError(`the " at character ${i + 1} is not closed; close it or escape it as \\"`);
      i = j;
    } else if (c === "\\") {
      if (i + 1 >= startup.length) throw new StartupSyntaxError("the startup ends with a lone \\; remove it or write \\\\");
      i++;
      if (startup[i] !== "\n") word().text += startup[i];
      word().quoted = true;
    } else if (c === "{" && placeholderEnd(startup, i) > 0) {
      // A placeholder is one unit, spaces inside its braces included.
      const close = placeholderEnd(startup, i);
      word().text += startup.slice(i, close);
      i = close - 1;
    } else if (";&|<>()$`".includes(c)) {
      throw new StartupSyntaxError(`"${c}" at character ${i + 1} is shell syntax berth does not run; quote it ('${c}') or set startup_shell to run the startup with /bin/sh -c`);
    } else {
      word().text += c;
    }
  }
  end();
  return words;
}

/** Where the placeholder starting at `i` ends (the index after its "}}"), or -1 when none starts there. */
function placeholderEnd(text: string, i: number): number {
  PLACEHOLDER_AT.lastIndex = i;
  return PLACEHOLDER_AT.test(text) ? PLACEHOLDER_AT.lastIndex : -1;
}

/** The placeholder names in a text, in order of first use. */
export function placeholders(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(PLACEHOLDER)) out.add(m[1]!.trim());
  return [...out];
}

const label = (v: TemplateVariable) => (v.name && v.name !== v.env ? `${v.env} (${v.name})` : v.env);
const varPath = (env: string) => `variables[${JSON.stringify(env)}]`;

/**
 * What is wrong with a template itself (not with the values given): field
 * paths into the template, each message saying what to change. Empty: the
 * template can be rendered. Regular expressions that can backtrack
 * catastrophically are refused (regex-safety.ts).
 */
export function checkTemplate(t: Template): FieldViolation[] {
  const out: FieldViolation[] = [];
  const add = (field: string, description: string) => out.push({ field, description });
  if (t.images.length === 0) add("images", "add at least one image a server of this template runs");
  const seen = new Map<string, number>();
  t.variables.forEach((v, i) => {
    if (!ENV_NAME.test(v.env)) add(`variables[${i}].env`, "a variable name is letters, digits and '_', not starting with a digit");
    else if (BUILTINS.has(v.env)) add(`variables[${i}].env`, `${v.env} is set by berth itself (${BUILTIN_VARIABLES.join(", ")}); rename the variable`);
    const first = seen.get(v.env);
    if (first !== undefined) add(`variables[${i}].env`, `${v.env} is already variables[${first}]; each variable needs its own env name`);
    else seen.set(v.env, i);
    const r = v.rule;
    if (r?.regex) {
      const err = regexError(r.regex);
      const unsafe = unsafeRegexReason(r.regex);
      if (err) add(`variables[${i}].rule.regex`, `not a valid JavaScript regular expression (${err}); fix or remove it`);
      else if (unsafe) add(`variables[${i}].rule.regex`, `refused: ${unsafe}`);
    }
    if (r && r.min !== undefined && r.max !== undefined && r.min > r.max) add(`variables[${i}].rule.min`, `min (${r.min}) is above max (${r.max}); swap them`);
  });
  const known = (name: string) => seen.has(name) || BUILTINS.has(name);
  const unknown = placeholders(t.startup).filter((n) => !known(n));
  if (unknown.length > 0) {
    add("startup", `${unknown.map((n) => `{{${n}}}`).join(", ")} ${unknown.length === 1 ? "is" : "are"} not a variable of this template; add the variable or remove the placeholder (built-ins: ${BUILTIN_VARIABLES.join(", ")})`);
  }
  if (!t.startupShell && t.startup) {
    try {
      splitStartup(t.startup);
    } catch (e) {
      if (!(e instanceof StartupSyntaxError)) throw e;
      add("startup", e.message);
    }
    const secrets = placeholders(t.startup).filter((n) => t.variables.some((v) => v.env === n && v.secret));
    if (secrets.length > 0) {
      add("startup", `secret variable ${secrets.join(", ")} cannot be put in the command (every reader sees it); let the program read it from the environment, or set startup_shell`);
    }
  }
  if (t.readyPattern) {
    const err = regexError(t.readyPattern);
    const unsafe = unsafeRegexReason(t.readyPattern);
    if (err) add("ready_pattern", `not a valid JavaScript regular expression (${err}); fix or remove it`);
    else if (unsafe) add("ready_pattern", `refused: ${unsafe}`);
  }
  t.ports.forEach((p, i) => {
    if (p.hostPortMode === HostPortMode.RANGE && (p.hostPortMin < 1 || p.hostPortMin > p.hostPortMax)) {
      add(`ports[${i}]`, "a RANGE port needs host_port_min and host_port_max (1-65535, min <= max)");
    }
    if (p.hostPortMode === HostPortMode.FIXED && p.hostPort < 1) add(`ports[${i}].host_port`, "a FIXED port needs host_port (1-65535)");
  });
  return out;
}

function regexError(source: string): string | undefined {
  try {
    new RegExp(source);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

const INTEGER = /^[+-]?\d+$/;
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const BOOLEAN = new Set(["true", "false", "1", "0"]);

/**
 * The values a server gets: each variable's given value, or its default when
 * not given (or when it is not user-editable).
 */
export function effectiveValues(t: Template, values: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of t.variables) out[v.env] = v.userEditable && Object.hasOwn(values, v.env) ? values[v.env]! : v.defaultValue;
  return out;
}

/**
 * What is wrong with the values given for a template's variables: each
 * problem names the variable (`variables["ENV"]`) and says what to give.
 * Checked: names the template does not have, a non-editable variable given
 * another value than its default, a required variable left empty, and each
 * variable's rule (kind, allowed values, min, max, regex). A variable not
 * given takes its default, which is checked like a given value. Messages
 * never quote a value (it may be a secret).
 */
export function validateVariables(t: Template, values: Readonly<Record<string, string>>): FieldViolation[] {
  const out: FieldViolation[] = [];
  const byEnv = new Map(t.variables.map((v) => [v.env, v]));
  for (const name of Object.keys(values)) {
    if (byEnv.has(name)) continue;
    const names = t.variables.map((v) => v.env);
    out.push({
      field: varPath(name),
      description: names.length === 0 ? "this template has no variables; leave it out" : `this template has no variable ${name}; its variables are ${names.slice(0, 20).join(", ")}${names.length > 20 ? ", …" : ""}`,
    });
  }
  for (const v of t.variables) {
    const given = Object.hasOwn(values, v.env);
    if (given && !v.userEditable && values[v.env] !== v.defaultValue) {
      out.push({ field: varPath(v.env), description: `${label(v)} is not editable in this template; leave it out to use the template's default` });
      continue;
    }
    const value = given ? values[v.env]! : v.defaultValue;
    const problem = ruleProblem(v, value);
    if (problem) out.push({ field: varPath(v.env), description: given ? `${label(v)} ${problem}` : `${label(v)} has no value and the template's default does not fit: ${label(v)} ${problem}` });
  }
  return out;
}

/** Why `value` does not satisfy the variable's rule ("must be …"), or undefined. */
function ruleProblem(v: TemplateVariable, value: string): string | undefined {
  if (Buffer.byteLength(value) > MAX_VALUE_BYTES) return `is longer than ${MAX_VALUE_BYTES} bytes; shorten it`;
  if (value.includes("\0")) return "contains a NUL character; remove it";
  const r = v.rule;
  if (value === "") {
    if (v.required) return "is required: give it a value";
    if (!r || r.nullable) return undefined;
  }
  if (!r) return undefined;
  const kind = r.kind === VariableKind.UNSPECIFIED ? VariableKind.STRING : r.kind;
  if (kind === VariableKind.INTEGER && !INTEGER.test(value)) return "must be a whole number, e.g. 25565";
  if (kind === VariableKind.NUMBER && !NUMBER.test(value)) return "must be a number, e.g. 1.5";
  if (kind === VariableKind.BOOLEAN && !BOOLEAN.has(value)) return "must be true, false, 1 or 0";
  if (r.allowed.length > 0 && !r.allowed.includes(value)) {
    return `must be one of: ${r.allowed.slice(0, 20).map((a) => JSON.stringify(a)).join(", ")}${r.allowed.length > 20 ? ", …" : ""}`;
  }
  if (kind === VariableKind.INTEGER || kind === VariableKind.NUMBER) {
    const n = Number(value);
    if (r.min !== undefined && n < r.min) return `must be at least ${r.min}`;
    if (r.max !== undefined && n > r.max) return `must be at most ${r.max}`;
  } else if (kind === VariableKind.STRING) {
    const len = [...value].length;
    if (r.min !== undefined && len < r.min) return `must be at least ${r.min} characters long`;
    if (r.max !== undefined && len > r.max) return `must be at most ${r.max} characters long`;
  }
  if (r.regex) {
    // Never run a pattern that can backtrack for long (a template stored before the check, or not checked).
    if (unsafeRegexReason(r.regex)) return "cannot be checked: the template's regex for it is refused as unsafe; fix the template";
    let re: RegExp;
    try {
      re = new RegExp(r.regex);
    } catch {
      return "cannot be checked: the template's regex for it is invalid; fix the template";
    }
    if (!re.test(value)) return `must match the pattern /${r.regex}/`;
  }
  return undefined;
}

export interface RenderOptions {
  /** The image to run, one of the template's; empty: its first. */
  image?: string;
  /** The server's name. */
  name?: string;
  /** Resource limits instead of the template's defaults. */
  resources?: ResourceLimits;
  /** Host ports already published on the host, as "25565/tcp": RANGE ports pick around them. */
  takenHostPorts?: ReadonlySet<string>;
}

/**
 * The ServerSpec a template makes with the given variable values. Throws
 * InvalidArgumentError listing every problem (the template's, the values',
 * the image, a range without a free port) when there is any.
 */
export function renderTemplate(t: Template, values: Readonly<Record<string, string>>, opts: RenderOptions = {}): ServerSpec {
  const problems = [...checkTemplate(t), ...validateVariables(t, values)];
  const image = opts.image || t.images[0]?.image || "";
  if (opts.image && !t.images.some((i) => i.image === opts.image)) {
    problems.push({ field: "image", description: `the template does not offer ${opts.image}; pick one of ${t.images.map((i) => i.image).join(", ")}` });
  }
  const ports = pickPorts(t, opts.takenHostPorts ?? new Set(), problems);
  if (problems.length > 0) {
    throw new InvalidArgumentError(problems[0]!.field, problems.map((p) => `${p.field}: ${p.description}`).join("; "), problems);
  }
  const resources = opts.resources ?? t.resources ?? create(ResourceLimitsSchema);
  const env: Record<string, string> = {
    ...effectiveValues(t, values),
    SERVER_MEMORY: String((resources.memoryBytes ?? 0n) / MIB),
    SERVER_PORT: t.ports[0] ? String(t.ports[0].containerPort) : "",
    SERVER_IP: "0.0.0.0",
  };
  const command = renderCommand(t, env);
  // A shell startup is also STARTUP, for images whose entrypoint script runs
  // that (Pterodactyl's do) rather than the command; a variable of that name wins.
  if (t.startupShell && command.length > 0 && !Object.hasOwn(env, "STARTUP")) env.STARTUP = command[2]!;
  return create(ServerSpecSchema, {
    name: opts.name ?? "",
    image,
    command,
    env,
    secretEnv: t.variables.filter((v) => v.secret).map((v) => v.env),
    ports,
    dataMountPath: t.dataMountPath,
    stopCommand: t.stopCommand,
    console: t.console,
    restartPolicy: t.restartPolicy,
    readyPattern: t.readyPattern,
    stopSignal: t.stopSignal,
    resources,
    // Run before the first start with the spec's env (the variables, secret ones too) as its environment.
    ...(t.install ? { install: create(ServerInstallSchema, { image: t.install.image, script: t.install.script, entrypoint: t.install.entrypoint, timeoutSeconds: t.install.timeoutSeconds }) } : {}),
  });
}

function renderCommand(t: Template, env: Readonly<Record<string, string>>): string[] {
  if (!t.startup.trim()) return [];
  if (t.startupShell) return ["/bin/sh", "-c", t.startup.replace(PLACEHOLDER, (_, name: string) => `\${${name.trim()}}`)];
  const out: string[] = [];
  for (const w of splitStartup(t.startup)) {
    // Replacement text is not scanned again: a value holding "{{X}}" stays as it is.
    const text = w.text.replace(PLACEHOLDER, (_, name: string) => env[name.trim()] ?? "");
    if (text !== "" || w.quoted) out.push(text);
  }
  return out;
}

const protoName = (p: Protocol) => (p === Protocol.UDP ? "udp" : "tcp");

function pickPorts(t: Template, taken: ReadonlySet<string>, problems: FieldViolation[]): PortMapping[] {
  const used = new Set<string>();
  const out: PortMapping[] = [];
  t.ports.forEach((p, i) => {
    const proto = protoName(p.protocol);
    let host = 0;
    switch (p.hostPortMode) {
      case HostPortMode.NONE:
        return;
      case HostPortMode.FIXED:
        host = p.hostPort;
        break;
      case HostPortMode.RANGE:
        for (let port = p.hostPortMin; port >= 1 && port <= p.hostPortMax; port++) {
          if (!taken.has(`${port}/${proto}`) && !used.has(`${port}/${proto}`)) {
            host = port;
            break;
          }
        }
        if (host === 0 && p.hostPortMin >= 1 && p.hostPortMin <= p.hostPortMax) {
          problems.push({ field: `ports[${i}]`, description: `no free ${proto} host port from ${p.hostPortMin} to ${p.hostPortMax}; free one or widen the template's range` });
          return;
        }
        break;
      default:
        host = p.containerPort;
    }
    if (host === 0) return;
    if (used.has(`${host}/${proto}`)) {
      problems.push({ field: `ports[${i}]`, description: `host port ${host}/${proto} is already taken by another port of this template; give each its own` });
      return;
    }
    used.add(`${host}/${proto}`);
    out.push(create(PortMappingSchema, { hostPort: host, containerPort: p.containerPort, protocol: p.protocol }));
  });
  return out;
}
