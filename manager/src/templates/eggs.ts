/**
 * Pterodactyl and Pelican eggs to berth templates, without I/O
 * (docs/templates.md, "Importing eggs").
 *
 * Accepted: Pterodactyl's JSON eggs (meta.version PTDL_v1 and PTDL_v2) and
 * Pelican's eggs (meta.version PLCN_v*, YAML or JSON). What maps is mapped;
 * every other part of the egg that carries something is listed in `unmapped`
 * with the reason, never dropped silently. Input that is not an egg, or an
 * egg berth cannot make a template of, throws InvalidArgumentError naming
 * the egg's field.
 *
 * An egg's startup is run by Pterodactyl's images through a shell (their
 * entrypoint evaluates it), so the template keeps that: startup_shell, with
 * the panel's `{{server.build.*}}` placeholders turned into berth's
 * built-ins.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { TemplateFormat, TemplateSchema, VariableKind, type Template, type TemplateVariableSchema, type VariableRuleSchema } from "@berth/proto/berth/v1/template_pb.js";
import { parseDocument } from "yaml";
import { InvalidArgumentError } from "../errors.js";
import { MAX_REGEX_LENGTH, unsafeRegexReason } from "./regex-safety.js";
import { BUILTIN_VARIABLES, MAX_VALUE_BYTES } from "./render.js";

/** Largest egg file accepted (as ImportTemplateRequest.content). */
export const MAX_EGG_BYTES = 1024 * 1024;
/** Most variables an egg may have (as Template.variables). */
export const MAX_EGG_VARIABLES = 100;
/** Most images kept (as Template.images); more are reported. */
export const MAX_TEMPLATE_IMAGES = 20;

export interface Unmapped {
  /** Where in the egg, e.g. "variables[2].rules" or "config.files". */
  field: string;
  /** Why it was not mapped and what to do about it. */
  reason: string;
}

export interface ImportedEgg {
  template: Template;
  unmapped: Unmapped[];
  /** The format found: PTERODACTYL_EGG or PELICAN_EGG. */
  format: TemplateFormat;
  /** meta.version as written, e.g. "PTDL_v2". */
  version: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const bad = (field: string, message: string) => new InvalidArgumentError(field, message);

/** Docker image references as ServerSpec.image accepts them. */
const IMAGE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::\w[\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** Top-level keys that carry nothing for a template (export bookkeeping). */
const IGNORED_TOP = new Set(["_comment", "meta", "exported_at", "uuid", "id", "created_at", "updated_at"]);
/** Keys of a variable that carry nothing for a template. */
const IGNORED_VARIABLE = new Set(["id", "egg_id", "created_at", "updated_at", "sort", "server_value"]);

/** Where Pterodactyl and Pelican mount a server's files, and their images work. */
export const EGG_DATA_PATH = "/home/container";

/** The panel's placeholders and berth's equivalents. */
const PANEL_PLACEHOLDERS: Record<string, string> = {
  "server.build.memory": "SERVER_MEMORY",
  "server.build.default.port": "SERVER_PORT",
  "server.build.default.ip": "SERVER_IP",
};

/**
 * Converts an egg file into a template. `format` UNSPECIFIED detects it;
 * another one must match the content.
 */
export function importEgg(bytes: Uint8Array, format: TemplateFormat = TemplateFormat.UNSPECIFIED): ImportedEgg {
  if (bytes.length === 0) throw bad("content", "the egg file is empty; send the egg's JSON or YAML");
  if (bytes.length > MAX_EGG_BYTES) throw bad("content", `the egg file is ${bytes.length} bytes; at most ${MAX_EGG_BYTES} (1 MiB) are accepted`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw bad("content", "the egg file is not UTF-8 text; send the egg's JSON or YAML as exported by the panel");
  }
  const egg = parseEgg(text);
  const meta = egg.meta;
  const version = isObj(meta) && typeof meta.version === "string" ? meta.version : undefined;
  if (version === undefined) throw bad("meta.version", "missing: an egg has meta.version (PTDL_v1, PTDL_v2 or PLCN_v1); is this an egg file?");
  const found = /^PTDL_v[12]$/.test(version) ? TemplateFormat.PTERODACTYL_EGG : /^PLCN_v\d{1,3}$/.test(version) ? TemplateFormat.PELICAN_EGG : undefined;
  if (found === undefined) throw bad("meta.version", `${JSON.stringify(version.slice(0, 40))} is not an egg version berth reads; it reads PTDL_v1, PTDL_v2 and PLCN_v*`);
  if (format !== TemplateFormat.UNSPECIFIED && format !== found) {
    throw bad("format", `the content is a ${found === TemplateFormat.PELICAN_EGG ? "Pelican" : "Pterodactyl"} egg (${version}); leave the format unspecified or set it to match`);
  }
  const out = new EggReader(egg);
  return { template: out.read(), unmapped: out.unmapped, format: found, version };
}

function parseEgg(text: string): Obj {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    let detail = "";
    try {
      // YAML 1.2's core schema (no custom tags); aliases bounded against "billion laughs".
      const yaml = parseDocument(text, { prettyErrors: false, logLevel: "silent", uniqueKeys: true });
      const first = yaml.errors[0];
      if (first) detail = first.message;
      else doc = yaml.toJS({ maxAliasCount: 100 });
    } catch (e) {
      // Deep nesting overflows the YAML parser's stack; too many aliases throw too.
      detail = e instanceof Error ? e.message : String(e);
    }
    if (detail) throw bad("content", `neither JSON nor YAML (${detail.split("\n")[0]!.slice(0, 200)}); send the egg file as exported by the panel`);
  }
  if (!isObj(doc)) throw bad("content", "not an egg: the file must hold an object with meta.version, name, startup, …");
  return doc;
}

class EggReader {
  readonly unmapped: Unmapped[] = [];

  constructor(private readonly egg: Obj) {}

  private report(field: string, reason: string): void {
    this.unmapped.push({ field, reason });
  }

  read(): Template {
    const egg = this.egg;
    const name = this.text(egg, "name", "name", { required: true, max: 100 });
    const description = this.text(egg, "description", "description", { max: 4096 });
    const images = this.images();
    const variables = this.variables();
    const startup = this.startup(new Set(variables.map((v) => v.env!)));
    const config = this.config();
    const install = this.install();
    for (const key of Object.keys(egg)) {
      if (IGNORED_TOP.has(key)) continue;
      const v = egg[key];
      switch (key) {
        case "name":
        case "description":
        case "docker_images":
        case "images":
        case "image":
        case "startup":
        case "startup_commands":
        case "config":
        case "scripts":
        case "variables":
          continue;
        case "features":
          if (nonEmpty(v)) this.report("features", `panel features (${listOf(v)}) are helpers of the Pterodactyl panel (e.g. the EULA prompt) berth does not have; handle them in the startup or install script`);
          continue;
        case "file_denylist":
          if (nonEmpty(v)) this.report("file_denylist", `berth's file manager has no per-template deny list (${listOf(v)}); these files stay editable`);
          continue;
        case "author":
          if (nonEmpty(v)) this.report("author", "berth templates have no author; add it to the description if it matters");
          continue;
        case "tags":
          if (nonEmpty(v)) this.report("tags", "berth templates have no tags");
          continue;
        default:
          if (nonEmpty(v)) this.report(key, "not part of the egg formats berth knows; not taken over");
      }
    }
    const meta = egg.meta as Obj;
    if (nonEmpty(meta.update_url)) this.report("meta.update_url", "berth does not follow update URLs; import a newer egg to update the template");
    return create(TemplateSchema, {
      name,
      description,
      images,
      startup,
      startupShell: startup !== "",
      variables,
      // Pterodactyl mounts a server's files at /home/container (its images'
      // working directory): there, what the game writes is in the data directory.
      dataMountPath: EGG_DATA_PATH,
      console: true,
      ...config,
      install,
    });
  }

  /** A string field (numbers are taken as text); too long: clipped and reported. */
  private text(o: Obj, key: string, path: string, opts: { required?: boolean; max?: number } = {}): string {
    const v = Object.hasOwn(o, key) ? o[key] : undefined;
    if (v === undefined || v === null || v === "") {
      if (opts.required) throw bad(path, "missing: the egg must have it");
      return "";
    }
    if (typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean") throw bad(path, `must be text, not ${kindOf(v)}`);
    const s = String(v).replace(/\0/g, "");
    const max = opts.max;
    if (max !== undefined && [...s].length > max) {
      this.report(path, `longer than ${max} characters: cut to ${max}`);
      return [...s].slice(0, max).join("");
    }
    return s;
  }

  private images(): MessageInitShape<typeof TemplateSchema>["images"] {
    const egg = this.egg;
    const found: { path: string; image: unknown; label: string }[] = [];
    if (Object.hasOwn(egg, "docker_images") && egg.docker_images != null) {
      const m = egg.docker_images;
      if (Array.isArray(m)) m.forEach((image, i) => found.push({ path: `docker_images[${i}]`, image, label: "" }));
      else if (isObj(m)) for (const [label, image] of Object.entries(m)) found.push({ path: `docker_images.${label}`, image, label });
      else throw bad("docker_images", `must be a map of label to image, not ${kindOf(m)}`);
    }
    if (Object.hasOwn(egg, "images") && Array.isArray(egg.images)) egg.images.forEach((image, i) => found.push({ path: `images[${i}]`, image, label: "" }));
    if (Object.hasOwn(egg, "image") && typeof egg.image === "string") found.push({ path: "image", image: egg.image, label: "" });
    const out: { image: string; label: string }[] = [];
    for (const f of found) {
      if (typeof f.image !== "string" || !IMAGE.test(f.image) || f.image.length > 255) {
        this.report(f.path, `${typeof f.image === "string" ? JSON.stringify(f.image.slice(0, 100)) : kindOf(f.image)} is not an image reference berth accepts (lowercase [registry/]path[:tag]); left out`);
        continue;
      }
      if (out.some((o) => o.image === f.image)) continue;
      if (out.length >= MAX_TEMPLATE_IMAGES) {
        this.report(f.path, `a template has at most ${MAX_TEMPLATE_IMAGES} images; left out`);
        continue;
      }
      out.push({ image: f.image, label: [...f.label].slice(0, 100).join("") });
    }
    if (out.length === 0) throw bad("docker_images", "the egg has no usable image; it needs docker_images (PTDL_v2, Pelican) or image/images (PTDL_v1) with a lowercase image reference");
    return out;
  }

  private startup(vars: ReadonlySet<string>): string {
    const egg = this.egg;
    let raw = "";
    let path = "startup";
    if (Object.hasOwn(egg, "startup") && egg.startup != null) {
      raw = this.text(egg, "startup", "startup");
    } else if (Object.hasOwn(egg, "startup_commands") && isObj(egg.startup_commands)) {
      const entries = Object.entries(egg.startup_commands).filter(([, v]) => typeof v === "string" && v !== "");
      if (entries.length > 0) {
        path = `startup_commands.${entries[0]![0]}`;
        raw = entries[0]![1] as string;
        for (const [k] of entries.slice(1)) this.report(`startup_commands.${k}`, `a template has one startup; "${entries[0]![0]}" was taken`);
      }
    }
    if (raw === "") throw bad("startup", "missing: the egg must have a startup command");
    if (Buffer.byteLength(raw) > 8192) throw bad(path, "longer than 8192 bytes; berth's startup is at most 8 KiB");
    const reported = new Set<string>();
    const builtin = (n: string) => (BUILTIN_VARIABLES as readonly string[]).includes(n);
    const rewrite = (text: string) => text.replace(/\{\{([^{}]*)\}\}/g, (_, inner: string) => {
      const name = inner.trim();
      let to: string | undefined;
      if (Object.hasOwn(PANEL_PLACEHOLDERS, name)) to = PANEL_PLACEHOLDERS[name];
      else if (builtin(name) || vars.has(name)) to = name;
      else {
        const env = /^(?:server\.build\.)?env\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(name)?.[1];
        if (env !== undefined && (vars.has(env) || builtin(env))) to = env;
      }
      if (to !== undefined) return `{{${to}}}`;
      if (!reported.has(name)) {
        reported.add(name);
        this.report(path, `{{${clip(name)}}} has no berth equivalent and was removed from the startup; edit the startup (built-ins: ${BUILTIN_VARIABLES.join(", ")})`);
      }
      return "";
    });
    // Removing a placeholder can join the text around it into a new one
    // ("{{a{{x}}b}}" → "{{ab}}"): rewrite until nothing changes. Each
    // change removes at least four characters, so this ends.
    let out = raw;
    for (let next = rewrite(out); next !== out; next = rewrite(out)) out = next;
    return out;
  }

  private config(): Pick<MessageInitShape<typeof TemplateSchema>, "stopCommand" | "stopSignal" | "readyPattern"> {
    const out: { stopCommand?: string; stopSignal?: string; readyPattern?: string } = {};
    const config = this.egg.config;
    if (config === undefined || config === null) return out;
    if (!isObj(config)) throw bad("config", `must be an object, not ${kindOf(config)}`);
    for (const [key, value] of Object.entries(config)) {
      const path = `config.${key}`;
      switch (key) {
        case "stop": {
          if (value === null || value === "") break;
          if (typeof value !== "string") throw bad(path, `must be text, not ${kindOf(value)}`);
          if (value === "^C" || value === "^^C") out.stopSignal = "SIGINT";
          else if (value.startsWith("^")) this.report(path, `${JSON.stringify(value.slice(0, 20))} is a control sequence berth does not send; the server is stopped with SIGTERM`);
          else if (/[\0\r\n]/.test(value) || Buffer.byteLength(value) > 4096) this.report(path, "not one line of at most 4096 bytes; the server is stopped with SIGTERM (set a stop_command by hand)");
          else out.stopCommand = value;
          break;
        }
        case "startup": {
          const startup = this.embedded(value, path);
          if (startup === undefined) break;
          for (const [k, v] of Object.entries(startup)) {
            if (k === "done") {
              const done = (Array.isArray(v) ? v : [v]).filter((d): d is string => typeof d === "string" && d !== "");
              if ((Array.isArray(v) ? v : [v]).some((d) => d !== null && d !== "" && typeof d !== "string")) this.report(`${path}.done`, "entries that are not text were left out");
              if (done.length > 0) {
                // Wings reads a "regex:" entry as a regular expression, any other as text to find.
                const parts = done.flatMap((d) => {
                  if (!d.startsWith("regex:")) return [escapeRegex(d)];
                  if (regexCompiles(d.slice(6))) {
                    const unsafe = unsafeRegexReason(d.slice(6));
                    if (unsafe) throw bad(`${path}.done`, `${JSON.stringify(clip(d))} is refused: ${unsafe}; fix the egg`);
                    return [`(?:${d.slice(6)})`];
                  }
                  this.report(`${path}.done`, `${JSON.stringify(clip(d))} is not a JavaScript regular expression; left out`);
                  return [];
                });
                const pattern = parts.join("|");
                if (!regexCompiles(pattern)) this.report(`${path}.done`, "the done strings do not make one JavaScript regular expression together; the server counts as ready when its container runs");
                else if (pattern.length > MAX_REGEX_LENGTH) this.report(`${path}.done`, `the done strings make a pattern longer than ${MAX_REGEX_LENGTH} characters; the server counts as ready when its container runs`);
                else if (unsafeRegexReason(pattern)) this.report(`${path}.done`, `the done strings together make a pattern berth refuses (${unsafeRegexReason(pattern)}); the server counts as ready when its container runs`);
                else out.readyPattern = pattern;
              }
            } else if (nonEmpty(v)) {
              this.report(`${path}.${k}`, k === "userInteraction" ? "berth does not answer console prompts; the operator answers them in the console" : "not part of the egg formats berth knows; not taken over");
            }
          }
          break;
        }
        case "files": {
          const files = this.embedded(value, path);
          if (files !== undefined && Object.keys(files).length > 0) {
            this.report(path, `berth does not edit the server's configuration files before each start (the panel's file parsers, here for ${Object.keys(files).slice(0, 10).join(", ")}); set those values in the files yourself or in the install script`);
          }
          break;
        }
        case "logs": {
          const logs = this.embedded(value, path);
          if (logs !== undefined && Object.keys(logs).length > 0) this.report(path, "berth shows the container's output as its log; a separate log file location is not used");
          break;
        }
        default:
          if (nonEmpty(value)) this.report(path, key === "extends" ? "berth templates do not inherit from other eggs; import the parent egg's settings by hand" : "not part of the egg formats berth knows; not taken over");
      }
    }
    return out;
  }

  /** A config section: an object (Pelican) or a JSON text of one (Pterodactyl). undefined when empty or unreadable (reported). */
  private embedded(value: unknown, path: string): Obj | undefined {
    if (value === null || value === undefined || value === "") return undefined;
    let v = value;
    if (typeof v === "string") {
      try {
        v = JSON.parse(v);
      } catch {
        this.report(path, "not valid JSON text; not taken over");
        return undefined;
      }
    }
    if (Array.isArray(v) && v.length === 0) return undefined;
    if (!isObj(v)) {
      this.report(path, `must be an object, not ${kindOf(v)}; not taken over`);
      return undefined;
    }
    return v;
  }

  private install(): MessageInitShape<typeof TemplateSchema>["install"] {
    const scripts = this.egg.scripts;
    if (scripts === undefined || scripts === null) return undefined;
    if (!isObj(scripts)) throw bad("scripts", `must be an object, not ${kindOf(scripts)}`);
    for (const key of Object.keys(scripts)) if (key !== "installation" && nonEmpty(scripts[key])) this.report(`scripts.${key}`, "berth runs only the installation script");
    const inst = scripts.installation;
    if (inst === undefined || inst === null) return undefined;
    if (!isObj(inst)) throw bad("scripts.installation", `must be an object, not ${kindOf(inst)}`);
    const script = this.text(inst, "script", "scripts.installation.script").replace(/\r\n/g, "\n");
    if (script.trim() === "") return undefined;
    if (Buffer.byteLength(script) > 262144) throw bad("scripts.installation.script", "longer than 256 KiB; berth's install script is at most 256 KiB");
    const image = this.text(inst, "container", "scripts.installation.container");
    if (!IMAGE.test(image) || image.length > 255) {
      this.report("scripts.installation", `the install container ${image ? JSON.stringify(image.slice(0, 100)) : "(none)"} is not an image reference berth accepts; the install script was left out: add it with a lowercase image`);
      return undefined;
    }
    const entrypoint = this.text(inst, "entrypoint", "scripts.installation.entrypoint");
    if (!/^[^\0\s]{0,255}$/.test(entrypoint)) throw bad("scripts.installation.entrypoint", "must be one program name or path, e.g. bash or ash");
    for (const key of Object.keys(inst)) if (!["script", "container", "entrypoint"].includes(key) && nonEmpty(inst[key])) this.report(`scripts.installation.${key}`, "not part of the egg formats berth knows; not taken over");
    return { image, script, entrypoint };
  }

  private variables(): MessageInitShape<typeof TemplateVariableSchema>[] {
    const list = this.egg.variables;
    if (list === undefined || list === null) return [];
    if (!Array.isArray(list)) throw bad("variables", `must be a list, not ${kindOf(list)}`);
    if (list.length > MAX_EGG_VARIABLES) throw bad("variables", `${list.length} variables; a template has at most ${MAX_EGG_VARIABLES}`);
    // Pelican orders variables by `sort`; the egg's order breaks ties.
    const ordered = list.map((v, i) => ({ v, i })).sort((a, b) => sortKey(a.v) - sortKey(b.v) || a.i - b.i);
    const out: MessageInitShape<typeof TemplateVariableSchema>[] = [];
    const seen = new Set<string>();
    for (const { v, i } of ordered) {
      const path = `variables[${i}]`;
      if (!isObj(v)) throw bad(path, `must be an object, not ${kindOf(v)}`);
      const env = this.text(v, "env_variable", `${path}.env_variable`, { required: true });
      if (!ENV_NAME.test(env)) throw bad(`${path}.env_variable`, "an environment variable name is letters, digits and '_' (at most 128), not starting with a digit");
      if (seen.has(env)) throw bad(`${path}.env_variable`, `${env} is defined twice; each variable needs its own name`);
      seen.add(env);
      if ((BUILTIN_VARIABLES as readonly string[]).includes(env)) {
        this.report(path, `berth sets ${env} itself (${BUILTIN_VARIABLES.join(", ")}); the egg's variable was left out`);
        continue;
      }
      const defaultValue = this.text(v, "default_value", `${path}.default_value`);
      if (Buffer.byteLength(defaultValue) > MAX_VALUE_BYTES) throw bad(`${path}.default_value`, `longer than ${MAX_VALUE_BYTES} bytes`);
      const rules = this.rules(v.rules, `${path}.rules`);
      for (const key of Object.keys(v)) {
        if (IGNORED_VARIABLE.has(key)) continue;
        if (["name", "description", "env_variable", "default_value", "user_viewable", "user_editable", "rules"].includes(key)) continue;
        if (key === "field_type" && (v[key] === "text" || !nonEmpty(v[key]))) continue;
        if (nonEmpty(v[key])) this.report(`${path}.${key}`, key === "field_type" ? "berth shows every variable as a text field" : "not part of the egg formats berth knows; not taken over");
      }
      out.push({
        env,
        name: this.text(v, "name", `${path}.name`, { max: 100 }),
        description: this.text(v, "description", `${path}.description`, { max: 4096 }),
        defaultValue,
        required: rules.required,
        rule: rules.rule,
        userEditable: truthy(v.user_editable),
        hidden: Object.hasOwn(v, "user_viewable") && !truthy(v.user_viewable),
      });
    }
    return out;
  }

  /** Laravel validation rules ("required|string|max:20" or a list of them) as a berth rule. */
  private rules(value: unknown, path: string): { required: boolean; rule: MessageInitShape<typeof VariableRuleSchema> } {
    const rule: { kind: VariableKind; nullable: boolean; allowed: string[]; min?: number; max?: number; regex: string } = { kind: VariableKind.UNSPECIFIED, nullable: false, allowed: [], regex: "" };
    let required = false;
    let items: string[];
    if (value === undefined || value === null || value === "") items = [];
    else if (typeof value === "string") items = splitRules(value);
    else if (Array.isArray(value)) {
      items = [];
      for (const r of value) {
        if (typeof r === "string") items.push(r);
        else this.report(path, `a rule that is ${kindOf(r)}, not text, was left out`);
      }
    } else throw bad(path, `must be text like "required|string|max:20" or a list of rules, not ${kindOf(value)}`);
    const setRegex = (re: string, source: string) => {
      if (rule.regex) this.report(path, `"${clip(source)}": a variable has one pattern in berth; only the first is checked`);
      else rule.regex = re;
    };
    for (const item of items.map((s) => s.trim()).filter((s) => s !== "")) {
      const colon = item.indexOf(":");
      const name = (colon < 0 ? item : item.slice(0, colon)).toLowerCase();
      const arg = colon < 0 ? "" : item.slice(colon + 1);
      const nums = arg.split(",").map((s) => Number(s.trim()));
      const numOk = (n: number) => arg !== "" && nums.length === n && nums.every((x) => Number.isFinite(x));
      switch (name) {
        case "required":
          required = true;
          break;
        case "nullable":
          rule.nullable = true;
          break;
        case "string":
          if (rule.kind === VariableKind.UNSPECIFIED) rule.kind = VariableKind.STRING;
          break;
        case "integer":
        case "int":
          rule.kind = VariableKind.INTEGER;
          break;
        case "numeric":
          if (rule.kind !== VariableKind.INTEGER) rule.kind = VariableKind.NUMBER;
          break;
        case "boolean":
        case "bool":
          rule.kind = VariableKind.BOOLEAN;
          break;
        case "in": {
          const allowed = splitCsv(arg);
          if (allowed.length === 0 || allowed.length > 200 || allowed.some((a) => a.length > 1024)) this.report(path, `"${clip(item)}": berth takes 1 to 200 values of at most 1024 characters; not checked`);
          else rule.allowed = allowed;
          break;
        }
        case "min":
        case "max":
          if (!numOk(1)) this.report(path, `"${clip(item)}" needs one number; not checked`);
          else rule[name] = nums[0]!;
          break;
        case "between":
          if (!numOk(2)) this.report(path, `"${clip(item)}" needs two numbers; not checked`);
          else [rule.min, rule.max] = [nums[0]!, nums[1]!];
          break;
        case "size":
          if (!numOk(1)) this.report(path, `"${clip(item)}" needs one number; not checked`);
          else rule.min = rule.max = nums[0]!;
          break;
        case "regex": {
          const re = phpRegex(arg);
          if (typeof re !== "string") this.report(path, `"${clip(item)}": ${re.problem}; the value is not checked against it`);
          else {
            // A pattern from the internet that can backtrack for long is refused, not imported (regex-safety.ts).
            const unsafe = unsafeRegexReason(re);
            if (unsafe) throw bad(path, `"${clip(item)}" is refused: ${unsafe}; fix the egg`);
            setRegex(re, item);
          }
          break;
        }
        case "alpha":
          setRegex("^[A-Za-z]+$", item);
          break;
        case "alpha_num":
          setRegex("^[A-Za-z0-9]+$", item);
          break;
        case "alpha_dash":
          setRegex("^[A-Za-z0-9_-]+$", item);
          break;
        case "digits":
          if (!numOk(1) || !Number.isInteger(nums[0])) this.report(path, `"${clip(item)}" needs one whole number; not checked`);
          else setRegex(`^\\d{${nums[0]}}$`, item);
          break;
        case "digits_between":
          if (!numOk(2) || !nums.every(Number.isInteger)) this.report(path, `"${clip(item)}" needs two whole numbers; not checked`);
          else setRegex(`^\\d{${nums[0]},${nums[1]}}$`, item);
          break;
        default:
          this.report(path, `"${clip(item)}" has no berth equivalent; the value is not checked for it`);
      }
    }
    if (rule.min !== undefined && rule.max !== undefined && rule.min > rule.max) {
      this.report(path, `min ${rule.min} is above max ${rule.max}; neither is checked`);
      delete rule.min;
      delete rule.max;
    }
    return { required, rule };
  }
}

/**
 * Splits Laravel's "a|b|regex:/x|y/" on the pipes between rules, keeping a
 * regex's own pipes (up to its closing delimiter and flags).
 */
export function splitRules(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= s.length) {
    const rest = s.slice(i);
    const m = /^\s*(not_)?regex:(.)/i.exec(rest);
    if (m) {
      const delim = closing(m[2]!);
      const bodyStart = i + m[0].length;
      let end = -1;
      for (let j = bodyStart; j < s.length; j++) {
        if (s[j] === "\\") {
          j++;
          continue;
        }
        if (s[j] === delim) {
          const after = /^[a-zA-Z]*(\||$)/.exec(s.slice(j + 1));
          if (after) {
            end = j + 1 + after[0].length - after[1]!.length;
            break;
          }
        }
      }
      if (end > 0) {
        out.push(s.slice(i, end));
        i = end + 1;
        continue;
      }
    }
    const bar = s.indexOf("|", i);
    if (bar < 0) {
      out.push(s.slice(i));
      break;
    }
    out.push(s.slice(i, bar));
    i = bar + 1;
  }
  return out;
}

const closing = (d: string) => ({ "(": ")", "[": "]", "{": "}", "<": ">" })[d] ?? d;

/** A PHP (PCRE) regex with delimiters, "/^[a-z]+$/", as a JavaScript pattern; or why it cannot be one. */
function phpRegex(arg: string): string | { problem: string } {
  const s = arg.trim();
  if (s.length < 2 || /[A-Za-z0-9\\\s]/.test(s[0]!)) return { problem: "not a delimited regular expression such as /^[a-z]+$/" };
  const end = s.lastIndexOf(closing(s[0]!));
  if (end <= 0) return { problem: "its closing delimiter is missing" };
  const body = s.slice(1, end);
  const flags = s.slice(end + 1);
  if (!/^[uD]*$/.test(flags)) return { problem: `the flags "${flags.slice(0, 10)}" have no equivalent in berth's patterns` };
  if (body.length > 1024) return { problem: "longer than 1024 characters" };
  try {
    new RegExp(body);
  } catch {
    return { problem: "PCRE syntax JavaScript does not read" };
  }
  return body;
}

function splitCsv(arg: string): string[] {
  // Laravel reads in:'s list as CSV: "a","b,c" are two values.
  const out: string[] = [];
  const re = /\s*(?:"((?:[^"]|"")*)"|([^,]*))\s*(?:,|$)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(arg)) !== null && m.index < arg.length) {
    out.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2]!.trim());
    if (re.lastIndex === m.index) re.lastIndex++;
  }
  return out.filter((v) => v !== "");
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const regexCompiles = (source: string) => {
  try {
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
};
const clip = (s: string) => (s.length > 80 ? `${s.slice(0, 79)}…` : s);
const truthy = (v: unknown) => v === true || v === 1 || v === "1" || v === "true";
const sortKey = (v: unknown) => (isObj(v) && typeof v.sort === "number" && Number.isFinite(v.sort) ? v.sort : 0);
const nonEmpty = (v: unknown): boolean =>
  v !== undefined && v !== null && v !== "" && v !== false && !(Array.isArray(v) && v.length === 0) && !(isObj(v) && Object.keys(v).length === 0) && v !== "{}" && v !== "[]";
const kindOf = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "a list" : typeof v === "object" ? "an object" : `a ${typeof v}`);
const listOf = (v: unknown) => (Array.isArray(v) ? v.filter((x) => typeof x === "string").slice(0, 10).join(", ") : typeof v === "string" ? v.slice(0, 100) : kindOf(v));
