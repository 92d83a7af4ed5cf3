/**
 * Field paths a CEL filter may name (docs/explore.md), for the filter bars'
 * suggestions: walked from the generated descriptors, in the proto names
 * (snake_case) the manager's CEL binding uses (manager/src/query/cel.ts binds
 * the messages through their descriptors: `server.create_time`). Nested
 * messages are followed to MAX_DEPTH fields below the variable; a map is
 * offered as `labels["key"]`, a list as itself (`server.spec.ports`, used with
 * exists/all); well-known types (Timestamp, Duration) are leaves. Pure.
 */
import type { DescMessage } from "@bufbuild/protobuf";
import { ServerSchema } from "@berth/proto/berth/v1/server_pb.js";
import { HostSchema } from "@berth/proto/berth/v1/host_pb.js";
import { EventSchema } from "@berth/proto/berth/v1/event_pb.js";

export type CelKind = "server" | "host" | "event";

/** Fields below the variable: `server.spec.resources.memory_bytes` is 3. */
export const MAX_DEPTH = 3;

const SCHEMAS: Record<CelKind, DescMessage> = { server: ServerSchema, host: HostSchema, event: EventSchema };

/** Every field path under `root` (the variable's name), depth first in declaration order. */
export function fieldPaths(schema: DescMessage, root: string, depth = MAX_DEPTH): string[] {
  const out: string[] = [];
  const walk = (m: DescMessage, prefix: string, left: number) => {
    for (const f of m.fields) {
      const path = `${prefix}.${f.name}`;
      if (f.fieldKind === "map") {
        out.push(path, `${path}["key"]`);
        continue;
      }
      out.push(path);
      if (f.fieldKind === "message" && left > 1 && !f.message.typeName.startsWith("google.protobuf.")) walk(f.message, path, left - 1);
    }
  };
  walk(schema, root, depth);
  return out;
}

const cache = new Map<CelKind, readonly string[]>();

/** The field paths of `server`, `host` or `event`, with `now`. */
export function celFields(kind: CelKind): readonly string[] {
  let list = cache.get(kind);
  if (!list) {
    list = [...fieldPaths(SCHEMAS[kind], kind), "now"];
    cache.set(kind, list);
  }
  return list;
}

/** The word (identifier with dots) the cursor is in or just after: [start, end) of `text`. */
export function wordAt(text: string, cursor: number): { start: number; end: number; word: string } {
  const isWord = (c: string | undefined) => c !== undefined && /[A-Za-z0-9_.]/.test(c);
  let start = Math.max(0, Math.min(cursor, text.length));
  let end = start;
  while (start > 0 && isWord(text[start - 1])) start--;
  while (end < text.length && isWord(text[end])) end++;
  return { start, end, word: text.slice(start, end) };
}

export interface Suggestions {
  /** The span of `text` a chosen option replaces. */
  start: number;
  end: number;
  options: string[];
}

/**
 * The field paths that complete the word under the cursor (those that start
 * with it, the word itself left out), at most `limit`, shortest first: none
 * for an empty word or inside a string literal.
 */
export function suggest(text: string, cursor: number, fields: readonly string[], limit = 8): Suggestions {
  const { start, end, word } = wordAt(text, cursor);
  const quotes = (text.slice(0, start).match(/"/g) ?? []).length;
  if (!word || quotes % 2 === 1) return { start, end, options: [] };
  const options = fields
    .filter((f) => f.startsWith(word) && f !== word)
    .sort((a, b) => a.split(".").length - b.split(".").length || a.length - b.length)
    .slice(0, limit);
  return { start, end, options };
}

/** `text` with [start, end) replaced by `option`, and where the cursor goes. */
export function applySuggestion(text: string, s: Pick<Suggestions, "start" | "end">, option: string): { text: string; cursor: number } {
  return { text: text.slice(0, s.start) + option + text.slice(s.end), cursor: s.start + option.length };
}

/** The 1-based line and column a manager's message names (`… at line 1, column 20: …`), if it does. */
export function errorPosition(message: string): { line: number; column: number } | undefined {
  const m = /line (\d+), column (\d+)/.exec(message);
  return m ? { line: Number(m[1]), column: Number(m[2]) } : undefined;
}
