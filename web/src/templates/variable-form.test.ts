import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { TemplateSchema, TemplateVariableSchema, VariableKind, type TemplateVariable } from "@berth/proto/berth/v1/template_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { checkboxValue, checkValue, checkValues, fieldOfTemplatePath, initialValues, inputOf, isChecked, problemsOfTemplateError, shownVariables, valuesToSend, variableField } from "./variable-form.js";

const v = (init: Parameters<typeof create<typeof TemplateVariableSchema>>[1]): TemplateVariable => create(TemplateVariableSchema, { userEditable: true, ...init });

describe("inputOf", () => {
  it("picks the input from the rule", () => {
    expect(inputOf(v({ env: "A" }))).toEqual({ type: "text", secret: false });
    expect(inputOf(v({ env: "A", secret: true }))).toEqual({ type: "text", secret: true });
    expect(inputOf(v({ env: "A", rule: { kind: VariableKind.INTEGER, min: 1, max: 10 } }))).toEqual({ type: "number", step: "1", min: 1, max: 10 });
    expect(inputOf(v({ env: "A", rule: { kind: VariableKind.NUMBER } }))).toEqual({ type: "number", step: "any" });
    expect(inputOf(v({ env: "A", rule: { kind: VariableKind.BOOLEAN } }))).toEqual({ type: "checkbox" });
    expect(inputOf(v({ env: "A", rule: { kind: VariableKind.STRING, allowed: ["a", "b"] } }))).toEqual({ type: "select", options: ["a", "b"] });
    // An allowed list wins over the kind.
    expect(inputOf(v({ env: "A", rule: { kind: VariableKind.INTEGER, allowed: ["1", "2"] } })).type).toBe("select");
  });
});

describe("checkValue", () => {
  it("mirrors the manager's rule order", () => {
    const req = v({ env: "A", required: true, rule: { kind: VariableKind.INTEGER, min: 1, max: 100 } });
    expect(checkValue(req, "")).toMatch(/required/);
    expect(checkValue(req, "x")).toMatch(/whole number/);
    expect(checkValue(req, "1.5")).toMatch(/whole number/);
    expect(checkValue(req, "0")).toMatch(/at least 1/);
    expect(checkValue(req, "101")).toMatch(/at most 100/);
    expect(checkValue(req, "+50")).toBeUndefined();
    expect(checkValue(req, "a\0")).toMatch(/NUL/);
  });
  it("accepts an empty nullable value and a rule-less one, refuses an empty integer that is neither", () => {
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.INTEGER, nullable: true } }), "")).toBeUndefined();
    expect(checkValue(v({ env: "A" }), "")).toBeUndefined();
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.INTEGER } }), "")).toMatch(/whole number/);
  });
  it("checks numbers, booleans, allowed lists, lengths and regexes", () => {
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.NUMBER } }), "2e3")).toBeUndefined();
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.NUMBER } }), "1..5")).toMatch(/number/);
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.BOOLEAN } }), "yes")).toMatch(/true, false, 1 or 0/);
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.BOOLEAN } }), "0")).toBeUndefined();
    expect(checkValue(v({ env: "A", rule: { allowed: ["x", "y"] } }), "z")).toMatch(/one of: x, y/);
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.STRING, min: 2, max: 3 } }), "a")).toMatch(/at least 2 characters/);
    expect(checkValue(v({ env: "A", rule: { kind: VariableKind.STRING, min: 2, max: 3 } }), "abcd")).toMatch(/at most 3 characters/);
    expect(checkValue(v({ env: "A", rule: { regex: "^[a-z]+$" } }), "ab1")).toMatch(/match/);
    expect(checkValue(v({ env: "A", rule: { regex: "^[a-z]+$" } }), "ab")).toBeUndefined();
    // A pattern that does not compile is left to the manager.
    expect(checkValue(v({ env: "A", rule: { regex: "(" } }), "ab")).toBeUndefined();
  });
});

describe("the form's values", () => {
  const t = create(TemplateSchema, {
    name: "t",
    variables: [
      { env: "SECONDS", name: "Seconds", defaultValue: "10", required: true, userEditable: true, rule: { kind: VariableKind.INTEGER, min: 1 } },
      { env: "FIXED", defaultValue: "bad", userEditable: false, rule: { kind: VariableKind.INTEGER } },
      { env: "HIDDEN", defaultValue: "h", userEditable: false, hidden: true },
    ],
  });
  it("starts from the defaults, shows all but hidden fixed ones, sends only the changed editable ones", () => {
    expect(initialValues(t)).toEqual({ SECONDS: "10", FIXED: "bad", HIDDEN: "h" });
    expect(shownVariables(t).map((x) => x.env)).toEqual(["SECONDS", "FIXED"]);
    expect(valuesToSend(t, { SECONDS: "10", FIXED: "x", HIDDEN: "h" })).toEqual({});
    expect(valuesToSend(t, { SECONDS: "20", FIXED: "bad", HIDDEN: "h" })).toEqual({ SECONDS: "20" });
  });
  it("checks editable variables only, each on its field", () => {
    expect(checkValues(t, initialValues(t))).toEqual([]);
    expect(checkValues(t, { SECONDS: "0" })).toEqual([{ field: variableField("SECONDS"), message: "Seconds must be at least 1" }]);
  });
  it("keeps a boolean's spelling", () => {
    expect(isChecked("true")).toBe(true);
    expect(isChecked("1")).toBe(true);
    expect(isChecked("false")).toBe(false);
    expect(checkboxValue(true, "0")).toBe("1");
    expect(checkboxValue(false, "true")).toBe("false");
  });
});

describe("fieldOfTemplatePath", () => {
  it("puts the manager's violations on the form's fields", () => {
    expect(fieldOfTemplatePath('template.variables["SECONDS"]')).toBe(variableField("SECONDS"));
    expect(fieldOfTemplatePath('variables["X_1"]')).toBe(variableField("X_1"));
    expect(fieldOfTemplatePath("template.image")).toBe("template.image");
    expect(fieldOfTemplatePath("spec.name")).toBe("name");
    expect(fieldOfTemplatePath("template.ports[0]")).toBeUndefined();
  });
});

describe("problemsOfTemplateError", () => {
  const badRequest = (...violations: [string, string][]) =>
    new ConnectError("invalid", Code.InvalidArgument, undefined, [
      { desc: BadRequestSchema, value: { fieldViolations: violations.map(([field, description]) => ({ field, description })) } },
    ]);
  it("puts each violation of the manager's InvalidArgument on its variable's field", () => {
    expect(problemsOfTemplateError(badRequest(['template.variables["SECONDS"]', "SECONDS must be at most 86400"], ["template.ports[0]", "no free port"]))).toEqual([
      { field: variableField("SECONDS"), message: "SECONDS must be at most 86400" },
      { field: undefined, message: "template.ports[0]: no free port" },
    ]);
  });
  it("reads the field from the message when there are no details; a taken name lands on the name", () => {
    expect(problemsOfTemplateError(new ConnectError('template.variables["MODE"]: Mode is not editable', Code.InvalidArgument))).toEqual([{ field: variableField("MODE"), message: "Mode is not editable" }]);
    expect(problemsOfTemplateError(new ConnectError("name taken", Code.AlreadyExists))[0]?.field).toBe("name");
    expect(problemsOfTemplateError(new ConnectError("gone", Code.NotFound))).toEqual([{ field: undefined, message: "NotFound: gone" }]);
  });
});
