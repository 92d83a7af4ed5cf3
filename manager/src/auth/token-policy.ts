import { InvalidArgumentError } from "../errors.js";
import { checkProjectName, projectFor, ROLES, type Caller, type Role } from "./caller.js";

/** Project names follow server names: DNS-label style. */
const MAX_NAME = 64;

export function parseRole(s: string): Role | undefined {
  return (ROLES as readonly string[]).includes(s) ? (s as Role) : undefined;
}

/** The fields of a new token, validated. */
export interface NewToken {
  name: string;
  role: Role;
  /** null: all projects (admin only). */
  project: string | null;
}

/**
 * Validates a token request. `creator` is the calling token, or undefined for
 * the recovery CLI on the manager's host (which may create anything).
 *
 * - `name` is required: it is what events record as the actor.
 * - An empty project means all projects, allowed only for the admin role and
 *   only to a creator that is itself all-projects; a project-scoped admin's
 *   tokens stay in its project (asking for another answers NotFound).
 */
export function checkNewToken(req: { name: string; role: Role | undefined; project: string }, creator: Caller | undefined): NewToken {
  const name = req.name.trim();
  if (!name) throw new InvalidArgumentError("name", 'required: say who or what uses the token, e.g. "ci-deploy" or "alice"');
  if (name.length > MAX_NAME) throw new InvalidArgumentError("name", `at most ${MAX_NAME} characters`);
  if (/[\p{Cc}]/u.test(name)) throw new InvalidArgumentError("name", "must not contain control characters");
  if (!req.role) throw new InvalidArgumentError("role", "required: ROLE_VIEWER, ROLE_OPERATOR or ROLE_ADMIN");
  const role = req.role;
  const want = req.project.trim();
  if (want) checkProjectName(want);
  if (creator && creator.project !== null) {
    // A project-scoped admin creates tokens of its own project only.
    return { name, role, project: projectFor(creator, want) };
  }
  if (!want) {
    if (role !== "admin") {
      throw new InvalidArgumentError("project", `required for ${role === "operator" ? "an" : "a"} ${role} token; only admin tokens may span all projects`);
    }
    return { name, role, project: null };
  }
  return { name, role, project: want };
}

