import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { EVENT_CATALOGUE, isCatalogued, renderCatalogueMarkdown } from "./catalogue.js";

const SRC = fileURLToPath(new URL("../", import.meta.url));
const REPO = fileURLToPath(new URL("../../../", import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [p] : [];
  });
}

/**
 * Every event type the manager's code can append: dotted string literals in
 * the expression after `type:` (plain, ternaries), plus the `server.${action}`
 * template of ServerService, expanded with the action names passed to it.
 */
function emittedTypes(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, "utf8");
    const where = relative(REPO, file);
    for (const m of text.matchAll(/\btype:\s*([^,\n}]+)/g)) {
      for (const lit of m[1]!.matchAll(/["'`]([a-z]+\.[a-z_]+)["'`]/g)) found.set(lit[1]!, where);
    }
    if (/type:\s*`server\.\$\{action\}`/.test(text)) {
      for (const m of text.matchAll(/\b(?:act|setDesired)\(\s*ctx,[^;]*?"([a-z_]+)"/g)) found.set(`server.${m[1]!}`, where);
    }
  }
  return found;
}

describe("event catalogue", () => {
  it("lists every event type the manager emits", () => {
    const emitted = emittedTypes();
    // The scan must see the well-known ones, or it is broken rather than the catalogue.
    for (const t of ["server.created", "server.start_requested", "phase.changed", "command.issued", "host.connected", "alert.fired", "webhook.delivered"]) {
      expect(emitted.has(t), `scan found ${t}`).toBe(true);
    }
    const missing = [...emitted].filter(([t]) => !isCatalogued(t)).map(([t, f]) => `${t} (${f})`);
    expect(missing, "add these to manager/src/ledger/catalogue.ts and regenerate docs/events.md").toEqual([]);
  });

  it("has no entry nothing emits", () => {
    const emitted = emittedTypes();
    expect(Object.keys(EVENT_CATALOGUE).filter((t) => !emitted.has(t))).toEqual([]);
  });

  it("types are dotted lowercase", () => {
    for (const t of Object.keys(EVENT_CATALOGUE)) expect(t).toMatch(/^[a-z]+\.[a-z_]+$/);
  });

  it("docs/events.md carries the current catalogue table", () => {
    const doc = readFileSync(join(REPO, "docs/events.md"), "utf8");
    expect(doc, "regenerate the table: npx tsx scripts/render-events-doc.ts").toContain(renderCatalogueMarkdown());
  });
});
