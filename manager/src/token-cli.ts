/**
 * `berth-manager token ...`: operator tokens managed directly in the
 * database, without a running manager or any token — the recovery path when
 * no admin token is left. Whoever can write the database file already
 * controls berth, so this grants nothing new.
 */
import { parseArgs } from "node:util";
import { ROLES } from "./auth/caller.js";
import { checkNewToken, parseRole } from "./auth/token-policy.js";
import { BerthError } from "./errors.js";
import { Ledger } from "./ledger/ledger.js";
import { openDatabase } from "./store/database.js";
import { Store } from "./store/store.js";
import { TokenStore } from "./store/token-store.js";
import { scopeText } from "./api/access-service.js";

export const TOKEN_USAGE = `Usage:
  berth-manager token create --role ROLE [--project P] [--name N] [--db PATH]
  berth-manager token list [--db PATH]
  berth-manager token revoke ID [--db PATH]

Works on the database directly; the manager may be running or not.
  --role ROLE     ${ROLES.join(" | ")}
  --project P     the token's project; required for viewer and operator.
                  An admin token without --project spans all projects.
  --name N        who or what uses it (recorded as the actor on events)
                  [default: cli-<role>]
  --db PATH       SQLite database file [BERTH_DB] ./data/berth.db

\`create\` prints the secret alone on stdout (shown once; only its hash is
stored), and how to use it on stderr:
  TOKEN=$(berth-manager token create --role operator --project web --name ci)
`;

/** Runs a token subcommand; returns the process exit code. */
export function runTokenCommand(args: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        role: { type: "string" },
        project: { type: "string" },
        name: { type: "string" },
        db: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    process.stderr.write(`berth-manager token: ${(err as Error).message}\n\n${TOKEN_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  if (values.help || !sub) {
    process.stdout.write(TOKEN_USAGE);
    return values.help ? 0 : 2;
  }
  const dbPath = values.db ?? process.env.BERTH_DB ?? "./data/berth.db";
  const fail = (msg: string): number => {
    process.stderr.write(`berth-manager token ${sub}: ${msg}\n`);
    return 2;
  };

  if (sub === "create") {
    if (!values.role) return fail(`--role is required (${ROLES.join(", ")})`);
    const role = parseRole(values.role);
    if (!role) return fail(`unknown role "${values.role}"; use ${ROLES.join(", ")}`);
    let spec;
    try {
      spec = checkNewToken({ name: values.name ?? `cli-${role}`, role, project: values.project ?? "" }, undefined);
    } catch (err) {
      if (err instanceof BerthError) return fail(err.message.replace(/^project:/, "--project:").replace(/^name:/, "--name:"));
      throw err;
    }
    const db = openDatabase(dbPath);
    try {
      const tokens = new TokenStore(db);
      const { token, secret } = tokens.create({ ...spec, createdBy: "cli", now: Date.now() });
      new Ledger(new Store(db)).append({
        type: "token.created",
        project: token.project ?? "",
        actor: "cli",
        correlationId: token.id,
        message: `token "${token.name}" (${token.role}, ${scopeText(token.project)}) created on the manager's host`,
      });
      process.stdout.write(`${secret}\n`);
      process.stderr.write(
        `created ${token.role} token ${token.id} "${token.name}" for ${scopeText(token.project)} in ${dbPath}.\n` +
          `It is shown only now. Use it as: -H 'authorization: Bearer ${secret}'\n`,
      );
    } finally {
      db.close();
    }
    return 0;
  }

  if (sub === "list") {
    const db = openDatabase(dbPath);
    try {
      for (const t of new TokenStore(db).list()) {
        const state = t.revokedAt !== null ? `revoked ${new Date(t.revokedAt).toISOString()}` : "active";
        process.stdout.write(`${t.id}\t${t.role}\t${t.project ?? "*"}\t${state}\t${t.name}\n`);
      }
    } finally {
      db.close();
    }
    return 0;
  }

  if (sub === "revoke") {
    const id = rest[0];
    if (!id) return fail("needs the token id (tok_...); see `berth-manager token list`");
    const db = openDatabase(dbPath);
    try {
      const tokens = new TokenStore(db);
      const t = tokens.get(id);
      if (!t) return fail(`no token ${id}; see \`berth-manager token list\``);
      if (tokens.revoke(id, Date.now())) {
        new Ledger(new Store(db)).append({
          type: "token.revoked",
          project: t.project ?? "",
          actor: "cli",
          correlationId: t.id,
          message: `token "${t.name}" (${t.role}, ${scopeText(t.project)}) revoked on the manager's host`,
        });
      }
      process.stderr.write(`token ${id} "${t.name}" is revoked\n`);
    } finally {
      db.close();
    }
    return 0;
  }

  return fail(`unknown subcommand "${sub}"\n\n${TOKEN_USAGE}`);
}
