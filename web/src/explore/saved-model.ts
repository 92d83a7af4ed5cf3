/**
 * The Save dialog's form and the SavedQuerySpec it makes; the manager's
 * refusals (google.rpc.BadRequest field violations, or the message's head)
 * put on the form's fields. Pure.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Severity } from "@berth/proto/berth/v1/alert_pb.js";
import type { SavedQuery, SavedQuerySpecSchema } from "@berth/proto/berth/v1/query_pb.js";
import { aggregateQueryOf, formatDurationShort, parseDuration, type ExploreState } from "./model.js";

export interface SaveForm {
  name: string;
  description: string;
  shared: boolean;
  pinned: boolean;
  alert: boolean;
  /** As typed: "5m", "1h". */
  fireAfter: string;
  severity: Severity;
}

/** The fields a problem may be on: the form's and the page's (the filter, a group-by expression). */
export type SaveField = "name" | "description" | "shared" | "pinned" | "fireAfter" | "severity" | "cel" | "group" | "query";

export interface SaveProblem {
  field: SaveField | undefined;
  message: string;
}

export function emptySaveForm(): SaveForm {
  return { name: "", description: "", shared: false, pinned: false, alert: false, fireAfter: "5m", severity: Severity.WARNING };
}

export function formOfSaved(q: SavedQuery): SaveForm {
  const s = q.spec;
  const fa = s?.alert?.fireAfter;
  return {
    name: s?.name ?? "",
    description: s?.description ?? "",
    shared: s?.shared ?? false,
    pinned: s?.pinned ?? false,
    alert: s?.alert?.enabled ?? false,
    fireAfter: fa ? formatDurationShort(Number(fa.seconds)) : "5m",
    severity: s?.alert?.severity || Severity.WARNING,
  };
}

/** A name the manager accepts, made from free text ("Crashed this week!" → "crashed-this-week"). */
export function suggestName(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/, "");
}

/** Problems the dashboard sees before asking (the manager checks again). */
export function checkSaveForm(f: SaveForm): SaveProblem[] {
  const out: SaveProblem[] = [];
  if (!f.name.trim()) out.push({ field: "name", message: "give it a name: lowercase letters, digits and '-' (e.g. crashed-this-week)" });
  if (f.alert && parseDuration(f.fireAfter) === undefined) out.push({ field: "fireAfter", message: 'write a duration such as 30s, 5m, 1h or 1d' });
  return out;
}

/** The spec CreateSavedQuery / UpdateSavedQuery send for the page's state and the form. */
export function specOf(state: ExploreState, f: SaveForm): MessageInitShape<typeof SavedQuerySpecSchema> {
  const spec: MessageInitShape<typeof SavedQuerySpecSchema> = {
    name: f.name.trim(),
    description: f.description.trim(),
    query: aggregateQueryOf(state),
    shared: f.shared,
    pinned: f.pinned,
  };
  if (f.alert) {
    const s = parseDuration(f.fireAfter) ?? 300;
    spec.alert = { enabled: true, fireAfter: { seconds: BigInt(s), nanos: 0 }, severity: f.severity };
  }
  return spec;
}

/** The field a request path names: "spec.name" → name, "spec.query.filter" → cel, "spec.query.group_by[1]" → group, "spec.alert.fire_after" → fireAfter. */
export function fieldOfSavePath(path: string): SaveField | undefined {
  const p = path.replace(/^spec\./, "").replace(/\[\d+\]$/, "");
  switch (p) {
    case "name":
      return "name";
    case "description":
      return "description";
    case "shared":
      return "shared";
    case "pinned":
      return "pinned";
    case "alert.fire_after":
    case "alert":
      return "fireAfter";
    case "alert.severity":
      return "severity";
    case "query.filter":
    case "filter":
      return "cel";
    case "query.group_by":
    case "query.sum":
      return "group";
    default:
      return p.startsWith("query") ? "query" : undefined;
  }
}

/**
 * The problems of a refusal, each on the field it names: the field
 * violations when the error carries them, else the message on the field it
 * starts with ("spec.name: …", "filter: syntax error …").
 */
export function problemsOfRefusal(message: string, violations: readonly { field: string; description: string }[]): SaveProblem[] {
  if (violations.length > 0) {
    return violations.map((v) => {
      const field = fieldOfSavePath(v.field);
      return { field, message: field === undefined ? `${v.field}: ${v.description}` : v.description };
    });
  }
  const m = /^([a-z_.]+(?:\[\d+\])?):\s/.exec(message);
  return [{ field: m ? fieldOfSavePath(m[1]!) : undefined, message }];
}
