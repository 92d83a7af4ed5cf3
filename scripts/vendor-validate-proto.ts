/**
 * Prints `buf/validate/validate.proto` (protovalidate's rule definitions) from
 * the file descriptor embedded in the npm package `@bufbuild/protovalidate`.
 *
 * Why: berth's .proto files annotate fields with `buf.validate` rules, so buf
 * needs validate.proto to compile them. The usual source, the Buf Schema
 * Registry (`buf.build/bufbuild/protovalidate`), is not reachable from where
 * berth is built; the npm package is, and it carries the compiled descriptor
 * of exactly the rules its runtime evaluates. Printing the .proto back from
 * that descriptor keeps the two in lockstep: same names, field numbers, types,
 * oneofs, reserved ranges and the `predefined` CEL rules of every standard
 * rule. Comments do not survive compilation, so the printed file has none
 * beyond its header (upstream's documentation: https://protovalidate.com).
 *
 * Run by hand after changing the @bufbuild/protovalidate version:
 *
 *   node --import tsx scripts/vendor-validate-proto.ts > proto/buf/validate/validate.proto
 *   npx buf generate && npx buf lint
 *
 * `manager/src/api/protovalidate.test.ts` checks that the descriptor buf
 * compiles from the printed file equals the package's byte for byte.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { getExtension, isFieldSet } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  FileOptionsSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate, predefined, RuleSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/** Renders a FileDescriptorProto of buf/validate/validate.proto as .proto source. */
export function printValidateProto(file: FileDescriptorProto, version: string): string {
  const out: string[] = [];
  out.push(
    `// buf/validate/validate.proto, printed from the file descriptor embedded in`,
    `// @bufbuild/protovalidate ${version} (gen/buf/validate/validate_pb.js) by`,
    `// scripts/vendor-validate-proto.ts. Do not edit: re-run the script instead.`,
    `//`,
    `// Copyright 2023-2025 Buf Technologies, Inc. Licensed under the Apache License,`,
    `// Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).`,
    `//`,
    `// Deviation from upstream's source: no comments (a compiled descriptor has`,
    `// none); everything that reaches a descriptor — names, numbers, types,`,
    `// oneofs, reserved ranges, options including every (predefined).cel rule —`,
    `// is the same (checked byte for byte by manager/src/api/protovalidate.test.ts).`,
    "",
  );
  if (file.syntax && file.syntax !== "proto2") throw new Error(`unsupported syntax ${file.syntax}`);
  out.push(`syntax = "proto2";`, "", `package ${file.package};`, "");
  for (const d of file.dependency) out.push(`import "${d}";`);
  out.push("");
  out.push(...fileOptions(file));
  for (const e of file.extension) {
    out.push("", `extend ${e.extendee} {`, `  ${field(e, "  ")}`, `}`);
  }
  for (const m of file.messageType) out.push("", ...message(m, ""));
  for (const e of file.enumType) out.push("", ...enumeration(e, ""));
  return `${out.join("\n")}\n`;
}

function fileOptions(file: FileDescriptorProto): string[] {
  const o = file.options;
  if (!o) return [];
  const lines: string[] = [];
  for (const f of FileOptionsSchema.fields) {
    if (!isFieldSet(o, f)) continue;
    const v = (o as unknown as Record<string, unknown>)[f.localName];
    if (typeof v === "string") lines.push(`option ${f.name} = ${str(v)};`);
    else if (typeof v === "boolean") lines.push(`option ${f.name} = ${v};`);
    else throw new Error(`unsupported file option ${f.name}`);
  }
  if (o.$unknown?.length) throw new Error("unsupported custom file options");
  return lines;
}

function message(m: DescriptorProto, indent: string): string[] {
  if (m.options) throw new Error(`unsupported options on message ${m.name}`);
  const i2 = `${indent}  `;
  const lines = [`${indent}message ${m.name} {`];
  for (let i = 0; i < m.field.length; i++) {
    const f = m.field[i]!;
    if (!inOneof(f)) {
      lines.push(`${i2}${field(f, i2)}`);
      continue;
    }
    // A oneof's fields are contiguous in a compiled descriptor; print them as one block.
    const index = f.oneofIndex;
    const oneof = m.oneofDecl[index]!;
    if (oneof.options) throw new Error(`unsupported options on oneof ${m.name}.${oneof.name}`);
    if (m.field.slice(0, i).some((g) => inOneof(g) && g.oneofIndex === index)) throw new Error(`oneof ${m.name}.${oneof.name} is not contiguous`);
    lines.push(`${i2}oneof ${oneof.name} {`);
    for (; i < m.field.length && inOneof(m.field[i]!) && m.field[i]!.oneofIndex === index; i++) lines.push(`${i2}  ${field(m.field[i]!, `${i2}  `, true)}`);
    i--;
    lines.push(`${i2}}`);
  }
  for (const r of m.extensionRange) {
    if (r.options) throw new Error(`unsupported extension range options on ${m.name}`);
    lines.push(`${i2}extensions ${r.start} to ${r.end === 536870912 ? "max" : r.end - 1};`);
  }
  if (m.reservedRange.length) lines.push(`${i2}reserved ${m.reservedRange.map((r) => (r.end - 1 === r.start ? `${r.start}` : `${r.start} to ${r.end - 1}`)).join(", ")};`);
  if (m.reservedName.length) lines.push(`${i2}reserved ${m.reservedName.map(str).join(", ")};`);
  if (m.extension.length) throw new Error(`unsupported nested extensions in ${m.name}`);
  for (const n of m.nestedType) {
    if (n.options?.mapEntry) throw new Error(`unsupported map field in ${m.name}`);
    lines.push(...message(n, i2));
  }
  for (const e of m.enumType) lines.push(...enumeration(e, i2));
  lines.push(`${indent}}`);
  return lines;
}

function inOneof(f: FieldDescriptorProto): boolean {
  return isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex);
}

function enumeration(e: EnumDescriptorProto, indent: string): string[] {
  if (e.options) throw new Error(`unsupported options on enum ${e.name}`);
  const lines = [`${indent}enum ${e.name} {`];
  for (const v of e.value) {
    if (v.options) throw new Error(`unsupported options on enum value ${v.name}`);
    lines.push(`${indent}  ${v.name} = ${v.number};`);
  }
  // Enum reserved ranges are inclusive at both ends.
  if (e.reservedRange.length) lines.push(`${indent}  reserved ${e.reservedRange.map((r) => (r.end === r.start ? `${r.start}` : `${r.start} to ${r.end}`)).join(", ")};`);
  if (e.reservedName.length) lines.push(`${indent}  reserved ${e.reservedName.map(str).join(", ")};`);
  lines.push(`${indent}}`);
  return lines;
}

const SCALAR: Partial<Record<FieldDescriptorProto_Type, string>> = {
  [FieldDescriptorProto_Type.DOUBLE]: "double",
  [FieldDescriptorProto_Type.FLOAT]: "float",
  [FieldDescriptorProto_Type.INT64]: "int64",
  [FieldDescriptorProto_Type.UINT64]: "uint64",
  [FieldDescriptorProto_Type.INT32]: "int32",
  [FieldDescriptorProto_Type.FIXED64]: "fixed64",
  [FieldDescriptorProto_Type.FIXED32]: "fixed32",
  [FieldDescriptorProto_Type.BOOL]: "bool",
  [FieldDescriptorProto_Type.STRING]: "string",
  [FieldDescriptorProto_Type.BYTES]: "bytes",
  [FieldDescriptorProto_Type.UINT32]: "uint32",
  [FieldDescriptorProto_Type.SFIXED32]: "sfixed32",
  [FieldDescriptorProto_Type.SFIXED64]: "sfixed64",
  [FieldDescriptorProto_Type.SINT32]: "sint32",
  [FieldDescriptorProto_Type.SINT64]: "sint64",
};

function field(f: FieldDescriptorProto, indent: string, inOneof = false): string {
  if (isFieldSet(f, FieldDescriptorProtoSchema.field.defaultValue)) throw new Error(`unsupported default on ${f.name}`);
  const defaultJson = f.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  if (isFieldSet(f, FieldDescriptorProtoSchema.field.jsonName) && f.jsonName !== defaultJson) throw new Error(`unsupported json_name on ${f.name}`);
  const label = inOneof
    ? ""
    : f.label === FieldDescriptorProto_Label.REPEATED
      ? "repeated "
      : f.label === FieldDescriptorProto_Label.REQUIRED
        ? "required "
        : "optional ";
  const type = SCALAR[f.type] ?? f.typeName;
  if (!type) throw new Error(`unsupported type on ${f.name}`);
  const opts = fieldOptions(f, indent);
  return `${label}${type} ${f.name} = ${f.number}${opts};`;
}

function fieldOptions(f: FieldDescriptorProto, indent: string): string {
  const o = f.options;
  if (!o) return "";
  const parts: string[] = [];
  for (const d of FieldOptionsSchema.fields) {
    if (!isFieldSet(o, d)) continue;
    const v = (o as unknown as Record<string, unknown>)[d.localName];
    if (typeof v === "boolean") parts.push(`${d.name} = ${v}`);
    else throw new Error(`unsupported field option ${d.name} on ${f.name}`);
  }
  const unknownNumbers = new Set((o.$unknown ?? []).map((u) => u.no));
  unknownNumbers.delete(predefined.number);
  if (unknownNumbers.size) throw new Error(`unsupported custom options ${[...unknownNumbers].join(", ")} on ${f.name}`);
  if (o.$unknown?.some((u) => u.no === predefined.number)) {
    const rules = getExtension(o, predefined);
    if (rules.$unknown?.length) throw new Error(`unknown fields in (predefined) on ${f.name}`);
    for (const r of rules.cel) {
      if (r.$unknown?.length) throw new Error(`unknown fields in (predefined).cel on ${f.name}`);
      // Fields in number order (id, message, expression), as the descriptor encodes them.
      const body = [
        isFieldSet(r, ruleField("id")) ? `${indent}    id: ${str(r.id)}` : undefined,
        isFieldSet(r, ruleField("message")) ? `${indent}    message: ${str(r.message)}` : undefined,
        isFieldSet(r, ruleField("expression")) ? `${indent}    expression: ${str(r.expression)}` : undefined,
      ].filter((l): l is string => l !== undefined);
      parts.push(`(predefined).cel = {\n${body.join("\n")}\n${indent}  }`);
    }
  }
  if (!parts.length) return "";
  return ` [\n${parts.map((p) => `${indent}  ${p}`).join(",\n")}\n${indent}]`;
}

function ruleField(name: string) {
  const f = RuleSchema.fields.find((x) => x.name === name);
  if (!f) throw new Error(`buf.validate.Rule has no field ${name}`);
  return f;
}

/** A protobuf text-format string literal (C escapes; UTF-8 passes through). */
function str(s: string): string {
  return `"${s.replace(/[\\"\n\r\t\0]/g, (c) => ({ "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0" })[c]!)}"`;
}

/** The installed @bufbuild/protovalidate's version (for the printed file's header). */
function packageVersion(): string {
  const require = createRequire(import.meta.url);
  // The package does not export its package.json: walk up from its entry point to
  // the one that names it (dist/ may hold others), stopping at the file system root.
  for (let dir = dirname(require.resolve("@bufbuild/protovalidate")); ; dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version: string };
      if (pkg.name === "@bufbuild/protovalidate") return pkg.version;
    }
    if (dirname(dir) === dir) throw new Error("cannot find the package.json of @bufbuild/protovalidate above its entry point");
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(printValidateProto(file_buf_validate_validate.proto, packageVersion()));
}
