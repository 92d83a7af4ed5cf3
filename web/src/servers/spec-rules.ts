/**
 * The contract's field rules (the `buf.validate` annotations in
 * proto/berth/v1/server.proto — the ones the manager checks) applied to a
 * spec before the form sends it, so every problem shows at once without a
 * round trip. The manager still checks everything (and what rules cannot
 * say: a host port used twice, the environment's total size, port conflicts);
 * its answers land on the form as before.
 *
 * protovalidate, with its CEL and RE2 engines, is loaded on the first check
 * (a chunk of its own), not with the dashboard. It uses no eval, so the
 * dashboard's Content-Security-Policy (no 'unsafe-eval') holds.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { fieldOfMessage, FormError } from "./spec-form-model.js";

type Validator = import("@bufbuild/protovalidate").Validator;
let validator: Promise<Validator | undefined> | undefined;

function load(): Promise<Validator | undefined> {
  // A chunk that fails to load leaves the checking to the manager.
  validator ??= import("@bufbuild/protovalidate").then((m) => m.createValidator(), () => undefined);
  return validator;
}

/**
 * Throws a FormError naming every rule `spec` breaks, in the manager's words
 * and format ("spec.name: …; spec.ports[0].host_port: …"), on the field of
 * the first. Resolves when the spec keeps every rule.
 */
export async function checkSpecRules(spec: MessageInitShape<typeof ServerSpecSchema>): Promise<void> {
  const v = await load();
  if (!v) return;
  const result = v.validate(ServerSpecSchema, create(ServerSpecSchema, spec));
  if (result.kind !== "invalid") return;
  const message = result.violations.map((x) => `spec.${pathToString(x.field)}: ${x.message}`).join("; ");
  throw new FormError(fieldOfMessage(message) ?? "", message);
}
