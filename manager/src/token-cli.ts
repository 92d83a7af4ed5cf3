/**
 * `berth-manager token ...`: operator tokens managed directly in the
 * database, without a running manager or any token — the recovery path when
 * no admin token is left. Whoever can write the database file already
 * controls berth, so this grants nothing new.
 */
import { parseArgs } from "node:util";
import { ROLES } from "./auth/caller.js";
import { checkNewToken, parseRole } from "./auth/token-policy.js";
import { newToken } from "./auth/tokens.js";
import { BerthError, NotFoundError } from "./errors.js";
import { openStore, StoreUnavailableError } from "./store/open.js";
import type { Store } from "./store/store.js";
import { chooseStoreUrl, describeStoreUrl, parseStoreUrl, redactStoreUrlText, StoreUrlError, type StoreUrl } from "./store/store-url.js";
import { scopeText } from "./api/access-service.js";

export const TOKEN_USAGE = `Usage:
  berth-manager token create --role ROLE [--project P] [--name N] [--store URL | --db PATH]
  berth-manager token list [--store URL | --db PATH]
  berth-manager token revoke ID [--store URL | --db PATH]

Works on the store directly; the manager may be running or not.
  --role ROLE     ${ROLES.join(" | ")}
  --project P     the token's project; required for viewer and operator.
                  An admin token without --project spans all projects.
  --name N        who or what uses it (recorded as the actor on events)
                  [default: cli-<role>]
  --store URL     the manager's store [BERTH_STORE] sqlite://./data/berth.db
                  sqlite:///abs/path/berth.db, sqlite://./relative/berth.db
                  or postgres://user@host:5432/database
  --db PATH       SQLite database file: short for --store sqlite://PATH [BERTH_DB]

\`create\` prints the secret alone on stdout (shown once; only its hash is
stored), and how to use it on stderr:
  TOKEN=$(berth-manager token create --role operator --project web --name ci)
`;

/** Runs a token subcommand; resolves with the process exit code. */
export async function runTokenCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        role: { type: "string" },
        project: { type: "string" },
        name: { type: "string" },
        store: { type: "string" },
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
  const fail = (msg: string): number => {
    process.stderr.write(`berth-manager token ${sub}: ${msg}\n`);
    return 2;
  };
  const storeGiven = values.store ?? (env.BERTH_STORE || undefined);
  const dbGiven = values.db ?? (env.BERTH_DB || undefined);
  let storeUrl: StoreUrl;
  try {
    storeUrl = parseStoreUrl(chooseStoreUrl({ store: storeGiven, db: dbGiven }));
  } catch (err) {
    if (!(err instanceof StoreUrlError)) throw err;
    const which =
      storeGiven !== undefined && dbGiven !== undefined
        ? ""
        : storeGiven !== undefined
          ? `invalid --store (BERTH_STORE) ${JSON.stringify(redactStoreUrlText(storeGiven))}: `
          : `invalid --db (BERTH_DB) ${JSON.stringify(dbGiven ?? "")}: `;
    return fail(`${which}${err.message}\n\n${TOKEN_USAGE}`);
  }
  /** Opens the store; a store this build lacks is said in one line (exit 2). */
  const withStore = async (fn: (s: Store) => Promise<number>): Promise<number> => {
    let opened: Store;
    try {
      opened = await openStore(storeUrl);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return fail(err.message);
      throw err;
    }
    try {
      return await fn(opened);
    } finally {
      await opened.close();
    }
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
    return withStore(async (store) => {
      const at = Date.now();
      const { token, secret, op } = newToken(spec, "cli", at);
      await store.commit([
        op,
        {
          op: "event.append",
          at,
          event: {
            type: "token.created",
            project: token.project ?? "",
            actor: "cli",
            correlationId: token.id,
            message: `token "${token.name}" (${token.role}, ${scopeText(token.project)}) created on the manager's host`,
          },
        },
      ]);
      process.stdout.write(`${secret}\n`);
      process.stderr.write(
        `created ${token.role} token ${token.id} "${token.name}" for ${scopeText(token.project)} in ${storeText(storeUrl)}.\n` +
          `It is shown only now. Use it as: -H 'authorization: Bearer ${secret}'\n`,
      );
      return 0;
    });
  }

  if (sub === "list") {
    return withStore(async (store) => {
      for (const t of await store.listTokens()) {
        const state = t.revokedAt !== null ? `revoked ${new Date(t.revokedAt).toISOString()}` : "active";
        process.stdout.write(`${t.id}\t${t.role}\t${t.project ?? "*"}\t${state}\t${t.name}\n`);
      }
      return 0;
    });
  }

  if (sub === "revoke") {
    const id = rest[0];
    if (!id) return fail("needs the token id (tok_...); see `berth-manager token list`");
    return withStore(async (store) => {
      const t = await store.getToken(id);
      if (!t) return fail(`no token ${id}; see \`berth-manager token list\``);
      if (t.revokedAt === null) {
        const at = Date.now();
        try {
          await store.commit([
            { op: "token.revoke", id, at },
            {
              op: "event.append",
              at,
              event: {
                type: "token.revoked",
                project: t.project ?? "",
                actor: "cli",
                correlationId: t.id,
                message: `token "${t.name}" (${t.role}, ${scopeText(t.project)}) revoked on the manager's host`,
              },
            },
          ]);
        } catch (err) {
          // Revoked meanwhile (by the API or another CLI): revoked it is, and that one recorded the event.
          if (!(err instanceof NotFoundError)) throw err;
        }
      }
      process.stderr.write(`token ${id} "${t.name}" is revoked\n`);
      return 0;
    });
  }

  return fail(`unknown subcommand "${sub}"\n\n${TOKEN_USAGE}`);
}

/** Where the token went, as the operator named it: the file for SQLite, else the URL (no password). */
function storeText(url: StoreUrl): string {
  return url.engine === "sqlite" ? url.path : describeStoreUrl(url);
}
