/**
 * The signed-in token, kept in sessionStorage: it lives as long as the
 * browser tab and is never written anywhere else. `WhoAmI` decides what the
 * token may do; the dashboard only offers those actions (the manager checks
 * again on every call).
 */
import { Role, type Token } from "@berth/proto/berth/v1/access_pb.js";

const KEY = "berth.token";

/**
 * The signed-in token: kept for this tab (sessionStorage), or on this device
 * (localStorage) when the operator opted in at sign-in, so a new tab or a
 * shared link does not ask again. Signing out forgets it in both.
 */
export function storedToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeToken(token: string | undefined, remember = false): void {
  try {
    if (token) {
      sessionStorage.setItem(KEY, token);
      if (remember) localStorage.setItem(KEY, token);
    } else {
      sessionStorage.removeItem(KEY);
      localStorage.removeItem(KEY);
    }
  } catch {
    // Storage disabled: the token lives in memory only.
  }
}

/** What a token may do in the dashboard, mirroring manager/src/auth/permissions.ts. */
export interface Abilities {
  /** Create, update, start, stop, pause, resume, restart, rebuild, delete, restore; resync hosts; acknowledge and mute alerts. */
  operate: boolean;
  /** Purge servers, manage tokens. */
  admin: boolean;
  /** Hosts (enroll, remove) and orphans: shared by every project, so only an all-projects admin. */
  infra: boolean;
  /** Null for an all-projects token. */
  project: string | null;
}

export function abilitiesOf(token: Token | undefined): Abilities {
  const role = token?.role ?? Role.UNSPECIFIED;
  const allProjects = token !== undefined && token.project === "";
  return {
    operate: role >= Role.OPERATOR,
    admin: role >= Role.ADMIN,
    infra: role >= Role.ADMIN && allProjects,
    project: token && token.project !== "" ? token.project : null,
  };
}

export function roleName(role: Role): string {
  switch (role) {
    case Role.VIEWER:
      return "viewer";
    case Role.OPERATOR:
      return "operator";
    case Role.ADMIN:
      return "admin";
    default:
      return "unknown";
  }
}
