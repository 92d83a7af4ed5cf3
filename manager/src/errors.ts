import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { clipText, wellFormed } from "./text.js";

/**
 * Domain errors. Code below the API edge throws these; one interceptor
 * (`api/errors.ts`) turns them into ConnectErrors with the matching gRPC code.
 * Every message says what to do next.
 */
export class BerthError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** One problem with one request field, as `google.rpc.BadRequest.FieldViolation` carries it. */
export interface FieldViolation {
  /** The field's path in the request, e.g. `spec.ports[1].host_port`. */
  field: string;
  description: string;
}

/**
 * A request field is malformed. `field` names it, e.g. `spec.ports[1].host_port`.
 * `violations` lists every problem of the request (the one named by `field`
 * when not given); the edge sends them as a `google.rpc.BadRequest` detail.
 */
export class InvalidArgumentError extends BerthError {
  readonly violations: readonly FieldViolation[];
  constructor(
    readonly field: string,
    message: string,
    violations?: readonly FieldViolation[],
  ) {
    super(Code.InvalidArgument, `${field}: ${message}`);
    this.violations = violations ?? [{ field, description: message }];
  }
}

export class NotFoundError extends BerthError {
  constructor(kind: string, id: string, hint = "") {
    super(Code.NotFound, `${kind} "${id}" not found${hint ? `; ${hint}` : ""}`);
  }
}

export class AlreadyExistsError extends BerthError {
  constructor(message: string) {
    super(Code.AlreadyExists, message);
  }
}

/** A server named `name` exists in `project` already (names are unique per project, soft-deleted servers included). */
export class ServerNameTakenError extends AlreadyExistsError {
  constructor(project: string, name: string) {
    super(`a server named "${name}" already exists in project "${project}"; pick another name or update it`);
  }
}

/**
 * A write lost a race with another writer: the record changed since it was
 * read (an expected version that no longer matches), or the server already
 * has an open command. Aborted rather than FailedPrecondition: gRPC reserves
 * Aborted for concurrency conflicts such as a failed read-modify-write, which
 * the caller fixes by reading again and retrying the whole sequence;
 * FailedPrecondition means "do not retry until the state is fixed", which
 * is not true here.
 */
export class ConflictError extends BerthError {
  constructor(message: string) {
    super(Code.Aborted, message);
  }
}

/**
 * How many times an operator action without the caller's expected_version is
 * decided and committed when someone else (usually the reconciler, writing a
 * status) changed the server between the handler's read and its commit
 * (ConflictError). The caller asked for no version check: the
 * read-modify-write is the API's own.
 */
export const WRITE_ATTEMPTS = 5;

/** A lease (store.ts lease.acquire) is held by another holder and has not expired. */
export class LeaseHeldError extends ConflictError {
  constructor(
    readonly lease: string,
    readonly holder: string,
    readonly expiresAt: number,
  ) {
    super(`lease ${lease} is held by ${holder} until ${new Date(expiresAt).toISOString()}; it can be taken once it expires unrenewed`);
  }
}

/**
 * This manager no longer owns the host at the epoch it acted on (store.ts
 * host.renew / host.checkOwner): another manager took the host (its agent
 * connected there) or the term lapsed. Nothing of the batch was written; the
 * manager stops driving the host and leaves it to its owner.
 */
export class HostOwnershipLostError extends ConflictError {
  constructor(
    readonly hostId: string,
    readonly holder: string,
    readonly epoch: number,
    /** The host's lease as stored now (undefined: nobody ever took it). */
    readonly current: { holder: string; epoch: number; expiresAt: number } | undefined,
  ) {
    super(
      `manager ${holder} no longer owns host ${hostId} at epoch ${epoch} (${
        current ? (current.holder === holder && current.epoch === epoch ? "its term lapsed" : `now ${current.holder} at epoch ${current.epoch}`) : "nobody owns it"
      }); it stops driving the host: the manager holding the host's agent stream decides for it`,
    );
  }
}

/** The object is in a state where the operation cannot run (wrong phase, port conflict, ...). */
export class PreconditionError extends BerthError {
  constructor(message: string) {
    super(Code.FailedPrecondition, message);
  }
}

export class UnauthenticatedError extends BerthError {
  constructor(message: string) {
    super(Code.Unauthenticated, message);
  }
}

export class PermissionDeniedError extends BerthError {
  constructor(message: string) {
    super(Code.PermissionDenied, message);
  }
}

export class UnavailableError extends BerthError {
  constructor(message: string) {
    super(Code.Unavailable, message);
  }
}

/**
 * Longest error message sent. Messages quote what the caller sent (an id, a
 * name), and gRPC carries them in a trailer: an unbounded one (a 70 kB id)
 * overflows HTTP/2's frame size and the caller sees Internal instead of the
 * real answer.
 */
export const MAX_ERROR_MESSAGE = 1024;

/**
 * Converts any thrown value into a ConnectError; unknown errors become Internal without leaking details.
 *
 * The message is clipped to MAX_ERROR_MESSAGE without halving a surrogate pair
 * and made well-formed (a lone surrogate, which a Connect JSON request can
 * carry, becomes U+FFFD): connect-es percent-encodes it into the grpc-message
 * trailer with encodeURIComponent, which throws on a lone surrogate, and the
 * call then never ended; the client waited for its deadline instead of an
 * answer. (Found by rpc.fuzz.test.ts, seed 1029363635: a refused CreateServer
 * whose 1,244-character message was clipped inside an emoji.)
 */
export function toConnectError(err: unknown): ConnectError {
  const ce = convert(err);
  const text = wellFormed(clipText(ce.rawMessage, MAX_ERROR_MESSAGE));
  if (text === ce.rawMessage) return ce;
  const sendable = new ConnectError(text, ce.code, ce.metadata, undefined, ce.cause);
  sendable.details = ce.details;
  return sendable;
}

function convert(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof InvalidArgumentError) {
    // Every violation, machine-readable, beside the message that lists them in words.
    const detail = { desc: BadRequestSchema, value: create(BadRequestSchema, { fieldViolations: violationsToSend(err.violations) }) };
    return new ConnectError(err.message, err.code, undefined, [detail]);
  }
  if (err instanceof BerthError) return new ConnectError(err.message, err.code);
  if (isSqliteFullError(err)) {
    return new ConnectError("the manager's database disk is full; free space on it and retry", Code.Unavailable);
  }
  return new ConnectError("internal error; see the manager log", Code.Internal, undefined, undefined, err);
}

/**
 * Characters of field violations sent in one error's details (fields and
 * descriptions together; each text clipped to a quarter of it). The details
 * ride in the same trailer as the message (grpc-status-details-bin), so they
 * are bounded for the same reason: a request with more problems than fit
 * gets the first ones, and the rest once those are fixed.
 */
export const MAX_VIOLATION_CHARS = 4096;

function violationsToSend(all: readonly FieldViolation[]): FieldViolation[] {
  const clip = (s: string) => clipText(s, MAX_VIOLATION_CHARS / 4);
  const out: FieldViolation[] = [];
  let chars = 0;
  for (const v of all) {
    const c = { field: clip(v.field), description: clip(v.description) };
    chars += c.field.length + c.description.length;
    if (chars > MAX_VIOLATION_CHARS && out.length > 0) break;
    out.push(c);
  }
  return out;
}

function isSqliteFullError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_FULL" || code === "SQLITE_IOERR" || code === "SQLITE_READONLY";
}
