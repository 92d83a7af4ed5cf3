import { clone, create, isMessage } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import {
  CreateServerRequestSchema,
  DesiredState,
  PortMappingSchema,
  Protocol,
  RestartPolicy,
  ServerSpecSchema,
  UpdateServerRequestSchema,
  type ServerSpec,
} from "@berth/proto/berth/v1/server_pb.js";
import { InvalidArgumentError } from "../errors.js";
import { invalidArgument, ruleProblems, type Problem } from "./protovalidate.js";
import { unsafeRegexReason } from "../templates/regex-safety.js";

/**
 * The whole environment, as Docker holds it ("KEY=value" per variable). It
 * travels in every create command and the engine keeps it in the container's
 * config; a spec over this was accepted before and then could not be created.
 */
export const MAX_ENV_TOTAL_BYTES = 256 * 1024;

/**
 * Checks a spec that did not come through `validateRequests` (one built from
 * an orphan's container) and returns a normalized copy (defaults filled in).
 * Throws one InvalidArgumentError naming every problem: the contract's field
 * rules (protovalidate) first, then what they cannot express (`specProblems`).
 */
export function validateSpec(input: ServerSpec | undefined, field = "spec"): ServerSpec {
  if (!input) throw new InvalidArgumentError(field, "required");
  const problems = [...ruleProblems(ServerSpecSchema, input, field), ...specProblems(input, field)];
  if (problems.length) throw invalidArgument(problems);
  return normalizeSpec(input, field);
}

/**
 * A copy of a spec already checked (by `validateRequests` before a
 * CreateServer/UpdateServer handler, or by `validateSpec`) with the defaults
 * filled in: TCP for ports without a protocol, /data, restart on failure,
 * desired running, host id trimmed, capabilities sorted. Checks nothing but
 * presence.
 */
export function normalizeSpec(input: ServerSpec | undefined, field = "spec"): ServerSpec {
  if (!input) throw new InvalidArgumentError(field, "required");
  // A copy of everything (fields added to the contract later included), then the defaults.
  const out = clone(ServerSpecSchema, input);
  out.hostId = input.hostId.trim();
  out.ports = input.ports.map((p) => create(PortMappingSchema, { hostPort: p.hostPort, containerPort: p.containerPort, protocol: protocolOf(p.protocol) }));
  out.dataMountPath = input.dataMountPath || "/data";
  if (out.restartPolicy === RestartPolicy.UNSPECIFIED) out.restartPolicy = RestartPolicy.ON_FAILURE;
  if (out.desiredState === DesiredState.UNSPECIFIED) out.desiredState = DesiredState.RUNNING;
  // The order capabilities are listed in means nothing. Log limits left at 0
  // stay 0: the manager's defaults (--container-log-max-size/-files) apply.
  out.capAdd = [...input.capAdd].sort();
  // "INT" and "SIGINT" are the same signal: stored one way, so the spec hash does not tell them apart.
  out.stopSignal = normalizeStopSignal(input.stopSignal);
  return out;
}

/** A stop signal as stored: with "SIG" ("INT" becomes "SIGINT"); empty stays empty (SIGTERM). */
export function normalizeStopSignal(signal: string): string {
  return signal === "" || signal.startsWith("SIG") ? signal : `SIG${signal}`;
}

/**
 * Why `pattern` cannot be a ready pattern, as a sentence saying what to
 * change, or undefined: it must compile as a JavaScript regular expression
 * and pass the backtracking check templates' patterns pass (the agent runs it
 * on every line a server prints).
 */
export function readyPatternProblem(pattern: string): string | undefined {
  if (pattern === "") return undefined;
  try {
    new RegExp(pattern);
  } catch (e) {
    return `not a valid JavaScript regular expression (${(e as Error).message}); fix it, or leave it empty to count the server ready as soon as it runs`;
  }
  const unsafe = unsafeRegexReason(pattern);
  return unsafe ? `refused: ${unsafe}` : undefined;
}

/**
 * What a spec's field rules cannot say, because it spans several fields or
 * values: the environment's total size, one host port used twice (per
 * protocol), a '..' component in the data mount path, a stop command without
 * a console, a ready pattern that does not compile or can backtrack for long,
 * an empty image (unless the spec comes from a template). Pure.
 */
function specProblems(input: ServerSpec, field = "spec", fromTemplate = false): Problem[] {
  const problems: Problem[] = [];
  // The contract lets an empty image through for a CreateServerRequest with a template (the template gives it).
  if (!fromTemplate && input.image === "") problems.push({ field: `${field}.image`, message: "required: a Docker image reference, e.g. postgres:16 or ghcr.io/org/app:1.2 (or create the server from a template)" });
  const envBytes = Object.entries(input.env).reduce((n, [k, v]) => n + Buffer.byteLength(k) + 1 + Buffer.byteLength(v), 0);
  if (envBytes > MAX_ENV_TOTAL_BYTES) {
    problems.push({ field: `${field}.env`, message: `${envBytes} bytes in total (as KEY=value), more than ${MAX_ENV_TOTAL_BYTES} (256 KiB); keep large values in a file in the server's data directory` });
  }
  const ready = readyPatternProblem(input.readyPattern);
  if (ready) problems.push({ field: `${field}.ready_pattern`, message: ready });
  if (input.stopCommand && !input.console) {
    problems.push({ field: `${field}.stop_command`, message: "is written to the console: set console too, or leave stop_command empty" });
  }
  const seen = new Map<string, number>();
  input.ports.forEach((p, i) => {
    const key = `${p.hostPort}/${protocolOf(p.protocol) === Protocol.UDP ? "udp" : "tcp"}`;
    const dup = seen.get(key);
    if (dup !== undefined) problems.push({ field: `${field}.ports[${i}].host_port`, message: `host port ${key} is already used by ports[${dup}]` });
    else seen.set(key, i);
  });
  if (input.dataMountPath.split("/").includes("..")) {
    problems.push({ field: `${field}.data_mount_path`, message: `"${truncate(input.dataMountPath)}" must be an absolute path inside the container without '..'` });
  }
  return problems;
}

/**
 * Checks every unary and server-streaming request before its handler runs:
 * the contract's field rules for any message, plus `specProblems` for the
 * spec of CreateServer and UpdateServer, all reported in one InvalidArgument.
 * Goes after authentication in the interceptor chain (a caller without a
 * token learns nothing from its request's contents).
 */
export function validateRequests(): Interceptor {
  return (next) => async (req) => {
    if (!req.stream) {
      const problems = ruleProblems(req.method.input, req.message);
      if (isMessage(req.message, CreateServerRequestSchema) || isMessage(req.message, UpdateServerRequestSchema)) {
        if (req.message.spec) problems.push(...specProblems(req.message.spec, "spec", req.message.template !== undefined));
      }
      if (problems.length) throw invalidArgument(problems);
    }
    return next(req);
  };
}

function protocolOf(p: Protocol): Protocol {
  return p === Protocol.UNSPECIFIED ? Protocol.TCP : p;
}

/** Validates an id-or-name field; returns it trimmed. */
export function requireId(value: string, field = "id"): string {
  const v = value.trim();
  if (!v) throw new InvalidArgumentError(field, "required: a server id (srv_...) or name");
  if (v.length > 253) throw new InvalidArgumentError(field, "too long");
  return v;
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
