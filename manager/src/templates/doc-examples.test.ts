/**
 * The example templates of docs/templates.md ("Examples for real images"),
 * read from the page: each is a valid template (the checks CreateTemplate
 * makes) and renders, with the values its `<!-- template-example -->`
 * comment names, to a spec the API would accept.
 */
import { readFileSync } from "node:fs";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateSchema } from "@berth/proto/berth/v1/template_pb.js";
import { describe, expect, it } from "vitest";
import { ruleProblems } from "../api/protovalidate.js";
import { checkTemplate, renderTemplate } from "./render.js";

const DOC = readFileSync(new URL("../../../docs/templates.md", import.meta.url), "utf8");
const EXAMPLES = [...DOC.matchAll(/<!-- template-example values=(\{.*?\}) -->\n```json\n([\s\S]*?)\n```/g)].map((m) => ({
  values: JSON.parse(m[1]!) as Record<string, string>,
  template: fromJson(TemplateSchema, JSON.parse(m[2]!) as JsonValue),
}));

describe("docs/templates.md: examples for real images", () => {
  it("has the three examples", () => {
    expect(EXAMPLES.map((e) => e.template.name)).toEqual(["postgresql-16", "minecraft-paper", "python-sandbox"]);
  });

  it.each(EXAMPLES.map((e) => [e.template.name, e] as const))("%s is a valid template and renders to a valid spec", (_, { template, values }) => {
    expect(ruleProblems(TemplateSchema, template)).toEqual([]);
    expect(checkTemplate(template)).toEqual([]);
    const spec = renderTemplate(template, values, { name: template.name });
    expect(ruleProblems(ServerSpecSchema, spec)).toEqual([]);
    expect(spec.image).toBe(template.images[0]!.image);
  });

  it("renders what the page says: Paper's memory flag from its limit, Postgres's secret kept out of the command", () => {
    const [pg, paper, py] = EXAMPLES;
    const paperSpec = renderTemplate(paper!.template, paper!.values);
    expect(paperSpec.command).toEqual(["/bin/sh", "-c", "cd /data && exec java -Xms128M -Xmx${SERVER_MEMORY}M -jar server.jar --port ${SERVER_PORT} nogui"]);
    expect([paperSpec.env.SERVER_MEMORY, paperSpec.env.SERVER_PORT, paperSpec.env.MC_VERSION]).toEqual(["2048", "25565", "1.21.1"]);
    expect(paperSpec.install?.script).toContain("api.papermc.io");
    expect(new RegExp(paperSpec.readyPattern).test("[12:00:01 INFO]: Done (4.213s)! For help, type \"help\"")).toBe(true);
    const pgSpec = renderTemplate(pg!.template, pg!.values);
    expect([pgSpec.command, pgSpec.secretEnv, pgSpec.stopSignal]).toEqual([[], ["POSTGRES_PASSWORD"], "SIGINT"]);
    const re = new RegExp(pgSpec.readyPattern);
    expect(re.test('2026-12-06 00:00:00.000 UTC [1] LOG:  listening on IPv4 address "0.0.0.0", port 5432')).toBe(true);
    expect(re.test("2026-12-06 00:00:00.000 UTC [48] LOG:  database system is ready to accept connections")).toBe(false);
    expect(renderTemplate(py!.template, {}).env.SCRIPT).toBe("main.py");
  });
});
