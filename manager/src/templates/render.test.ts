import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Protocol, ResourceLimitsSchema, RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import { HostPortMode, TemplateSchema, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../errors.js";
import { checkTemplate, renderTemplate, splitStartup, StartupSyntaxError, validateVariables } from "./render.js";

const MiB = 1024n * 1024n;

function tpl(init: MessageInitShape<typeof TemplateSchema> = {}) {
  return create(TemplateSchema, {
    name: "Test",
    images: [{ image: "busybox:1", label: "BusyBox" }, { image: "alpine:3" }],
    startup: "server --port {{PORT}} --motd {{MOTD}}",
    variables: [
      { env: "PORT", name: "Port", defaultValue: "25565", userEditable: true, rule: { kind: VariableKind.INTEGER, min: 1024, max: 65535 } },
      { env: "MOTD", defaultValue: "hello", userEditable: true, rule: { kind: VariableKind.STRING, max: 20 } },
    ],
    ...init,
  });
}

describe("splitStartup", () => {
  const cases: [string, string[]][] = [
    ["java -jar server.jar", ["java", "-jar", "server.jar"]],
    ["  a   b\tc\n d ", ["a", "b", "c", "d"]],
    ["echo 'a b' \"c d\"", ["echo", "a b", "c d"]],
    ["echo 'it''s'", ["echo", "its"]],
    ['echo "say \\"hi\\"" \'$HOME\'', ["echo", 'say "hi"', "$HOME"]],
    ['echo "a\\b"', ["echo", "a\\b"]],
    ["echo a\\ b \\;", ["echo", "a b", ";"]],
    ["echo '' \"\"", ["echo", "", ""]],
    ["java -Dx={{X}} '{{Y}}'", ["java", "-Dx={{X}}", "{{Y}}"]],
    ["", []],
  ];
  it.each(cases)("%j → %j", (input, want) => {
    expect(splitStartup(input).map((w) => w.text)).toEqual(want);
  });

  const bad: [string, RegExp][] = [
    ["echo 'open", /' at character 6 is not closed/],
    ['echo "open', /" at character 6 is not closed/],
    ["echo a\\", /lone \\/],
    ["a && b", /"&" at character 3 is shell syntax.*startup_shell/],
    ["a; b", /";"/],
    ["a | b", /"\|"/],
    ["a > f", /">"/],
    ["echo $HOME", /"\$"/],
    ["echo `id`", /"`"/],
    ['echo "$(id)"', /"\$" at character 7/],
    ["(a)", /"\("/],
  ];
  it.each(bad)("%j is refused", (input, msg) => {
    expect(() => splitStartup(input)).toThrow(StartupSyntaxError);
    expect(() => splitStartup(input)).toThrow(msg);
  });
});

describe("checkTemplate", () => {
  const cases: [string, MessageInitShape<typeof TemplateSchema>, { field: string; match: RegExp }[]][] = [
    ["a good template", {}, []],
    ["no image", { images: [] }, [{ field: "images", match: /add at least one image/ }]],
    ["unknown placeholder", { startup: "run {{PORT}} {{NOPE}} {{ server.build.memory }}" }, [{ field: "startup", match: /\{\{NOPE\}\}, \{\{server\.build\.memory\}\} are not a variable/ }]],
    ["built-in placeholders are known", { startup: "run -Xmx{{SERVER_MEMORY}}M {{SERVER_PORT}} {{ SERVER_IP }}" }, []],
    [
      "duplicate env",
      { variables: [{ env: "A" }, { env: "A" }], startup: "" },
      [{ field: "variables[1].env", match: /A is already variables\[0\]/ }],
    ],
    ["reserved env", { variables: [{ env: "SERVER_PORT" }], startup: "" }, [{ field: "variables[0].env", match: /set by berth itself/ }]],
    ["bad env name", { variables: [{ env: "1X" }], startup: "" }, [{ field: "variables[0].env", match: /letters, digits/ }]],
    ["bad regex", { variables: [{ env: "A", rule: { regex: "([a-z" } }], startup: "" }, [{ field: "variables[0].rule.regex", match: /not a valid JavaScript regular expression/ }]],
    ["min above max", { variables: [{ env: "A", rule: { min: 5, max: 2 } }], startup: "" }, [{ field: "variables[0].rule.min", match: /min \(5\) is above max \(2\)/ }]],
    ["shell syntax without startup_shell", { startup: "a {{PORT}} && b {{MOTD}}" }, [{ field: "startup", match: /"&".*startup_shell/ }]],
    ["shell syntax with startup_shell", { startup: "a {{PORT}} && b {{MOTD}}", startupShell: true }, []],
    [
      "secret in a split startup",
      { startup: "run {{PASS}}", variables: [{ env: "PASS", secret: true }] },
      [{ field: "startup", match: /secret variable PASS cannot be put in the command/ }],
    ],
    ["secret in a shell startup", { startup: "run {{PASS}}", startupShell: true, variables: [{ env: "PASS", secret: true }] }, []],
    ["bad ready pattern", { readyPattern: "Done (" }, [{ field: "ready_pattern", match: /not a valid JavaScript regular expression/ }]],
    ["range without bounds", { ports: [{ containerPort: 80, hostPortMode: HostPortMode.RANGE }] }, [{ field: "ports[0]", match: /RANGE port needs/ }]],
    ["fixed without port", { ports: [{ containerPort: 80, hostPortMode: HostPortMode.FIXED }] }, [{ field: "ports[0].host_port", match: /FIXED port needs/ }]],
  ];
  it.each(cases)("%s", (_, init, want) => {
    const got = checkTemplate(tpl(init));
    expect(got.map((p) => p.field)).toEqual(want.map((w) => w.field));
    got.forEach((p, i) => expect(p.description).toMatch(want[i]!.match));
  });
});

describe("validateVariables", () => {
  const t = tpl({
    startup: "",
    variables: [
      { env: "INT", userEditable: true, defaultValue: "5", rule: { kind: VariableKind.INTEGER, min: 1, max: 10 } },
      { env: "NUM", userEditable: true, defaultValue: "1.5", rule: { kind: VariableKind.NUMBER, min: 0.5, max: 2 } },
      { env: "BOOL", userEditable: true, defaultValue: "true", rule: { kind: VariableKind.BOOLEAN } },
      { env: "STR", name: "Some text", userEditable: true, defaultValue: "abc", rule: { min: 2, max: 5 } },
      { env: "PICK", userEditable: true, defaultValue: "a", rule: { allowed: ["a", "b"] } },
      { env: "RE", userEditable: true, defaultValue: "ok-1", rule: { regex: "^[a-z0-9-]+$" } },
      { env: "REQ", userEditable: true, required: true, defaultValue: "x" },
      { env: "NULLABLE", userEditable: true, defaultValue: "", rule: { kind: VariableKind.INTEGER, nullable: true } },
      { env: "NOTNULL", userEditable: true, defaultValue: "1", rule: { kind: VariableKind.INTEGER } },
      { env: "FIXED", userEditable: false, defaultValue: "keep" },
      { env: "ANY", userEditable: true },
    ],
  });
  const cases: [string, Record<string, string>, [string, RegExp][]][] = [
    ["defaults only", {}, []],
    ["good values", { INT: "10", NUM: "-0.5e0".replace("-", ""), BOOL: "0", STR: "ab", PICK: "b", RE: "a-b", REQ: "y", NULLABLE: "3", ANY: "" }, []],
    ["unknown variable", { NOPE: "1" }, [['variables["NOPE"]', /no variable NOPE; its variables are INT, NUM/]]],
    ["integer: not a number", { INT: "five" }, [['variables["INT"]', /INT must be a whole number/]]],
    ["integer: a decimal", { INT: "1.5" }, [['variables["INT"]', /whole number/]]],
    ["integer: below min", { INT: "0" }, [['variables["INT"]', /must be at least 1$/]]],
    ["integer: above max", { INT: "11" }, [['variables["INT"]', /must be at most 10$/]]],
    ["integer: sign allowed", { INT: "+3" }, []],
    ["number: text", { NUM: "1,5" }, [['variables["NUM"]', /must be a number/]]],
    ["number: below min", { NUM: "0.25" }, [['variables["NUM"]', /at least 0.5/]]],
    ["number: above max", { NUM: "2.5" }, [['variables["NUM"]', /at most 2/]]],
    ["boolean: yes", { BOOL: "yes" }, [['variables["BOOL"]', /true, false, 1 or 0/]]],
    ["boolean: false", { BOOL: "false" }, []],
    ["string: too short", { STR: "a" }, [['variables["STR"]', /STR \(Some text\) must be at least 2 characters/]]],
    ["string: too long", { STR: "abcdef" }, [['variables["STR"]', /at most 5 characters/]]],
    ["string: length in characters, not bytes", { STR: "ééééé" }, []],
    ["in: not listed", { PICK: "c" }, [['variables["PICK"]', /one of: "a", "b"/]]],
    ["regex: no match", { RE: "Not OK" }, [['variables["RE"]', /must match the pattern \/\^\[a-z0-9-\]\+\$\//]]],
    ["required: empty", { REQ: "" }, [['variables["REQ"]', /REQ is required: give it a value/]]],
    ["nullable: empty passes its kind", { NULLABLE: "" }, []],
    ["not nullable: empty is checked", { NOTNULL: "" }, [['variables["NOTNULL"]', /whole number/]]],
    ["not editable: another value", { FIXED: "other" }, [['variables["FIXED"]', /not editable.*leave it out/]]],
    ["not editable: its default given", { FIXED: "keep" }, []],
    ["NUL", { ANY: "a\0b" }, [['variables["ANY"]', /NUL/]]],
    ["too long", { ANY: "x".repeat(32769) }, [['variables["ANY"]', /longer than 32768 bytes/]]],
    [
      "several problems, each named",
      { INT: "x", BOOL: "maybe", NOPE: "" },
      [
        ['variables["NOPE"]', /no variable/],
        ['variables["INT"]', /whole number/],
        ['variables["BOOL"]', /true, false/],
      ],
    ],
  ];
  it.each(cases)("%s", (_, values, want) => {
    const got = validateVariables(t, values);
    expect(got.map((p) => p.field)).toEqual(want.map((w) => w[0]));
    got.forEach((p, i) => expect(p.description).toMatch(want[i]![1]));
  });

  it("a default that does not fit its rule is reported as the template's", () => {
    const bad = tpl({ startup: "", variables: [{ env: "N", defaultValue: "abc", userEditable: true, rule: { kind: VariableKind.INTEGER } }] });
    expect(validateVariables(bad, {})).toEqual([{ field: 'variables["N"]', description: expect.stringMatching(/no value and the template's default does not fit/) }]);
    expect(validateVariables(bad, { N: "3" })).toEqual([]);
  });

  it("a required variable without a default must be given", () => {
    const req = tpl({ startup: "", variables: [{ env: "EULA", required: true, userEditable: true }] });
    expect(validateVariables(req, {})[0]?.description).toMatch(/EULA is required/);
  });

  it("a message never quotes the value (it may be a secret)", () => {
    const s = tpl({ startup: "", variables: [{ env: "PASS", secret: true, userEditable: true, rule: { regex: "^[a-z]+$", max: 8 } }] });
    for (const p of validateVariables(s, { PASS: "Sup3rS3cretValue" })) expect(p.description).not.toContain("Sup3rS3cretValue");
  });
});

describe("renderTemplate", () => {
  it("renders image, command, env, ports and the rest of the spec", () => {
    const t = tpl({
      dataMountPath: "/srv",
      stopCommand: "stop",
      stopSignal: "SIGINT",
      readyPattern: "Done \\(.*\\)!",
      console: true,
      restartPolicy: RestartPolicy.ALWAYS,
      resources: { memoryBytes: 2048n * MiB, cpus: 2 },
      ports: [
        { name: "game", containerPort: 25565, hostPortMode: HostPortMode.SAME },
        { containerPort: 25575, hostPortMode: HostPortMode.FIXED, hostPort: 35575 },
        { containerPort: 19132, protocol: Protocol.UDP, hostPortMode: HostPortMode.RANGE, hostPortMin: 30000, hostPortMax: 30010 },
        { containerPort: 9999, hostPortMode: HostPortMode.NONE },
      ],
    });
    const spec = renderTemplate(t, { MOTD: "hi" }, { name: "mc-1", takenHostPorts: new Set(["30000/udp", "30001/tcp"]) });
    expect(spec.name).toBe("mc-1");
    expect(spec.image).toBe("busybox:1");
    expect(spec.command).toEqual(["server", "--port", "25565", "--motd", "hi"]);
    expect(spec.env).toEqual({ PORT: "25565", MOTD: "hi", SERVER_MEMORY: "2048", SERVER_PORT: "25565", SERVER_IP: "0.0.0.0" });
    expect(spec.secretEnv).toEqual([]);
    expect(spec.ports.map((p) => [p.hostPort, p.containerPort, p.protocol])).toEqual([
      [25565, 25565, Protocol.UNSPECIFIED],
      [35575, 25575, Protocol.UNSPECIFIED],
      [30001, 19132, Protocol.UDP],
    ]);
    expect(spec.dataMountPath).toBe("/srv");
    expect(spec.stopCommand).toBe("stop");
    expect(spec.stopSignal).toBe("SIGINT");
    expect(spec.readyPattern).toBe("Done \\(.*\\)!");
    expect(spec.console).toBe(true);
    expect(spec.restartPolicy).toBe(RestartPolicy.ALWAYS);
    expect(spec.resources?.memoryBytes).toBe(2048n * MiB);
    expect(spec.resources?.cpus).toBe(2);
  });

  it("takes the chosen image only when the template offers it", () => {
    expect(renderTemplate(tpl(), {}, { image: "alpine:3" }).image).toBe("alpine:3");
    expect(() => renderTemplate(tpl(), {}, { image: "evil:1" })).toThrow(/image: the template does not offer evil:1; pick one of busybox:1, alpine:3/);
  });

  it("resources given replace the template's defaults, and SERVER_MEMORY follows them", () => {
    const spec = renderTemplate(tpl({ resources: { memoryBytes: 512n * MiB } }), {}, { resources: create(ResourceLimitsSchema, { memoryBytes: 1536n * MiB + 5n }) });
    expect(spec.env.SERVER_MEMORY).toBe("1536");
    expect(renderTemplate(tpl(), {}).env.SERVER_MEMORY).toBe("0");
    expect(renderTemplate(tpl(), {}).env.SERVER_PORT).toBe("");
  });

  const argv: [string, string, Record<string, string>, string[]][] = [
    ["a value with spaces stays one word", "run {{MOTD}}", { MOTD: "a b  c" }, ["run", "a b  c"]],
    ["a value with quotes stays as given", "run {{MOTD}}", { MOTD: `it's "x"` }, ["run", `it's "x"`]],
    ["shell injection stays one word", "run {{MOTD}}", { MOTD: "x; rm -rf / && $(id) `id` | cat" }, ["run", "x; rm -rf / && $(id) `id` | cat"]],
    ["a value that looks like a placeholder is not substituted again", "run {{MOTD}} {{PORT}}", { MOTD: "{{PORT}}" }, ["run", "{{PORT}}", "25565"]],
    ["a placeholder inside a word", "run -Dmotd={{MOTD}}! --port={{PORT}}", { MOTD: "x y" }, ["run", "-Dmotd=x y!", "--port=25565"]],
    ["quoted placeholders", "run '{{MOTD}}' \"[{{PORT}}]\"", { MOTD: "m" }, ["run", "m", "[25565]"]],
    ["an empty unquoted placeholder word is dropped", "run {{MOTD}} end", { MOTD: "" }, ["run", "end"]],
    ["an empty quoted placeholder word stays", "run \"{{MOTD}}\" end", { MOTD: "" }, ["run", "", "end"]],
    ["spaces inside the braces", "run {{ MOTD }}", { MOTD: "m" }, ["run", "m"]],
    ["built-ins", "run {{SERVER_IP}}:{{SERVER_MEMORY}}", {}, ["run", "0.0.0.0:0"]],
    ["a single { or unclosed {{ is literal", "run {x} {{MOTD", {}, ["run", "{x}", "{{MOTD"]],
    ["a newline in a value stays in the word", "run {{MOTD}}", { MOTD: "a\nb" }, ["run", "a\nb"]],
  ];
  it.each(argv)("argv: %s", (_, startup, values, want) => {
    expect(renderTemplate(tpl({ startup, variables: [{ env: "PORT", defaultValue: "25565", userEditable: true }, { env: "MOTD", userEditable: true }] }), values).command).toEqual(want);
  });

  it("copies the template's install script into the spec; without one the spec has none", () => {
    const spec = renderTemplate(tpl({ install: { image: "alpine:3", script: "echo $MOTD > /mnt/server/motd", entrypoint: "ash", timeoutSeconds: 120 } }), { MOTD: "hi" });
    expect(spec.install).toMatchObject({ image: "alpine:3", script: "echo $MOTD > /mnt/server/motd", entrypoint: "ash", timeoutSeconds: 120 });
    // Its environment is the spec's: the variables.
    expect(spec.env.MOTD).toBe("hi");
    expect(renderTemplate(tpl(), {}).install).toBeUndefined();
  });

  it("an empty startup keeps the image's own command", () => {
    expect(renderTemplate(tpl({ startup: "  " }), {}).command).toEqual([]);
  });

  it("a shell startup runs with /bin/sh -c and references values from the environment", () => {
    const t = tpl({ startup: "cd /srv && ./run --motd \"{{MOTD}}\" -p {{ PORT }} -m {{SERVER_MEMORY}} {{PASS}}", startupShell: true, variables: [...tpl().variables, { env: "PASS", secret: true, userEditable: true }] });
    const spec = renderTemplate(t, { MOTD: "$(reboot)", PASS: "s3cret" });
    expect(spec.command).toEqual(["/bin/sh", "-c", 'cd /srv && ./run --motd "${MOTD}" -p ${PORT} -m ${SERVER_MEMORY} ${PASS}']);
    expect(spec.command.join(" ")).not.toContain("reboot");
    expect(spec.command.join(" ")).not.toContain("s3cret");
    expect(spec.env.MOTD).toBe("$(reboot)");
    expect(spec.env.PASS).toBe("s3cret");
    expect(spec.secretEnv).toEqual(["PASS"]);
    // Also as STARTUP, for images whose entrypoint script runs that; a split startup has none.
    expect(spec.env.STARTUP).toBe(spec.command[2]);
    expect(renderTemplate(tpl({ startup: "run {{PORT}}" }), {}).env.STARTUP).toBeUndefined();
  });

  it("a variable named STARTUP wins over the shell startup's copy", () => {
    const t = tpl({ startup: "run", startupShell: true, variables: [{ env: "STARTUP", defaultValue: "mine" }] });
    expect(renderTemplate(t, {}).env.STARTUP).toBe("mine");
  });

  it("a non-editable variable always takes its default", () => {
    const t = tpl({ startup: "run {{V}}", variables: [{ env: "V", defaultValue: "d" }] });
    expect(renderTemplate(t, {}).command).toEqual(["run", "d"]);
    expect(renderTemplate(t, { V: "d" }).env.V).toBe("d");
  });

  it("throws InvalidArgumentError listing every problem with its field", () => {
    let err: unknown;
    try {
      renderTemplate(tpl({ startup: "run {{PORT}} {{NOPE}}" }), { PORT: "80", X: "1" }, { image: "other:1" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    const e = err as InvalidArgumentError;
    expect(e.field).toBe("startup");
    expect(e.violations.map((v) => v.field)).toEqual(["startup", 'variables["X"]', 'variables["PORT"]', "image"]);
    expect(e.message).toMatch(/PORT \(Port\) must be at least 1024/);
  });

  it("a range with no free port, and two ports on one host port, are refused", () => {
    const full = tpl({ ports: [{ containerPort: 80, hostPortMode: HostPortMode.RANGE, hostPortMin: 8000, hostPortMax: 8001 }] });
    expect(() => renderTemplate(full, {}, { takenHostPorts: new Set(["8000/tcp", "8001/tcp"]) })).toThrow(/ports\[0\]: no free tcp host port from 8000 to 8001/);
    expect(renderTemplate(full, {}, { takenHostPorts: new Set(["8000/tcp", "8001/udp"]) }).ports[0]?.hostPort).toBe(8001);
    const clash = tpl({ ports: [{ containerPort: 80 }, { containerPort: 81, hostPortMode: HostPortMode.FIXED, hostPort: 80 }] });
    expect(() => renderTemplate(clash, {})).toThrow(/ports\[1\]: host port 80\/tcp is already taken by another port/);
    const twoRanges = tpl({
      ports: [
        { containerPort: 80, hostPortMode: HostPortMode.RANGE, hostPortMin: 8000, hostPortMax: 8005 },
        { containerPort: 81, hostPortMode: HostPortMode.RANGE, hostPortMin: 8000, hostPortMax: 8005 },
      ],
    });
    expect(renderTemplate(twoRanges, {}).ports.map((p) => p.hostPort)).toEqual([8000, 8001]);
  });
});

describe("the contract's rules (template.proto)", () => {
  it("accept a full template and name what is wrong with a bad one", async () => {
    const { ruleProblems } = await import("../api/protovalidate.js");
    const good = tpl({
      stopSignal: "SIGINT",
      ports: [
        { containerPort: 80, hostPortMode: HostPortMode.FIXED, hostPort: 8080 },
        { containerPort: 81, hostPortMode: HostPortMode.RANGE, hostPortMin: 9000, hostPortMax: 9010 },
      ],
      install: { image: "alpine:3", script: "echo hi", entrypoint: "ash" },
      dataMountPath: "/srv",
    });
    expect(ruleProblems(TemplateSchema, good)).toEqual([]);
    const bad = tpl({
      name: "",
      images: [{ image: "Not/An:Image" }],
      stopSignal: "SIGKILL",
      variables: [{ env: "1X" }],
      ports: [
        { containerPort: 80, hostPortMode: HostPortMode.FIXED },
        { containerPort: 81, hostPortMode: HostPortMode.RANGE, hostPortMin: 9010, hostPortMax: 9000 },
      ],
      install: { image: "alpine:3", script: "", entrypoint: "ba sh" },
      dataMountPath: "/",
    });
    expect(ruleProblems(TemplateSchema, bad).map((p) => p.field).sort()).toEqual(
      ["data_mount_path", "images[0].image", "install.entrypoint", "install.script", "name", "ports[0]", "ports[1]", "stop_signal", "variables[0].env"].sort(),
    );
  });
});
