/**
 * The template variable form as data: which input a variable gets (from its
 * rule), the values to start with, and the page's own checks of a value,
 * mirroring the manager's (docs/templates.md "Variables": size, required,
 * nullable, kind, allowed, min/max, regex, in that order). The manager checks
 * again; its InvalidArgument names `template.variables["X"]`, which lands on
 * the same field (`fieldOfTemplatePath`).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { VariableKind, type Template, type TemplateVariable } from "@berth/proto/berth/v1/template_pb.js";
import type { FieldProblem } from "../servers/spec-form-model.js";

export type VariableInput =
  | { type: "text"; secret: boolean }
  | { type: "number"; step: "1" | "any"; min?: number; max?: number }
  | { type: "checkbox" }
  | { type: "select"; options: string[] };

/** How variable `v` is entered: a select for an allowed list, a checkbox for a boolean, a number for integer/number, else text (a password for a secret). */
export function inputOf(v: TemplateVariable): VariableInput {
  const rule = v.rule;
  if (rule && rule.allowed.length > 0) return { type: "select", options: [...rule.allowed] };
  const kind = rule?.kind ?? VariableKind.UNSPECIFIED;
  if (kind === VariableKind.BOOLEAN) return { type: "checkbox" };
  if (kind === VariableKind.INTEGER || kind === VariableKind.NUMBER) {
    return {
      type: "number",
      step: kind === VariableKind.INTEGER ? "1" : "any",
      ...(rule?.min !== undefined ? { min: rule.min } : {}),
      ...(rule?.max !== undefined ? { max: rule.max } : {}),
    };
  }
  return { type: "text", secret: v.secret };
}

/** The form's key of variable `env`. */
export function variableField(env: string): string {
  return `template.variables["${env}"]`;
}

/** The variables the form shows: all but hidden ones that cannot be edited (nobody could change them). */
export function shownVariables(t: Template): TemplateVariable[] {
  return t.variables.filter((v) => v.userEditable || !v.hidden);
}

/** The values the form starts with: each variable's default. */
export function initialValues(t: Template): Record<string, string> {
  return Object.fromEntries(t.variables.map((v) => [v.env, v.defaultValue]));
}

/** A checkbox's state for a boolean value ("true"/"1" checked). */
export function isChecked(value: string): boolean {
  return value === "true" || value === "1";
}

/** What a checkbox sends: the same spelling as the default ("1"/"0" when the default is one of those). */
export function checkboxValue(checked: boolean, defaultValue: string): string {
  const numeric = defaultValue === "1" || defaultValue === "0";
  return numeric ? (checked ? "1" : "0") : checked ? "true" : "false";
}

const INTEGER = /^[+-]?\d+$/;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const BOOLEAN = new Set(["true", "false", "1", "0"]);

/** What is wrong with `value` for variable `v` (undefined: fine), as the manager would say it; the value is never quoted. */
export function checkValue(v: TemplateVariable, value: string): string | undefined {
  if (new TextEncoder().encode(value).length > 32768) return "at most 32768 bytes";
  if (value.includes("\0")) return "must not contain NUL";
  const rule = v.rule;
  if (value === "") {
    if (v.required) return "is required: give a value";
    if (rule?.nullable || !rule) return undefined;
  }
  if (!rule) return undefined;
  const kind = rule.kind;
  if (kind === VariableKind.INTEGER && !INTEGER.test(value)) return "must be a whole number, e.g. 25565";
  if (kind === VariableKind.NUMBER && !NUMBER.test(value)) return "must be a number, e.g. 1.5";
  if (kind === VariableKind.BOOLEAN && !BOOLEAN.has(value)) return "must be true, false, 1 or 0";
  if (rule.allowed.length > 0 && !rule.allowed.includes(value)) return `must be one of: ${rule.allowed.join(", ")}`;
  if (kind === VariableKind.INTEGER || kind === VariableKind.NUMBER) {
    const n = Number(value);
    if (rule.min !== undefined && n < rule.min) return `must be at least ${rule.min}`;
    if (rule.max !== undefined && n > rule.max) return `must be at most ${rule.max}`;
  } else if (kind !== VariableKind.BOOLEAN) {
    const len = [...value].length;
    if (rule.min !== undefined && len < rule.min) return `must be at least ${rule.min} characters`;
    if (rule.max !== undefined && len > rule.max) return `must be at most ${rule.max} characters`;
  }
  if (rule.regex) {
    let re: RegExp | undefined;
    try {
      re = new RegExp(rule.regex);
    } catch {
      re = undefined; // the manager reports a bad pattern
    }
    if (re && !re.test(value)) return `must match /${rule.regex}/`;
  }
  return undefined;
}

/**
 * The problems of `values`, each on its variable's field. Only editable
 * variables are checked: the others always take their default (the manager
 * reports a default that breaks its own rule).
 */
export function checkValues(t: Template, values: Readonly<Record<string, string>>): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = [];
  for (const v of t.variables) {
    if (!v.userEditable) continue;
    const message = checkValue(v, values[v.env] ?? v.defaultValue);
    if (message) out.push({ field: variableField(v.env), message: `${v.name || v.env} ${message}` });
  }
  return out;
}

/**
 * The variables to send: the editable ones whose value differs from the
 * default (the rest take their defaults on the manager).
 */
export function valuesToSend(t: Template, values: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of t.variables) {
    const value = values[v.env];
    if (v.userEditable && value !== undefined && value !== v.defaultValue) out[v.env] = value;
  }
  return out;
}

/**
 * The form field an InvalidArgument's field path names: `template.variables["X"]`
 * (or `variables["X"]`) is variable X's; `template.image` the image's;
 * `spec.name` / `name` the name; else undefined (shown under the form).
 */
export function fieldOfTemplatePath(path: string): string | undefined {
  const v = /^(?:template\.)?variables\["((?:[^"\\]|\\.)*)"\]/.exec(path) ?? /^(?:template\.)?variables\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(path);
  if (v) return variableField(v[1]!);
  if (path === "template.image" || path === "image") return "template.image";
  if (path === "template.template_id" || path === "template.templateId") return "template.id";
  if (path === "spec.name" || path === "name") return "name";
  if (path === "spec.host_id" || path === "host_id") return "hostId";
  return undefined;
}

/** The problems of a failed CreateServer, on the template form's fields. */
export function problemsOfTemplateError(err: unknown): FieldProblem[] {
  const e = ConnectError.from(err);
  if (e.code === Code.AlreadyExists) return [{ field: "name", message: e.rawMessage }];
  if (e.code !== Code.InvalidArgument) return [{ field: undefined, message: `${Code[e.code]}: ${e.rawMessage}` }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  if (violations.length === 0) {
    // No details: a message "template.variables["X"]: ..." still names its field.
    const m = /^([\w.]+(?:\["[^"]*"\])?): (.*)$/s.exec(e.rawMessage);
    const field = m ? fieldOfTemplatePath(m[1]!) : undefined;
    return [{ field, message: field && m ? m[2]! : `${Code[e.code]}: ${e.rawMessage}` }];
  }
  return violations.map((v) => {
    const field = fieldOfTemplatePath(v.field);
    return { field, message: field === undefined ? `${v.field}: ${v.description}` : v.description };
  });
}
