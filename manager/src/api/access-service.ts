import type { TokenRecord } from "../domain/records.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AccessService,
  CreateTokenResponseSchema,
  ListTokensResponseSchema,
  RevokeTokenResponseSchema,
  Role as ProtoRole,
  TokenSchema,
  WhoAmIResponseSchema,
  type Token,
} from "@berth/proto/berth/v1/access_pb.js";
import { actorOf, callerOf, requireRole, type Caller, type Role } from "../auth/caller.js";
import type { AccessLimits } from "../auth/limits.js";
import { checkNewToken } from "../auth/token-policy.js";
import { newToken } from "../auth/tokens.js";
import { InvalidArgumentError, NotFoundError, UnauthenticatedError } from "../errors.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";

export interface AccessServiceDeps {
  store: Store;
  limits: AccessLimits;
  ledger: Ledger;
  now?: () => number;
}

const ROLE_TO_PROTO: Record<Role, ProtoRole> = { viewer: ProtoRole.VIEWER, operator: ProtoRole.OPERATOR, admin: ProtoRole.ADMIN };
const ROLE_FROM_PROTO: Partial<Record<ProtoRole, Role>> = { [ProtoRole.VIEWER]: "viewer", [ProtoRole.OPERATOR]: "operator", [ProtoRole.ADMIN]: "admin" };

export function tokenToProto(t: TokenRecord): Token {
  return create(TokenSchema, {
    id: t.id,
    name: t.name,
    role: ROLE_TO_PROTO[t.role],
    project: t.project ?? "",
    createTime: timestampFromMs(t.createdAt),
    ...(t.revokedAt !== null ? { revokeTime: timestampFromMs(t.revokedAt) } : {}),
    ...(t.lastUsedAt !== null ? { lastUsedTime: timestampFromMs(t.lastUsedAt) } : {}),
  });
}

/** Describes a token's scope for messages: `project "web"` or `all projects`. */
export function scopeText(project: string | null): string {
  return project === null ? "all projects" : `project "${project}"`;
}

/**
 * Operator tokens. Only admins reach the mutating calls (permission table);
 * a project-scoped admin sees and manages its own project's tokens only.
 */
export function createAccessService(deps: AccessServiceDeps): ServiceImpl<typeof AccessService> {
  const { store, limits, ledger } = deps;
  const now = deps.now ?? Date.now;

  /** A token the caller may see: another project's answers NotFound. */
  async function findVisible(caller: Caller, id: string): Promise<TokenRecord> {
    const key = id.trim();
    if (!key) throw new InvalidArgumentError("id", "required: a token id (tok_...); list them with AccessService.ListTokens");
    const t = await store.getToken(key);
    if (!t || (caller.project !== null && t.project !== caller.project)) {
      throw new NotFoundError("token", key, "list tokens with AccessService.ListTokens");
    }
    return t;
  }

  return {
    async whoAmI(_req, ctx) {
      const caller = callerOf(ctx);
      const t = await store.getToken(caller.tokenId);
      if (!t) throw new UnauthenticatedError("this token no longer exists; ask an admin for a new one");
      return create(WhoAmIResponseSchema, { token: tokenToProto(t) });
    },

    async createToken(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "CreateToken");
      const role = ROLE_FROM_PROTO[req.role];
      if (req.role !== ProtoRole.UNSPECIFIED && !role) throw new InvalidArgumentError("role", `unknown role ${req.role}`);
      const spec = checkNewToken({ name: req.name, role, project: req.project }, caller);
      const actor = actorOf(caller);
      const { token, secret, op } = newToken(spec, actor, now());
      await store.commit([
        op,
        ledger.op({
          type: "token.created",
          project: token.project ?? "",
          actor,
          correlationId: token.id,
          message: `token "${token.name}" (${token.role}, ${scopeText(token.project)}) created`,
        }),
      ]);
      return create(CreateTokenResponseSchema, { token: tokenToProto(token), secret });
    },

    async listTokens(_req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "ListTokens");
      const list = caller.project === null ? await store.listTokens() : await store.listTokens({ project: caller.project });
      return create(ListTokensResponseSchema, { tokens: list.map(tokenToProto) });
    },

    async revokeToken(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "admin", "RevokeToken");
      const t = await findVisible(caller, req.id);
      if (t.revokedAt === null) {
        try {
          await store.commit([
            { op: "token.revoke", id: t.id, at: now() },
            ledger.op({
              type: "token.revoked",
              project: t.project ?? "",
              actor: actorOf(caller),
              correlationId: t.id,
              message: `token "${t.name}" (${t.role}, ${scopeText(t.project)}) revoked`,
            }),
          ]);
        } catch (err) {
          // Revoked by another call meanwhile: what was asked holds, and that call recorded the event.
          if (!(err instanceof NotFoundError)) throw err;
        }
      }
      // Open watches and log tails of the token end now, not at their next request.
      limits.closeStreams(t.id, "token revoked");
      return create(RevokeTokenResponseSchema, {});
    },
  };
}
