import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { TemplateFormat, TemplateSchema, VariableKind, type Template } from "@berth/proto/berth/v1/template_pb.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ruleProblems } from "../api/protovalidate.js";
import { InvalidArgumentError } from "../errors.js";
import { assertEachSeed, seedsLabel } from "../../testing/fuzz-kit.js";
import { importEgg, MAX_EGG_BYTES, splitRules, type Unmapped } from "./eggs.js";
import { checkTemplate, renderTemplate, validateVariables } from "./render.js";

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/eggs/", import.meta.url));
const fixture = (name: string) => new Uint8Array(readFileSync(FIXTURES + name));
const fixtureJson = (name: string) => JSON.parse(readFileSync(FIXTURES + name, "utf8")) as Record<string, unknown>;
const bytes = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const FIXTURE_NAMES = ["paper-like.ptdl_v2.json", "generic.ptdl_v1.json", "sandbox.plcn_v1.yaml", "unmappable.ptdl_v2.json"];

/** Every template an import returns must be one the contract and the renderer accept. */
function expectUsable(t: Template) {
  expect(ruleProblems(TemplateSchema, t)).toEqual([]);
  expect(checkTemplate(t)).toEqual([]);
}

const fields = (u: Unmapped[]) => u.map((x) => x.field);

describe("importEgg: fixtures", () => {
  it("a Paper-like PTDL_v2 egg: images, startup placeholders, variables, stop, done, install script", () => {
    const { template: t, unmapped, format, version } = importEgg(fixture("paper-like.ptdl_v2.json"));
    expect([format, version]).toEqual([TemplateFormat.PTERODACTYL_EGG, "PTDL_v2"]);
    expect(t.name).toBe("Block Game (Paper-like)");
    expect(t.description).toBe("A Java block-game server that downloads its jar at install time.");
    expect(t.images.map((i) => [i.label, i.image])).toEqual([
      ["Java 21", "ghcr.io/example/java:21"],
      ["Java 17", "ghcr.io/example/java:17"],
    ]);
    expect(t.startup).toBe("java -Xms128M -Xmx{{SERVER_MEMORY}}M -Dterminal.jline=false -jar {{SERVER_JARFILE}} --port {{SERVER_PORT}} --host {{SERVER_IP}}");
    expect(t.startupShell).toBe(true);
    expect(t.console).toBe(true);
    expect(t.dataMountPath).toBe("/home/container");
    expect(t.stopCommand).toBe("stop");
    expect(t.stopSignal).toBe("");
    expect(t.readyPattern).toBe("\\)! For help, type ");
    expect(new RegExp(t.readyPattern).test("[12:00:01 INFO]: Done (3.2s)! For help, type \"help\"")).toBe(true);
    expect(t.install?.image).toBe("ghcr.io/example/installers:alpine");
    expect(t.install?.entrypoint).toBe("ash");
    expect(t.install?.script.startsWith("#!/bin/ash\ncd /mnt/server\n")).toBe(true);
    expect(t.install?.script).not.toContain("\r");
    expect(t.variables.map((v) => [v.env, v.name, v.defaultValue, v.required, v.userEditable, v.hidden])).toEqual([
      ["GAME_VERSION", "Game version", "latest", false, true, false],
      ["SERVER_JARFILE", "Server jar file", "server.jar", true, true, false],
      ["BUILD_NUMBER", "Build number", "latest", true, false, false],
    ]);
    expect(t.variables[0]!.description).toBe("The version to install, or latest.");
    expect(t.variables[0]!.rule).toMatchObject({ kind: VariableKind.STRING, nullable: true, max: 20, regex: "" });
    expect(t.variables[0]!.rule?.min).toBeUndefined();
    expect(t.variables[1]!.rule?.regex).toBe("^([\\w\\d._-]+)(\\.jar)$");
    expect(fields(unmapped)).toEqual(["config.files", "author", "features"]);
    expect(unmapped[0]!.reason).toMatch(/does not edit the server's configuration files.*server\.properties/);
    expect(unmapped[2]!.reason).toMatch(/eula, java_version/);
    expectUsable(t);
  });

  it("the Paper-like template renders a spec, and its rules check the variables", () => {
    const { template: t } = importEgg(fixture("paper-like.ptdl_v2.json"));
    const spec = renderTemplate(t, { SERVER_JARFILE: "paper-1.21.jar" }, { image: "ghcr.io/example/java:17" });
    expect(spec.image).toBe("ghcr.io/example/java:17");
    expect(spec.command).toEqual(["/bin/sh", "-c", "java -Xms128M -Xmx${SERVER_MEMORY}M -Dterminal.jline=false -jar ${SERVER_JARFILE} --port ${SERVER_PORT} --host ${SERVER_IP}"]);
    expect(spec.env).toMatchObject({ SERVER_JARFILE: "paper-1.21.jar", GAME_VERSION: "latest", BUILD_NUMBER: "latest" });
    expect(validateVariables(t, { SERVER_JARFILE: "paper.zip" }).map((p) => p.field)).toEqual(['variables["SERVER_JARFILE"]']);
    expect(validateVariables(t, { GAME_VERSION: "x".repeat(21) })[0]?.description).toMatch(/at most 20 characters/);
    expect(validateVariables(t, { GAME_VERSION: "" })).toEqual([]);
    expect(validateVariables(t, { BUILD_NUMBER: "42" })[0]?.description).toMatch(/not editable/);
  });

  it("a generic PTDL_v1 egg: single image, ^C, several done strings, Laravel rules", () => {
    const { template: t, unmapped, format, version } = importEgg(fixture("generic.ptdl_v1.json"));
    expect([format, version]).toEqual([TemplateFormat.PTERODACTYL_EGG, "PTDL_v1"]);
    expect(t.images.map((i) => i.image)).toEqual(["ghcr.io/example/python:3.12"]);
    expect(t.stopSignal).toBe("SIGINT");
    expect(t.stopCommand).toBe("");
    expect(t.readyPattern).toBe("Bot ready|Listening on \\*");
    expect(new RegExp(t.readyPattern).test("Listening on *:8080")).toBe(true);
    expect(new RegExp(t.readyPattern).test("Listening on all")).toBe(false);
    // An empty installation script is no install step.
    expect(t.install).toBeUndefined();
    const v = Object.fromEntries(t.variables.map((x) => [x.env, x]));
    expect(v.BOT_FILE!.rule).toMatchObject({ kind: VariableKind.STRING, min: 3, max: 64, regex: "^[A-Za-z0-9_-]+$" });
    expect(v.WORKERS!.rule).toMatchObject({ kind: VariableKind.INTEGER, min: 1, max: 16 });
    expect(v.WORKERS!.defaultValue).toBe("2");
    expect(v.MODE!.rule?.allowed).toEqual(["prod", "dev", "test, slow"]);
    expect(v.DEBUG!.rule?.kind).toBe(VariableKind.BOOLEAN);
    expect(v.DEBUG!.hidden).toBe(true);
    expect(v.DEBUG!.required).toBe(false);
    expect(v.RATIO!.rule).toMatchObject({ kind: VariableKind.NUMBER, nullable: true, min: 1, max: 1 });
    expect(fields(unmapped)).toEqual(["author"]);
    expectUsable(t);
    expect(validateVariables(t, { WORKERS: "17", MODE: "staging", DEBUG: "yes", BOT_FILE: "a b" }).map((p) => p.description)).toEqual([
      expect.stringMatching(/BOT_FILE \(Bot file\) must match/),
      expect.stringMatching(/WORKERS \(Workers\) must be at most 16/),
      expect.stringMatching(/must be one of: "prod", "dev", "test, slow"/),
      expect.stringMatching(/true, false, 1 or 0/),
      // The egg's own default (0.5) breaks its size:1 rule: reported as the template's.
      expect.stringMatching(/RATIO.*default does not fit.*at least 1/),
    ]);
  });

  it("a Pelican YAML egg: maps, lists of rules, sort order, regex done strings", () => {
    const { template: t, unmapped, format, version } = importEgg(fixture("sandbox.plcn_v1.yaml"));
    expect([format, version]).toEqual([TemplateFormat.PELICAN_EGG, "PLCN_v1"]);
    expect(t.name).toBe("Python sandbox");
    expect(t.description).toBe("A shell with Python for experiments.\nNothing is installed.");
    expect(t.images.map((i) => [i.label, i.image])).toEqual([["Python 3.12", "ghcr.io/example/python:3.12"]]);
    expect(t.startup).toBe("python3 -m http.server {{SERVER_PORT}} --bind {{SERVER_IP}} --directory {{ROOT_DIR}}");
    expect(t.stopSignal).toBe("SIGINT");
    expect(t.readyPattern).toBe("Serving HTTP on|(?:^Ready \\(\\d+ ms\\)$)");
    expect(new RegExp(t.readyPattern).test("Ready (12 ms)")).toBe(true);
    expect(t.install).toMatchObject({ image: "alpine:3", entrypoint: "sh", script: '#!/bin/sh\nmkdir -p "/mnt/server/${ROOT_DIR}"' });
    // sort: ROOT_DIR (1) before GREETING (2).
    expect(t.variables.map((v) => v.env)).toEqual(["ROOT_DIR", "GREETING"]);
    expect(t.variables[0]).toMatchObject({ required: true, userEditable: false, rule: { regex: "^[A-Za-z0-9]+$" } });
    // A list of rules is not split on the regex's own '|'.
    expect(t.variables[1]!.rule?.regex).toBe("^[a-z|]+$");
    expect(fields(unmapped)).toEqual(["author", "tags"]);
    expectUsable(t);
  });

  it("an egg with unmappable parts: each is reported with its reason, the rest is mapped", () => {
    const { template: t, unmapped } = importEgg(fixture("unmappable.ptdl_v2.json"));
    expect(unmapped.map((u) => [u.field, u.reason])).toEqual([
      ["docker_images.Bad", expect.stringMatching(/"GHCR\.IO\/Example\/Odd:Latest" is not an image reference.*left out/)],
      ["variables[0].rules", expect.stringMatching(/"url" has no berth equivalent/)],
      ["variables[0].rules", expect.stringMatching(/the flags "i" have no equivalent/)],
      ["variables[0].field_type", expect.stringMatching(/text field/)],
      ["variables[1]", expect.stringMatching(/berth sets SERVER_PORT itself/)],
      ["variables[2].rules", expect.stringMatching(/"email" has no berth equivalent/)],
      ["variables[2].rules", expect.stringMatching(/"max:oops" needs one number/)],
      ["variables[2].rules", expect.stringMatching(/PCRE syntax JavaScript does not read/)],
      ["variables[2].rules", expect.stringMatching(/"unknown_rule:1" has no berth equivalent/)],
      ["variables[2].rules", expect.stringMatching(/min 9 is above max 3; neither is checked/)],
      ["startup", expect.stringMatching(/\{\{server\.uuid\}\} has no berth equivalent and was removed/)],
      ["config.files", expect.stringMatching(/game\.cfg, extra\.ini/)],
      ["config.startup.userInteraction", expect.stringMatching(/does not answer console prompts/)],
      ["config.logs", expect.stringMatching(/container's output/)],
      ["config.stop", expect.stringMatching(/"\^X" is a control sequence/)],
      ["config.extends", expect.stringMatching(/do not inherit/)],
      ["scripts.installation", expect.stringMatching(/"Not An Image" is not an image reference.*install script was left out/)],
      ["author", expect.any(String)],
      ["features", expect.stringMatching(/eula, steam_disk_space/)],
      ["file_denylist", expect.stringMatching(/secrets\.cfg, \*\.key/)],
      ["meta.update_url", expect.stringMatching(/update URLs/)],
    ]);
    expect(t.images.map((i) => i.image)).toEqual(["ghcr.io/example/odd:1"]);
    expect(t.startup).toBe("./odd --port {{SERVER_PORT}} --uuid  --key {{API_KEY}} --port2 {{SERVER_PORT}}");
    expect(t.variables.map((v) => v.env)).toEqual(["API_KEY", "CONTACT"]);
    // alpha_num after an unmappable regex is still the variable's one pattern.
    expect(t.variables[0]).toMatchObject({ hidden: true, required: true, rule: { kind: VariableKind.STRING, regex: "^[A-Za-z0-9]+$" } });
    expect(t.variables[1]!.rule).toMatchObject({ nullable: true, regex: "" });
    expect(t.variables[1]!.rule?.min).toBeUndefined();
    expect(t.variables[1]!.rule?.max).toBeUndefined();
    expect(t.stopCommand).toBe("");
    expect(t.stopSignal).toBe("");
    expect(t.install).toBeUndefined();
    expectUsable(t);
  });

  it("the format asked for must match the content", () => {
    expect(importEgg(fixture("sandbox.plcn_v1.yaml"), TemplateFormat.PELICAN_EGG).format).toBe(TemplateFormat.PELICAN_EGG);
    expect(() => importEgg(fixture("sandbox.plcn_v1.yaml"), TemplateFormat.PTERODACTYL_EGG)).toThrow(/format: the content is a Pelican egg \(PLCN_v1\)/);
    expect(() => importEgg(fixture("generic.ptdl_v1.json"), TemplateFormat.PELICAN_EGG)).toThrow(/a Pterodactyl egg \(PTDL_v1\)/);
  });
});

describe("importEgg: mapped details", () => {
  const base = () => fixtureJson("generic.ptdl_v1.json");
  const withVar = (rules: unknown, extra: Record<string, unknown> = {}) => ({ ...base(), variables: [{ name: "V", env_variable: "V", default_value: "", user_editable: true, rules, ...extra }] });
  const rule = (rules: unknown) => importEgg(bytes(withVar(rules)));

  const rules: [string, unknown, object][] = [
    ["required", "required", { required: true }],
    ["nullable", "nullable", { rule: { nullable: true } }],
    ["string", "string", { rule: { kind: VariableKind.STRING } }],
    ["integer", "integer", { rule: { kind: VariableKind.INTEGER } }],
    ["int", "int", { rule: { kind: VariableKind.INTEGER } }],
    ["numeric", "numeric", { rule: { kind: VariableKind.NUMBER } }],
    ["numeric|integer", "numeric|integer", { rule: { kind: VariableKind.INTEGER } }],
    ["boolean", "boolean", { rule: { kind: VariableKind.BOOLEAN } }],
    ["bool", "bool", { rule: { kind: VariableKind.BOOLEAN } }],
    ["in", "in:a,b,c", { rule: { allowed: ["a", "b", "c"] } }],
    ["in with quotes", 'in:"a,b",c', { rule: { allowed: ["a,b", "c"] } }],
    ["min", "min:2", { rule: { min: 2 } }],
    ["max", "max:5.5", { rule: { max: 5.5 } }],
    ["between", "between:1,10", { rule: { min: 1, max: 10 } }],
    ["size", "size:4", { rule: { min: 4, max: 4 } }],
    ["regex", "regex:/^a|b$/", { rule: { regex: "^a|b$" } }],
    ["regex with # delimiters and a pipe after", "regex:#^[0-9]+$#|max:3", { rule: { regex: "^[0-9]+$", max: 3 } }],
    ["regex with u flag", "regex:/^.$/u", { rule: { regex: "^.$" } }],
    ["alpha", "alpha", { rule: { regex: "^[A-Za-z]+$" } }],
    ["alpha_num", "alpha_num", { rule: { regex: "^[A-Za-z0-9]+$" } }],
    ["alpha_dash", "alpha_dash", { rule: { regex: "^[A-Za-z0-9_-]+$" } }],
    ["digits", "digits:4", { rule: { regex: "^\\d{4}$" } }],
    ["digits_between", "digits_between:2,4", { rule: { regex: "^\\d{2,4}$" } }],
    ["a list (Pelican)", ["required", "in:x,y"], { required: true, rule: { allowed: ["x", "y"] } }],
    ["upper case names", "REQUIRED|Integer", { required: true, rule: { kind: VariableKind.INTEGER } }],
    ["blank and spaced items", " required || max:3 ", { required: true, rule: { max: 3 } }],
  ];
  it.each(rules)("rule %s", (_, r, want) => {
    const { template, unmapped } = rule(r);
    expect(template.variables[0]).toMatchObject(want);
    expect(unmapped.filter((u) => u.field.startsWith("variables"))).toEqual([]);
  });

  const unmappedRules: [string, unknown, RegExp][] = [
    ["an unknown rule", "required|url", /"url" has no berth equivalent/],
    ["a second pattern", "alpha|regex:/^a$/", /one pattern in berth; only the first is checked/],
    ["regex flags", "regex:/a/im", /flags "im"/],
    ["regex without delimiters", "regex:abc", /not a delimited regular expression/],
    ["regex unclosed", "regex:/abc", /closing delimiter is missing/],
    ["min without a number", "min:x", /needs one number/],
    ["between with one number", "between:3", /needs two numbers/],
    ["digits not whole", "digits:1.5", /one whole number/],
    ["in: too many", `in:${Array.from({ length: 201 }, (_, i) => i).join(",")}`, /1 to 200 values/],
    ["a rule that is not text", ["required", 5], /a rule that is a number, not text, was left out/],
  ];
  it.each(unmappedRules)("unmapped: %s", (_, r, reason) => {
    const { unmapped, template } = rule(r);
    expect(unmapped.filter((u) => u.field === "variables[0].rules").map((u) => u.reason)).toEqual([expect.stringMatching(reason)]);
    expectUsable(template);
  });

  it("splits Laravel rule strings without breaking a regex", () => {
    expect(splitRules("required|regex:/^(a|b)$/|max:3")).toEqual(["required", "regex:/^(a|b)$/", "max:3"]);
    expect(splitRules("regex:/a\\/|b/i|min:1")).toEqual(["regex:/a\\/|b/i", "min:1"]);
    expect(splitRules("regex:(a|b)|x")).toEqual(["regex:(a|b)", "x"]);
    expect(splitRules("a|b")).toEqual(["a", "b"]);
    expect(splitRules("regex:/unclosed|x")).toEqual(["regex:/unclosed", "x"]);
  });

  it("panel placeholders become berth's built-ins and variables; {{env.X}} forms too", () => {
    const egg = { ...withVar("", {}), startup: "run {{server.build.memory}} {{server.build.env.V}} {{env.V}} {{env.SERVER_PORT}} {{ V }} {{env.NOPE}}" };
    const { template, unmapped } = importEgg(bytes(egg));
    expect(template.startup).toBe("run {{SERVER_MEMORY}} {{V}} {{V}} {{SERVER_PORT}} {{V}} ");
    expect(unmapped.filter((u) => u.field === "startup").map((u) => u.reason)).toEqual([expect.stringMatching(/\{\{env\.NOPE\}\} has no berth equivalent/)]);
  });

  it("a removed placeholder that joins its neighbours into a new one is removed too (fuzz seed 1481949062)", () => {
    const egg = { ...withVar("", {}), startup: "run {{server.buil{{server.uuid}}d.memory}} {{x{{y}}{{V}}" };
    const { template, unmapped } = importEgg(bytes(egg));
    expect(template.startup).toBe("run {{SERVER_MEMORY}} {{x{{V}}");
    expect(checkTemplate(template)).toEqual([]);
    expect(unmapped.filter((u) => u.field === "startup").map((u) => u.reason)).toEqual([
      expect.stringMatching(/\{\{server\.uuid\}\} has no berth/),
      expect.stringMatching(/\{\{y\}\} has no berth/),
    ]);
  });

  it("Pelican's startup_commands: the first is the startup, the others are reported", () => {
    const egg = fixtureJson("generic.ptdl_v1.json");
    delete egg.startup;
    egg.startup_commands = { Default: "python3 {{BOT_FILE}}", Debug: "python3 -X dev {{BOT_FILE}}" };
    const { template, unmapped } = importEgg(bytes(egg));
    expect(template.startup).toBe("python3 {{BOT_FILE}}");
    expect(unmapped.find((u) => u.field === "startup_commands.Debug")?.reason).toMatch(/one startup; "Default" was taken/);
  });

  it("config sections as objects (Pelican) or JSON text (Pterodactyl), and odd stop values", () => {
    const egg = (config: unknown) => importEgg(bytes({ ...base(), config }));
    expect(egg({ startup: { done: "A.B" }, stop: "quit" }).template).toMatchObject({ readyPattern: "A\\.B", stopCommand: "quit" });
    expect(egg({ startup: '{"done": ""}', stop: "" }).template).toMatchObject({ readyPattern: "", stopCommand: "", stopSignal: "" });
    expect(egg({ stop: "^^C" }).template.stopSignal).toBe("SIGINT");
    expect(egg({ stop: "a\nb" }).unmapped.find((u) => u.field === "config.stop")?.reason).toMatch(/not one line/);
    expect(egg({ startup: "{not json" }).unmapped.find((u) => u.field === "config.startup")?.reason).toMatch(/not valid JSON/);
    expect(egg({ files: '"text"' }).unmapped.find((u) => u.field === "config.files")?.reason).toMatch(/must be an object, not a string/);
    expect(egg({ startup: { done: ["regex:(unclosed", "ok"] } }).template.readyPattern).toBe("ok");
    expect(egg({ startup: { done: ["regex:(unclosed"] } }).unmapped.map((u) => u.field)).toContain("config.startup.done");
    expect(egg({ startup: { done: ["regex:(?<n>a)", "regex:(?<n>b)"] } }).unmapped.find((u) => u.field === "config.startup.done")?.reason).toMatch(/do not make one JavaScript regular expression/);
    expect(egg({ startup: { done: "x".repeat(513) } }).unmapped.find((u) => u.field === "config.startup.done")?.reason).toMatch(/longer than 512/);
    expect(egg({ startup: { done: "x".repeat(512) } }).template.readyPattern).toHaveLength(512);
    expect(egg({ custom: 1 }).unmapped.find((u) => u.field === "config.custom")?.reason).toMatch(/not part of the egg formats/);
  });

  it("long texts are cut and reported; unknown fields are reported", () => {
    const { template, unmapped } = importEgg(bytes({ ...base(), name: "n".repeat(150), description: "d".repeat(5000), homepage: "https://x.invalid" }));
    expect(template.name).toHaveLength(100);
    expect(template.description).toHaveLength(4096);
    expect(unmapped.filter((u) => ["name", "description", "homepage"].includes(u.field)).map((u) => u.reason)).toEqual([
      "longer than 100 characters: cut to 100",
      "longer than 4096 characters: cut to 4096",
      "not part of the egg formats berth knows; not taken over",
    ]);
    expectUsable(template);
  });

  it("images: a v1 list, duplicates once, at most 20", () => {
    const list = Array.from({ length: 22 }, (_, i) => `ghcr.io/example/img:${i}`);
    const egg = { ...base(), image: undefined, images: [...list, list[0]] };
    const { template, unmapped } = importEgg(bytes(egg));
    expect(template.images.map((i) => i.image)).toEqual(list.slice(0, 20));
    expect(unmapped.filter((u) => u.field.startsWith("images[")).map((u) => u.field)).toEqual(["images[20]", "images[21]"]);
  });
});

describe("importEgg: bad input", () => {
  const base = () => fixtureJson("generic.ptdl_v1.json");
  const cases: [string, Uint8Array, string, RegExp][] = [
    ["empty", new Uint8Array(), "content", /empty/],
    ["too large", new Uint8Array(MAX_EGG_BYTES + 1).fill(32), "content", /1048577 bytes; at most 1048576/],
    ["not UTF-8", new Uint8Array([0xff, 0xfe, 0x00]), "content", /not UTF-8/],
    ["neither JSON nor YAML", bytes("{ a: [1, 2\n  - b: }"), "content", /neither JSON nor YAML/],
    ["a scalar", bytes("42"), "content", /must hold an object/],
    ["a list", bytes("[1]"), "content", /must hold an object/],
    ["no meta", bytes({ name: "x" }), "meta.version", /missing.*PTDL_v1, PTDL_v2 or PLCN_v1/],
    ["unknown version", bytes({ ...base(), meta: { version: "PTDL_v9" } }), "meta.version", /"PTDL_v9" is not an egg version berth reads/],
    ["no name", bytes({ ...base(), name: "" }), "name", /missing/],
    ["name not text", bytes({ ...base(), name: { a: 1 } }), "name", /must be text, not an object/],
    ["no image", bytes({ ...base(), image: undefined }), "docker_images", /no usable image/],
    ["only bad images", bytes({ ...base(), image: undefined, docker_images: { A: "UPPER:1" } }), "docker_images", /no usable image/],
    ["docker_images not a map", bytes({ ...base(), docker_images: "x" }), "docker_images", /must be a map/],
    ["no startup", bytes({ ...base(), startup: "" }), "startup", /missing/],
    ["startup too long", bytes({ ...base(), startup: "x".repeat(8193) }), "startup", /8192 bytes/],
    ["config not an object", bytes({ ...base(), config: [1] }), "config", /must be an object, not a list/],
    ["variables not a list", bytes({ ...base(), variables: {} }), "variables", /must be a list/],
    [
      "too many variables",
      bytes({ ...base(), variables: Array.from({ length: 101 }, (_, i) => ({ env_variable: `V${i}` })) }),
      "variables",
      /101 variables; a template has at most 100/,
    ],
    ["a variable not an object", bytes({ ...base(), variables: ["x"] }), "variables[0]", /must be an object, not a string/],
    ["a variable without env", bytes({ ...base(), variables: [{ name: "x" }] }), "variables[0].env_variable", /missing/],
    ["a bad env name", bytes({ ...base(), variables: [{ env_variable: "1-A" }] }), "variables[0].env_variable", /letters, digits and '_'/],
    ["a duplicate env", bytes({ ...base(), variables: [{ env_variable: "A" }, { env_variable: "A" }] }), "variables[1].env_variable", /A is defined twice/],
    ["rules not text", bytes({ ...base(), variables: [{ env_variable: "A", rules: 5 }] }), "variables[0].rules", /must be text like/],
    ["a rule regex that backtracks catastrophically", bytes({ ...base(), variables: [{ env_variable: "A", rules: "required|regex:/^(a+)+$/" }] }), "variables[0].rules", /refused: .*nested quantifier/],
    ["a rule regex with a backreference", bytes({ ...base(), variables: [{ env_variable: "A", rules: "regex:/^(a)\\1$/" }] }), "variables[0].rules", /refused: .*backreference/],
    [
      "a done regex that backtracks catastrophically",
      bytes({ ...base(), config: { startup: JSON.stringify({ done: ["regex:^(\\w+\\s?)*$"] }) } }),
      "config.startup.done",
      /refused: .*nested quantifier/,
    ],
    ["a huge default", bytes({ ...base(), variables: [{ env_variable: "A", default_value: "x".repeat(32769) }] }), "variables[0].default_value", /32768 bytes/],
    ["scripts not an object", bytes({ ...base(), scripts: "x" }), "scripts", /must be an object/],
    ["install script too long", bytes({ ...base(), scripts: { installation: { script: "x".repeat(262145), container: "alpine:3" } } }), "scripts.installation.script", /256 KiB/],
    ["entrypoint with spaces", bytes({ ...base(), scripts: { installation: { script: "x", container: "alpine:3", entrypoint: "bash -x" } } }), "scripts.installation.entrypoint", /one program/],
    ["YAML alias bomb", bytes(`a: &a [x,x,x,x,x,x,x,x,x,x]\n${Array.from({ length: 150 }, (_, i) => `b${i}: *a`).join("\n")}\n`), "content", /neither JSON nor YAML.*alias/i],
  ];
  it.each(cases)("%s → InvalidArgument on %s", (_, input, field, message) => {
    let err: unknown;
    try {
      importEgg(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).field).toBe(field);
    expect((err as InvalidArgumentError).message).toMatch(message);
  });
});

describe(`fuzz: importEgg only returns a usable template or throws InvalidArgumentError${seedsLabel()}`, () => {
  const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
  const originals = FIXTURE_NAMES.map(fixture);
  const jsonFixtures = FIXTURE_NAMES.filter((n) => n.endsWith(".json")).map(fixtureJson);

  /** Runs importEgg; fails the property on anything but a usable template or an InvalidArgumentError. */
  const check = (input: Uint8Array) => {
    let result;
    try {
      result = importEgg(input);
    } catch (e) {
      if (e instanceof InvalidArgumentError) return;
      throw e;
    }
    expect(ruleProblems(TemplateSchema, result.template)).toEqual([]);
    expect(checkTemplate(result.template)).toEqual([]);
  };

  it("random bytes", async () => {
    await assertEachSeed(fc.property(fc.uint8Array({ maxLength: 2048 }), check), { numRuns: RUNS });
  });

  it("fixtures with bytes flipped, inserted and deleted", async () => {
    const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom("flip", "insert", "delete"), byte: fc.integer({ min: 0, max: 255 }), len: fc.integer({ min: 1, max: 16 }) });
    await assertEachSeed(
      fc.property(fc.nat({ max: originals.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 8 }), (which, muts) => {
        let b = Array.from(originals[which]!);
        for (const m of muts) {
          const at = m.at % (b.length + 1);
          if (m.kind === "flip") b[at % b.length] = m.byte;
          else if (m.kind === "insert") b.splice(at, 0, ...Array<number>(m.len).fill(m.byte));
          else b.splice(at, m.len);
        }
        check(new Uint8Array(b));
      }),
      { numRuns: RUNS },
    );
  });

  it("fixtures with fields replaced by random JSON values", async () => {
    // Paths into an egg, to be replaced by anything: type confusion at every level.
    const paths = [
      ["name"], ["description"], ["meta"], ["meta", "version"], ["docker_images"], ["image"], ["images"], ["startup"], ["startup_commands"], ["config"], ["config", "stop"],
      ["config", "startup"], ["config", "files"], ["config", "logs"], ["scripts"], ["scripts", "installation"], ["scripts", "installation", "container"],
      ["scripts", "installation", "script"], ["variables"], ["variables", 0], ["variables", 0, "rules"], ["variables", 0, "env_variable"], ["variables", 0, "default_value"],
      ["variables", 1, "rules"], ["variables", 0, "user_viewable"], ["variables", 0, "sort"], ["features"], ["file_denylist"], ["__proto__"], ["constructor"],
    ];
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.string(),
      fc.constantFrom("", "^C", "PTDL_v2", "PLCN_v1", "regex:/a|b/", "required|integer|min:5|max:1", "{{server.build.memory}}", "{{", "}}", "in:", "regex:/(/", "regex:/(?<n>x)/", '{"done": ["x", "regex:("]}'),
    );
    await assertEachSeed(
      fc.property(fc.nat({ max: jsonFixtures.length - 1 }), fc.array(fc.tuple(fc.constantFrom(...paths), value), { minLength: 1, maxLength: 6 }), (which, edits) => {
        const egg = structuredClone(jsonFixtures[which]!) as Record<string | number, unknown>;
        for (const [path, v] of edits) {
          let at: Record<string | number, unknown> = egg;
          for (const key of path.slice(0, -1)) {
            const next = at[key];
            if (typeof next !== "object" || next === null) break;
            at = next as Record<string | number, unknown>;
          }
          Object.defineProperty(at, path[path.length - 1]!, { value: v, enumerable: true, writable: true, configurable: true });
        }
        check(bytes(egg));
      }),
      { numRuns: RUNS },
    );
  });

  it("random YAML-looking text", async () => {
    const token = fc.constantFrom("meta:\n  version: PLCN_v1\n", "name: x\n", "startup: a\n", "docker_images:\n  a: alpine:3\n", "variables:\n  - env_variable: A\n", "- ", "  ", "&a ", "*a ", "!!binary ", "{", "}", "[", "]", ": ", "\n", "'", '"', "#", "|\n", ">-\n", "? ", "---\n", "...\n", "%YAML 1.2\n");
    await assertEachSeed(fc.property(fc.array(fc.oneof(token, fc.string({ maxLength: 8 })), { maxLength: 40 }), (parts) => check(bytes(parts.join("")))), { numRuns: RUNS });
  });
});
