import { describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { HostPortMode, TemplateSchema, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { Protocol, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { FormError } from "../servers/spec-form-model.js";
import {
  copyForm,
  editorFieldOf,
  emptyTemplateForm,
  emptyVariable,
  formFromTemplate,
  move,
  previewOf,
  problemsAfterEdit,
  problemsOfPreview,
  problemsOfSave,
  templateFromForm,
} from "./template-form-model.js";

const full = create(TemplateSchema, {
  id: "tpl_1",
  project: "default",
  name: "Paper",
  description: "A Minecraft server",
  version: 3n,
  images: [
    { image: "ghcr.io/org/java:21", label: "Java 21" },
    { image: "ghcr.io/org/java:17", label: "" },
  ],
  startup: "java -Xmx{{SERVER_MEMORY}}M -jar {{JAR}}",
  startupShell: true,
  variables: [
    { env: "JAR", name: "Jar", description: "the jar", defaultValue: "server.jar", required: true, userEditable: true, rule: { kind: VariableKind.STRING, regex: "^[\\w.-]+\\.jar$", max: 64 } },
    { env: "MODE", defaultValue: "a", userEditable: false, hidden: true, rule: { kind: VariableKind.STRING, allowed: ["a", "b, c"], nullable: true } },
    { env: "PASS", secret: true, userEditable: true },
    { env: "N", rule: { kind: VariableKind.INTEGER, min: -2, max: 1.5 } },
  ],
  ports: [
    { name: "game", containerPort: 25565, protocol: Protocol.TCP, hostPortMode: HostPortMode.RANGE, hostPortMin: 25565, hostPortMax: 25600 },
    { containerPort: 19132, protocol: Protocol.UDP, hostPortMode: HostPortMode.FIXED, hostPort: 19133 },
    { containerPort: 8080, protocol: Protocol.TCP, hostPortMode: HostPortMode.NONE },
  ],
  dataMountPath: "/srv",
  stopCommand: "stop",
  stopSignal: "SIGINT",
  console: true,
  restartPolicy: RestartPolicy.ALWAYS,
  resources: { memoryBytes: 1073741824n, memorySwapBytes: 2147483648n, cpus: 1.5, pidsLimit: -1n, diskQuotaBytes: 10737418240n, cpuShares: 512, cpusetCpus: "0-1", blkioWeight: 100, stopOverDiskQuota: true },
  install: { image: "alpine:3", script: "#!/bin/ash\necho hi\n", entrypoint: "ash", timeoutSeconds: 120 },
  readyPattern: "Done \\(",
});

/** The content of a template (what an update sends), as bytes: equal bytes, equal templates. */
const content = (t: ReturnType<typeof templateFromForm>) => toBinary(TemplateSchema, create(TemplateSchema, t));
const contentOf = (t: typeof full) => toBinary(TemplateSchema, create(TemplateSchema, { ...t, id: "", version: 0n }));

describe("form ↔ template", () => {
  it("round-trips every field the editor covers", () => {
    const f = formFromTemplate(full);
    expect(f.memory).toBe("1G");
    expect(f.pidsLimit).toBe("none");
    expect(f.variables[1]!.rule.allowed).toBe("a\nb, c");
    expect(f.ports[0]!.mode).toBe(HostPortMode.RANGE);
    expect(f.install).toBe(true);
    expect(content(templateFromForm(f))).toEqual(contentOf(full));
  });

  it("round-trips a minimal template (no rule, no install, no limits, defaults for unspecified enums)", () => {
    const t = create(TemplateSchema, { name: "x", images: [{ image: "busybox:1.36" }], variables: [{ env: "A", userEditable: true }], ports: [{ containerPort: 80 }] });
    const out = create(TemplateSchema, templateFromForm(formFromTemplate(t)));
    expect(out.variables[0]!.rule).toBeUndefined();
    expect(out.install).toBeUndefined();
    expect(out.resources).toBeUndefined();
    // Unspecified enums are shown (and sent) as what they mean.
    expect(out.ports[0]!.hostPortMode).toBe(HostPortMode.SAME);
    expect(out.ports[0]!.protocol).toBe(Protocol.TCP);
    expect(out.restartPolicy).toBe(RestartPolicy.ON_FAILURE);
  });

  it("starts a new template with one empty image row and a string rule for a new variable, and drops empty image rows", () => {
    const f = emptyTemplateForm();
    f.images.push({ image: "busybox:1.36", label: "" });
    f.variables.push({ ...emptyVariable(), env: "X" });
    const t = templateFromForm(f);
    expect(t.images).toEqual([{ image: "busybox:1.36", label: "" }]);
    expect(t.variables![0]!.rule).toEqual({ kind: VariableKind.STRING, nullable: false, allowed: [], regex: "" });
  });

  it("refuses what is not a number or a size, naming every input with the manager's path", () => {
    const f = formFromTemplate(full);
    f.variables[0]!.rule.min = "three";
    f.ports[1]!.hostPort = "12a";
    f.memory = "lots";
    f.installTimeout = "-1";
    let err: unknown;
    try {
      templateFromForm(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FormError);
    expect((err as FormError).problems.map((p) => p.field)).toEqual(["variables[0].rule.min", "ports[1].host_port", "resources.memory_bytes", "install.timeout_seconds"]);
  });

  it("copies a template under another name, in no project", () => {
    const c = copyForm(full);
    expect(c.name).toBe("Paper copy");
    expect(c.project).toBe("");
    expect(c.startup).toBe(full.startup);
  });
});

describe("editorFieldOf", () => {
  const f = formFromTemplate(full);
  it.each([
    ["template.variables[1].rule.regex", "variables[1].rule.regex"],
    ["template.variables[0].env", "variables[0].env"],
    ["template.variables[1].rule.allowed[3]", "variables[1].rule.allowed"],
    ["template.variables[1].rule", "variables[1].rule.kind"],
    ["template.variables[0].rule.min", "variables[0].rule.min"],
    ['template.variables["MODE"]', "variables[1].default_value"],
    ["template.images[1].image", "images[1].image"],
    ["template.images", "images"],
    ["template.ports[0]", "ports[0].host_port_mode"],
    ["template.ports[1].host_port", "ports[1].host_port"],
    ["template.startup", "startup"],
    ["template.ready_pattern", "ready_pattern"],
    ["template.data_mount_path", "data_mount_path"],
    ["template.install.script", "install.script"],
    ["template.install", "install"],
    ["template.resources", "resources.memory_swap_bytes"],
    ["template.resources.memory_bytes", "resources.memory_bytes"],
    ["template.resources.cpu_shares", "resources"],
    ["template.name", "name"],
    ["template.project", "project"],
  ])("%s → %s", (path, key) => {
    expect(editorFieldOf(path, f)).toBe(key);
  });

  it("names no input for a row the form does not have, or a path it does not know", () => {
    expect(editorFieldOf("template.variables[9].env", f)).toBe("variables");
    expect(editorFieldOf('template.variables["NOPE"]', f)).toBeUndefined();
    expect(editorFieldOf("template_id", f)).toBeUndefined();
  });
});

describe("problemsOfSave", () => {
  const f = formFromTemplate(full);
  const invalid = (violations: { field: string; description: string }[], message = "bad") =>
    new ConnectError(message, Code.InvalidArgument, undefined, [{ desc: BadRequestSchema, value: { fieldViolations: violations } }]);

  it("puts each violation on its input; the rest with their path under the form", () => {
    const ps = problemsOfSave(
      invalid([
        { field: "template.variables[0].rule.regex", description: "not a valid JavaScript regular expression (Unterminated group); fix or remove it" },
        { field: "template.something_new", description: "is odd" },
      ]),
      f,
    );
    expect(ps).toEqual([
      { field: "variables[0].rule.regex", message: "not a valid JavaScript regular expression (Unterminated group); fix or remove it" },
      { field: undefined, message: "template.something_new: is odd" },
    ]);
  });

  it("reads the field from the message when there are no details", () => {
    expect(problemsOfSave(new ConnectError("template.startup: {{X}} is not a variable", Code.InvalidArgument), f)).toEqual([{ field: "startup", message: "{{X}} is not a variable" }]);
  });

  it("shows a taken name on the name, and other refusals as the manager worded them", () => {
    expect(problemsOfSave(new ConnectError('template "Paper" exists', Code.AlreadyExists), f)).toEqual([{ field: "name", message: 'template "Paper" exists' }]);
    expect(problemsOfSave(new ConnectError("template is global: needs an all-projects admin", Code.PermissionDenied), f)).toEqual([
      { field: undefined, message: "PermissionDenied: template is global: needs an all-projects admin" },
    ]);
  });
});

describe("preview", () => {
  it("puts a bad example value on its variable, other problems under the preview", () => {
    const err = new ConnectError("bad", Code.InvalidArgument, undefined, [
      {
        desc: BadRequestSchema,
        value: {
          fieldViolations: [
            { field: 'ref.variables["JAR"]', description: "JAR must match /x/" },
            { field: "ref.image", description: "the template does not offer it" },
            { field: "ref.ports[0]", description: "no free port" },
          ],
        },
      },
    ]);
    expect(problemsOfPreview(err)).toEqual([
      { field: 'template.variables["JAR"]', message: "JAR must match /x/" },
      { field: "template.image", message: "the template does not offer it" },
      { field: undefined, message: "ports[0]: no free port" },
    ]);
    // A draft's (unsaved changes): its values and image on the same fields, its own problems under the preview.
    const draft = new ConnectError("bad", Code.InvalidArgument, undefined, [
      {
        desc: BadRequestSchema,
        value: {
          fieldViolations: [
            { field: 'draft_variables["JAR"]', description: "JAR must match /x/" },
            { field: "draft_image", description: "the template does not offer it" },
            { field: "draft.startup", description: "{{NOPE}} is not a variable" },
          ],
        },
      },
    ]);
    expect(problemsOfPreview(draft)).toEqual([
      { field: 'template.variables["JAR"]', message: "JAR must match /x/" },
      { field: "template.image", message: "the template does not offer it" },
      { field: undefined, message: "startup: {{NOPE}} is not a variable" },
    ]);
  });

  it("shows the command, the sorted environment and the ports", () => {
    const spec = create(ServerSpecSchema, {
      command: ["sleep", "5"],
      env: { B: "2", A: "1" },
      ports: [
        { hostPort: 18080, containerPort: 8080, protocol: Protocol.TCP },
        { hostPort: 19132, containerPort: 19132, protocol: Protocol.UDP },
      ],
    });
    expect(previewOf(spec)).toEqual({ command: ["sleep", "5"], env: [["A", "1"], ["B", "2"]], ports: ["18080 → 8080/tcp", "19132 → 19132/udp"] });
  });
});

describe("editing", () => {
  it("moves list items", () => {
    expect(move([1, 2, 3], 0, 2)).toEqual([2, 3, 1]);
    expect(move([1, 2, 3], 2, 1)).toEqual([1, 3, 2]);
    expect(move([1, 2, 3], 0, -1)).toEqual([1, 2, 3]);
  });

  it("drops the problems of changed inputs, and a list's problems when it is reordered", () => {
    const a = formFromTemplate(full);
    const problems = [
      { field: "name", message: "taken" },
      { field: "variables[0].rule.regex", message: "bad" },
      { field: "startup", message: "unknown placeholder" },
      { field: undefined, message: "general" },
    ];
    const renamed = { ...a, name: "Other" };
    expect(problemsAfterEdit(problems, a, renamed).map((p) => p.field)).toEqual(["variables[0].rule.regex", "startup", undefined]);
    const regexFixed = { ...a, variables: a.variables.map((v, i) => (i === 0 ? { ...v, rule: { ...v.rule, regex: "^x$" } } : v)) };
    // The startup's problem may be a placeholder of a variable: a variable change drops it too.
    expect(problemsAfterEdit(problems, a, regexFixed).map((p) => p.field)).toEqual(["name", undefined]);
    const reordered = { ...a, variables: move(a.variables, 0, 1) };
    expect(problemsAfterEdit(problems, a, reordered).map((p) => p.field)).toEqual(["name", undefined]);
  });
});
