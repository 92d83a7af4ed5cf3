/**
 * The contract's field rules (the `buf.validate` annotations in
 * proto/berth/v1/server.proto — the ones the manager checks) applied to a
 * spec before the form sends it, so every problem shows at once without a
 * round trip. The manager still checks everything (and what rules cannot
 * say: a host port used twice, the environment's total size, port conflicts);
 * its answers land on the form the same way.
 *
 * protovalidate, with its CEL and RE2 engines, is loaded on the first check
 * (a chunk of its own), not with the dashboard. It uses no eval, so the
 * dashboard's Content-Security-Policy (no 'unsafe-eval') holds.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { FormError, problemsOfAnswer, type SpecForm } from "./spec-form-model.js";

type Validator = import("@bufbuild/protovalidate").Validator;
let validator: Promise<Validator | undefined> | undefined;

function load(): Promise<Validator | undefined> {
  // A chunk that fails to load leaves the checking to the manager.
  validator ??= import("@bufbuild/protovalidate").then((m) => m.createValidator(), () => undefined);
  return validator;
}

/**
 * Throws a FormError naming every rule `spec` breaks, in the manager's words,
 * each on the form field it is about (`form`: the form it was built from,
 * whose empty port rows were not sent). Resolves when the spec keeps every rule.
 */
export async function checkSpecRules(spec: MessageInitShape<typeof ServerSpecSchema>, form?: Pick<SpecForm, "ports">): Promise<void> {
  const v = await load();
  if (!v) return;
  const result = v.validate(ServerSpecSchema, create(ServerSpecSchema, spec));
  if (result.kind !== "invalid") return;
  const violations = result.violations.map((x) => ({ field: `spec.${pathToString(x.field)}`, description: x.message }));
  throw new FormError(problemsOfAnswer({ message: "", violations }, form));
}
