import type { Role, TokenRecord } from "../../domain/records.js";
import { hashSecret, newId, newSecret } from "../../ids.js";
import type { Db } from "./database.js";
import { tokenFromRow, type TokenRow } from "../rows.js";

/** Prefix of operator token secrets, so leaked ones are easy to grep for. */
export const TOKEN_PREFIX = "brt_";

/** `brt_` + 256 random bits, base64url. */
export function newTokenSecret(): string {
  return `${TOKEN_PREFIX}${newSecret()}`;
}

/** Recording a token's use is a write, so it happens at most this often per token. */
const TOUCH_INTERVAL_MS = 60_000;

/**
 * Operator tokens, projects and host credential revocation: the SQL of
 * access control, over the same database as `Store`.
 */
export class TokenTables {
  private readonly touched = new Map<string, number>();

  constructor(private readonly db: Db) {}

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM tokens").get() as { n: number }).n;
  }

  /** Creates a token and returns it with its secret; only the secret's hash is stored. */
  create(t: { name: string; role: Role; project: string | null; createdBy: string; now: number }): { token: TokenRecord; secret: string } {
    const secret = newTokenSecret();
    const token: TokenRecord = {
      id: newId("tok"),
      name: t.name,
      role: t.role,
      project: t.project,
      createdAt: t.now,
      createdBy: t.createdBy,
      revokedAt: null,
      lastUsedAt: null,
    };
    this.db.transaction(() => {
      if (t.project !== null) this.ensureProject(t.project, t.now);
      this.db
        .prepare("INSERT INTO tokens (id, name, role, project, secret_hash, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .run(token.id, token.name, token.role, token.project, hashSecret(secret), token.createdAt, token.createdBy);
    })();
    return { token, secret };
  }

  /** Stores a token made by the caller (id, secret hash); records its project if new. */
  insert(token: TokenRecord, secretHash: string): void {
    this.db.transaction(() => {
      if (token.project !== null) this.ensureProject(token.project, token.createdAt);
      this.db
        .prepare("INSERT INTO tokens (id, name, role, project, secret_hash, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .run(token.id, token.name, token.role, token.project, secretHash, token.createdAt, token.createdBy);
    })();
  }

  /** The token whose secret hashes to `secretHash`, revoked or not. */
  findBySecretHash(secretHash: string): TokenRecord | undefined {
    const row = this.db.prepare("SELECT * FROM tokens WHERE secret_hash = ?").get(secretHash) as TokenRow | undefined;
    return row && tokenFromRow(row);
  }

  /**
   * The token a presented secret belongs to, revoked or not (the caller tells
   * the two apart), or undefined. The lookup is by the secret's SHA-256: an
   * index probe that reveals nothing about other tokens through timing.
   */
  findBySecret(secret: string): TokenRecord | undefined {
    const row = this.db.prepare("SELECT * FROM tokens WHERE secret_hash = ?").get(hashSecret(secret)) as TokenRow | undefined;
    return row && tokenFromRow(row);
  }

  get(id: string): TokenRecord | undefined {
    const row = this.db.prepare("SELECT * FROM tokens WHERE id = ?").get(id) as TokenRow | undefined;
    return row && tokenFromRow(row);
  }

  /** Tokens, oldest first; `project` limits to one project's tokens. */
  list(f: { project?: string } = {}): TokenRecord[] {
    const rows = (
      f.project === undefined
        ? this.db.prepare("SELECT * FROM tokens ORDER BY created_at, id").all()
        : this.db.prepare("SELECT * FROM tokens WHERE project = ? ORDER BY created_at, id").all(f.project)
    ) as TokenRow[];
    return rows.map(tokenFromRow);
  }

  /** Revokes a token; false when it does not exist or was already revoked. */
  revoke(id: string, now: number): boolean {
    return this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").run(now, id).changes === 1;
  }

  /**
   * Records that a token was used, at most once a minute per token. Best
   * effort: a stamp that cannot be written (disk full, database locked) must
   * not fail the request it belongs to — reads keep working on a full disk.
   */
  touch(id: string, now: number): void {
    const last = this.touched.get(id);
    if (last !== undefined && now - last < TOUCH_INTERVAL_MS) return;
    try {
      this.db.prepare("UPDATE tokens SET last_used_at = ? WHERE id = ?").run(now, id);
      this.touched.set(id, now);
    } catch {
      // Tried again at the token's next use.
    }
  }

  /** Records a project if it is new. */
  ensureProject(name: string, now: number): void {
    this.db.prepare("INSERT INTO projects (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING").run(name, now);
  }

  /**
   * Revokes a host's agent credential: the host is marked removed (and
   * offline), so its secret is refused from now on. False when the host is
   * unknown or already removed.
   */
  removeHost(hostId: string, now: number): boolean {
    return (
      this.db
        .prepare("UPDATE hosts SET removed_at = ?, online = 0, connected_since = NULL WHERE id = ? AND removed_at IS NULL")
        .run(now, hostId).changes === 1
    );
  }
}
