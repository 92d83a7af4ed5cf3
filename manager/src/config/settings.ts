/**
 * Declarative settings: one table says, for every setting, its flag, its
 * environment variable, its type, its default, what it means and what a valid
 * value is. The same table drives the command line, the environment, the
 * optional config file and `--help`, so they cannot disagree.
 *
 * Precedence, highest first: flag > environment > config file > default.
 * A value from a higher source replaces a lower one, lists included.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

export type SettingKind = "string" | "integer" | "number" | "boolean" | "list";

/** The value type of a kind. */
export type KindValue<K extends SettingKind> = K extends "string"
  ? string
  : K extends "integer" | "number"
    ? number
    : K extends "boolean"
      ? boolean
      : string[];

export interface Setting<K extends SettingKind = SettingKind> {
  kind: K;
  /** Heading the setting is listed under in `--help`. */
  group: string;
  /** One or two sentences for `--help`. */
  help: string;
  /** What the value looks like in `--help` (PATH, S, N). Not for booleans. */
  arg?: string;
  short?: string;
  /** Environment variable; `BERTH_` + the name in upper snake case when absent. */
  env?: string;
  default?: KindValue<K>;
  /** Shown in `--help` in place of `default` (a computed or per-case default). */
  defaultText?: string;
  /** Returns what is wrong with a value ("must be …"), or undefined when it is fine. */
  check?: (value: KindValue<K>) => string | undefined;
  /** Never echo the value (tokens, keys) in errors. */
  secret?: boolean;
  /** Echo the value in errors as this returns it (e.g. a URL without its password). */
  redact?: (raw: string) => string;
  /** Only a flag: no environment variable, no config file key (`--help`, `--config`'s own file). */
  flagOnly?: boolean;
  /** Not accepted in the config file (e.g. `config` itself). */
  notInFile?: boolean;
}

/** One setting of any kind (a union, so `check` is typed by `kind`). */
export type AnySetting = { [K in SettingKind]: Setting<K> }[SettingKind];

export type SettingsTable = Record<string, AnySetting>;

/** The parsed value of every setting; settings without a default may be undefined. */
export type SettingValues<T extends SettingsTable> = {
  [N in keyof T]: T[N] extends Setting<infer K>
    ? T[N] extends { default: unknown }
      ? KindValue<K>
      : KindValue<K> | undefined
    : never;
};

export type Source = "flag" | "env" | "file" | "default";

export interface LoadedSettings<T extends SettingsTable> {
  values: SettingValues<T>;
  /** Where each value came from. */
  sources: { [N in keyof T]: Source };
  /** The config file read, if any. */
  file: string | undefined;
}

/** A setting is invalid: the message names it (flag and environment variable) and says what is expected. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Identity with inference: keeps each setting's kind and default in the table's type. */
export function defineSettings<const T extends SettingsTable>(table: T): T {
  return table;
}

/** The environment variable of setting `name`. */
export function envName(name: string, s: Pick<Setting, "env" | "flagOnly">): string | undefined {
  if (s.flagOnly) return undefined;
  return s.env ?? `BERTH_${name.toUpperCase().replace(/-/g, "_")}`;
}

export interface LoadOptions {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  /** The setting whose value names the config file (read from flag or environment only). */
  configSetting?: string;
  /** Reads the config file; tests substitute it. */
  readFile?: (path: string) => string;
}

/**
 * Reads every setting of `table` from the command line, the environment and
 * the config file (in that order of precedence) and validates it. Throws a
 * ConfigError naming the first bad setting.
 */
export function loadSettings<const T extends SettingsTable>(table: T, opts: LoadOptions): LoadedSettings<T> {
  const flags = parseFlags(table, opts.argv);
  const configSetting = opts.configSetting;
  let file: string | undefined;
  let fileValues: Record<string, unknown> = {};
  if (configSetting) {
    const s = table[configSetting];
    if (!s) throw new Error(`configSetting "${configSetting}" is not in the table`);
    const env = envName(configSetting, s);
    const fromFlag = flags[configSetting];
    file = typeof fromFlag === "string" ? fromFlag : env ? opts.env[env] || undefined : undefined;
    if (file) fileValues = readConfigFile(table, file, opts.readFile ?? ((p) => readFileSync(p, "utf8")));
  }
  const values: Record<string, unknown> = {};
  const sources: Record<string, Source> = {};
  for (const [name, s] of Object.entries(table)) {
    const env = envName(name, s);
    let raw: unknown;
    let source: Source;
    if (flags[name] !== undefined) {
      raw = flags[name];
      source = "flag";
    } else if (env && opts.env[env] !== undefined && opts.env[env] !== "") {
      raw = opts.env[env];
      source = "env";
    } else if (name in fileValues) {
      raw = fileValues[name];
      source = "file";
    } else {
      values[name] = s.default;
      sources[name] = "default";
      continue;
    }
    const where = source === "flag" ? "on the command line" : source === "env" ? "in the environment" : `in ${file}`;
    const value = convert(name, s, raw, source);
    const problem = (s.check as ((v: unknown) => string | undefined) | undefined)?.(value);
    if (problem) throw new ConfigError(`${describe(name, s)} ${shown(s, raw)} ${where}: ${problem}`);
    values[name] = value;
    sources[name] = source;
  }
  return { values: values as SettingValues<T>, sources: sources as LoadedSettings<T>["sources"], file };

  function convert(name: string, s: Setting, raw: unknown, source: Source): unknown {
    const where = source === "flag" ? "on the command line" : source === "env" ? "in the environment" : `in ${file}`;
    const bad = (what: string): never => {
      throw new ConfigError(`${describe(name, s)} ${shown(s, raw)} ${where}: ${what}`);
    };
    switch (s.kind) {
      case "boolean": {
        if (typeof raw === "boolean") return raw;
        const t = String(raw).trim().toLowerCase();
        if (["1", "true", "yes", "on"].includes(t)) return true;
        if (["0", "false", "no", "off"].includes(t)) return false;
        return bad("must be true or false (1/0, yes/no)");
      }
      case "integer":
      case "number": {
        if (typeof raw !== "number" && typeof raw !== "string") return bad("must be a number");
        const n = typeof raw === "number" ? raw : raw.trim() === "" ? NaN : Number(raw);
        if (!Number.isFinite(n)) return bad(s.kind === "integer" ? "must be a whole number" : "must be a number");
        if (s.kind === "integer" && !Number.isInteger(n)) return bad("must be a whole number");
        return n;
      }
      case "list": {
        const items = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(",") : bad("must be a list");
        if (!items.every((i) => typeof i === "string")) return bad("must be a list of strings");
        return (items as string[]).map((i) => i.trim()).filter(Boolean);
      }
      case "string":
        if (typeof raw !== "string" && typeof raw !== "number") return bad("must be a string");
        return String(raw);
    }
  }
}

/** `--name (ENV)` — how errors name a setting. */
export function describe(name: string, s: Pick<Setting, "env" | "flagOnly">): string {
  const env = envName(name, s);
  return `invalid --${name}${env ? ` (${env})` : ""}`;
}

function shown(s: Setting, raw: unknown): string {
  if (s.secret) return `"…"`;
  const text = Array.isArray(raw) ? raw.join(",") : raw;
  return JSON.stringify(s.redact && typeof text === "string" ? s.redact(text) : text);
}

function parseFlags(table: SettingsTable, argv: readonly string[]): Record<string, string | (string | boolean)[] | boolean | undefined> {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {};
  for (const [name, s] of Object.entries(table)) {
    options[name] = {
      type: s.kind === "boolean" ? "boolean" : "string",
      ...(s.kind === "list" ? { multiple: true } : {}),
      ...(s.short ? { short: s.short } : {}),
    };
  }
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const e = err as Error & { code?: string };
    const flag = /'(-{1,2}[^' ]+)/.exec(e.message)?.[1];
    if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new ConfigError(`unknown flag ${flag ?? ""}; --help lists every setting`);
    if (e.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") throw new ConfigError(`unexpected argument: ${e.message.replace(/^.*?'([^']*)'.*$/s, "$1")}; --help lists every setting`);
    if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") throw new ConfigError(`${flag ?? "a flag"} needs a value; --help lists every setting`);
    throw new ConfigError(e.message);
  }
}

/**
 * A config file: a JSON object (`{"listen": "0.0.0.0:7000", "webhook": ["https://…"]}`),
 * or `key = value` lines (`#` starts a comment; a list key may repeat or take
 * commas). Keys are the flag names without `--`. An unknown key is an error.
 */
export function readConfigFile(table: SettingsTable, path: string, read: (path: string) => string): Record<string, unknown> {
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw new ConfigError(`cannot read the config file ${path}: ${(err as Error).message}`);
  }
  const out: Record<string, unknown> = {};
  const accept = (key: string, line?: number): Setting => {
    const s = table[key];
    const at = line ? `${path}:${line}` : path;
    if (!s || s.flagOnly || s.notInFile) {
      const hint = table[key.replace(/_/g, "-").toLowerCase()] ? ` (did you mean "${key.replace(/_/g, "-").toLowerCase()}"?)` : "";
      throw new ConfigError(`unknown setting "${key}" in ${at}${hint}; keys are the flag names without "--" (see --help)`);
    }
    return s;
  };
  if (/^\s*\{/.test(text)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`the config file ${path} is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(`the config file ${path} must hold one JSON object`);
    }
    for (const [k, v] of Object.entries(parsed)) {
      accept(k);
      if (v !== null) out[k] = v;
    }
    return out;
  }
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (!line) return;
    const m = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${path}:${i + 1}: expected "key = value", got ${JSON.stringify(raw.trim())}`);
    const key = m[1]!;
    let value = m[2]!.trim();
    if (/^"(.*)"$/.test(value) || /^'(.*)'$/.test(value)) value = value.slice(1, -1);
    const s = accept(key, i + 1);
    if (s.kind === "list") out[key] = [...((out[key] as string[] | undefined) ?? []), ...value.split(",")];
    else out[key] = value;
  });
  return out;
}

/** `--help` text for `table`: every setting with its flag, environment variable and default. */
export function renderSettingsHelp(table: SettingsTable): string {
  const groups = new Map<string, string[]>();
  for (const [name, s] of Object.entries(table)) {
    const flag = `${s.short ? `-${s.short}, ` : ""}--${name}${s.kind === "boolean" ? "" : ` ${s.arg ?? "VALUE"}`}`;
    const env = envName(name, s);
    const def =
      s.defaultText ??
      (s.default === undefined || (Array.isArray(s.default) && s.default.length === 0) || s.default === false
        ? undefined
        : Array.isArray(s.default)
          ? s.default.join(",")
          : String(s.default));
    const facts = [
      env ? `env ${env}${s.kind === "list" ? " (comma-separated)" : s.kind === "boolean" ? "=1" : ""}` : undefined,
      def !== undefined ? `default ${def}` : undefined,
      s.kind === "list" ? "repeatable" : undefined,
    ].filter(Boolean);
    const lines = [`  ${flag}`, ...wrap(s.help, 74).map((l) => `      ${l}`)];
    if (facts.length) lines.push(`      [${facts.join("; ")}]`);
    const list = groups.get(s.group) ?? [];
    list.push(lines.join("\n"));
    groups.set(s.group, list);
  }
  return [...groups].map(([g, items]) => `${g}:\n${items.join("\n")}\n`).join("\n");
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) out.push(line);
  return out;
}
