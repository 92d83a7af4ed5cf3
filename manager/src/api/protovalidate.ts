/**
 * The field rules written in the contract (`buf.validate` annotations in
 * proto/berth/v1/*.proto), evaluated with protovalidate.
 *
 * The rules live in the descriptors, so they are one source for everything
 * that reads them: this manager, the dashboard's form, and any client — gRPC
 * reflection serves them, and `grpcurl describe` shows them on each field.
 * Everything a rule cannot say (one host port used twice in a spec, the
 * environment's total size, a '..' path component) stays in validate.ts.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import { InvalidArgumentError } from "../errors.js";

/** One thing wrong with a request: the field's path (`spec.ports[0].host_port`) and what is wrong. */
export interface Problem {
  field: string;
  message: string;
}

/** Validators compile each message type's rules once and keep them; one is enough for the process. */
const validator = createValidator();

/**
 * Every rule `message` breaks (not just the first), as problems whose fields
 * start with `prefix` — e.g. "spec" when `message` is a request's spec.
 * A rule that cannot be evaluated is a bug in the contract: it throws.
 */
export function ruleProblems<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, prefix = ""): Problem[] {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return [];
  if (result.kind === "error") throw result.error;
  return result.violations.map((v) => {
    const path = pathToString(v.field);
    const field = prefix && path ? `${prefix}${path.startsWith("[") ? "" : "."}${path}` : prefix || path || "request";
    return { field, message: v.message };
  });
}

/** At most this many problems are spelled out in one error: its message travels in a header. */
export const MAX_LISTED_PROBLEMS = 20;

/**
 * One InvalidArgument naming every problem:
 * `spec.name: does not match …; spec.ports[0].host_port: must be …`.
 * Its `field` is the first problem's; all of them travel as its violations
 * (a `google.rpc.BadRequest` detail on the wire).
 */
export function invalidArgument(problems: readonly Problem[]): InvalidArgumentError {
  const [first, ...rest] = problems;
  if (!first) throw new Error("invalidArgument() needs at least one problem");
  const listed = rest.slice(0, MAX_LISTED_PROBLEMS - 1).map((p) => `${p.field}: ${p.message}`);
  const more = rest.length - listed.length;
  const tail = more > 0 ? [`and ${more} more problem${more === 1 ? "" : "s"}`] : [];
  return new InvalidArgumentError(
    first.field,
    [first.message, ...listed, ...tail].join("; "),
    problems.map((p) => ({ field: p.field, description: p.message })),
  );
}
