import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError, UnauthenticatedError } from "../errors.js";

import { ROLES, type Role } from "../domain/records.js";

export { ROLES, type Role };

/** Who is calling: resolved once per request by the auth interceptor. */
export interface Caller {
  tokenId: string;
  name: string;
  role: Role;
  /** The project the token is scoped to; null for an all-projects admin. */
  project: string | null;
  /** The ledger's actor when it is not a token: a schedule's own calls (`schedule:<id>`, schedules/executor.ts). */
  actor?: string;
}

/** Set by the auth interceptor on every authenticated request. */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "berth caller" });

export function callerOf(ctx: HandlerContext): Caller {
  const c = ctx.values.get(callerKey);
  if (!c) throw new UnauthenticatedError("missing token; send `authorization: Bearer <token>`");
  return c;
}

/** The actor recorded on ledger events. */
export function actorOf(c: Caller): string {
  return c.actor ?? `token:${c.tokenId}:${c.name}`;
}

export function hasRole(c: Caller, role: Role): boolean {
  return ROLES.indexOf(c.role) >= ROLES.indexOf(role);
}

export function requireRole(c: Caller, role: Role, action: string): void {
  if (!hasRole(c, role)) {
    throw new PermissionDeniedError(`${action} needs the ${role} role; token "${c.name}" is ${c.role}`);
  }
}

/** May `c` see objects of `project`? */
export function canSee(c: Caller, project: string): boolean {
  return c.project === null || c.project === project;
}

/**
 * The project a request acts in: the token's own, or for an all-projects
 * admin the requested one (default "default"). Asking for another project than
 * the token's answers NotFound, like any object the caller cannot see.
 */
export function projectFor(c: Caller, requested: string): string {
  const want = requested.trim();
  if (c.project === null) return want ? checkProjectName(want) : DEFAULT_PROJECT;
  if (want && want !== c.project) throw new NotFoundError("project", want);
  return c.project;
}

export const DEFAULT_PROJECT = "default";

/** Project names, the same rule everywhere (servers, tokens): a DNS label, as server names. */
const PROJECT_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Returns `name` if it is a valid project name; InvalidArgument on field `project` otherwise. */
export function checkProjectName(name: string): string {
  if (!PROJECT_RE.test(name)) {
    throw new InvalidArgumentError("project", `${JSON.stringify(name.slice(0, 70))} is not a valid project name: use 1-63 lowercase letters, digits and '-' (not at either end)`);
  }
  return name;
}
