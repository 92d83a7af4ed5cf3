/**
 * The one setting that selects the store: `--store URL` (BERTH_STORE).
 *
 *   sqlite:///abs/path/berth.db     an absolute file path
 *   sqlite://./relative/berth.db    relative to the working directory
 *   sqlite://:memory:               an in-memory database (tests)
 *   postgres://user[:password]@host[:port]/database[?options]   (also postgresql://)
 *
 * Everything after `sqlite://` is the file path, verbatim, so `--db PATH` is
 * exactly `--store sqlite://PATH`. Pure: parsing opens nothing.
 */
import { dirname } from "node:path";

/** A parsed store URL. */
export type StoreUrl =
  | { engine: "sqlite"; path: string }
  | {
      engine: "postgres";
      user: string;
      /** Undefined when the URL carries none (libpq's PGPASSWORD or ~/.pgpass may). Never shown. */
      password: string | undefined;
      host: string;
      port: number;
      database: string;
      /** Query parameters (sslmode=require, …), passed on to the driver. */
      options: Record<string, string>;
    };

/** `--store`'s default: the embedded SQLite file under ./data, as `npm start` expects. */
export const DEFAULT_STORE_URL = "sqlite://./data/berth.db";

/** The port a postgres URL without one means (libpq's default). */
export const DEFAULT_POSTGRES_PORT = 5432;

/** The accepted forms, as every store URL error lists them. */
export const STORE_URL_FORMS = "sqlite:///abs/path/berth.db, sqlite://./relative/berth.db or postgres://user@host:5432/database";

/** A store URL berth cannot use; the message says what is wrong and which forms work. */
export class StoreUrlError extends Error {
  override readonly name = "StoreUrlError";
}

/** Parses a `--store` value; throws StoreUrlError (the message never contains a password). */
export function parseStoreUrl(text: string): StoreUrl {
  const value = text.trim();
  if (value === "") throw new StoreUrlError(`the store URL is empty; use ${STORE_URL_FORMS}`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(value)?.[1]?.toLowerCase();
  if (scheme === "sqlite") {
    if (!value.slice(0, 9).toLowerCase().startsWith("sqlite://")) {
      throw new StoreUrlError("a sqlite store URL starts with sqlite:// followed by the file path: sqlite:///abs/path/berth.db or sqlite://./relative/berth.db");
    }
    const path = value.slice("sqlite://".length);
    if (path === "") throw new StoreUrlError("names no database file; use sqlite:///abs/path/berth.db or sqlite://./relative/berth.db");
    return { engine: "sqlite", path };
  }
  if (scheme === "postgres" || scheme === "postgresql") return parsePostgres(value);
  if (scheme === undefined) {
    throw new StoreUrlError(`is not a URL (for a file path use --db PATH, or sqlite://PATH); use ${STORE_URL_FORMS}`);
  }
  throw new StoreUrlError(`unknown store "${scheme}:"; use ${STORE_URL_FORMS}`);
}

function parsePostgres(value: string): StoreUrl {
  const form = "postgres://user@host:5432/database";
  if (!/^[a-z]+:\/\//i.test(value)) throw new StoreUrlError(`needs // after the scheme; use ${form}`);
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    // Never echo the text: it may hold a password.
    throw new StoreUrlError(`is not a valid URL (a port must be a number from 1 to 65535); use ${form}`);
  }
  const user = decodeURIComponent(u.username);
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (!user) throw new StoreUrlError(`names no user; use ${form}`);
  if (!host) throw new StoreUrlError(`names no host; use ${form}`);
  // WHATWG URL drops a default-looking port but keeps any explicit one; "host:" alone is an empty port.
  const port = u.port === "" ? DEFAULT_POSTGRES_PORT : Number(u.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new StoreUrlError(`has port ${u.port}, which must be 1 to 65535; use ${form}`);
  if (!database) throw new StoreUrlError(`names no database; use ${form}`);
  if (database.includes("/")) throw new StoreUrlError(`names database "${database}", which cannot contain "/"; use ${form}`);
  const options: Record<string, string> = {};
  for (const [k, v] of u.searchParams) options[k] = v;
  return { engine: "postgres", user, password: u.password ? decodeURIComponent(u.password) : undefined, host, port, database, options };
}

/** The `--store` a `--db PATH` stands for. */
export function sqliteStoreUrl(path: string): string {
  return `sqlite://${path}`;
}

/**
 * The store URL to use from `--store` and its shorthand `--db` (each from a
 * flag, the environment or a config file): at most one of them may be set;
 * neither means the default. `names` says how the caller's usage names them.
 */
export function chooseStoreUrl(
  given: { store?: string | undefined; db?: string | undefined },
  names: { store: string; db: string } = { store: "--store (BERTH_STORE)", db: "--db (BERTH_DB)" },
): string {
  if (given.store !== undefined && given.db !== undefined) {
    throw new StoreUrlError(`use either ${names.store} or ${names.db}, not both; --db PATH is short for --store sqlite://PATH`);
  }
  if (given.db !== undefined) return sqliteStoreUrl(given.db);
  return given.store ?? DEFAULT_STORE_URL;
}

/** The URL for messages and logs: a postgres password shows as "…". */
export function describeStoreUrl(url: StoreUrl): string {
  if (url.engine === "sqlite") return sqliteStoreUrl(url.path);
  const host = url.host.includes(":") ? `[${url.host}]` : url.host;
  const query = new URLSearchParams(url.options).toString();
  return `postgres://${encodeURIComponent(url.user)}${url.password !== undefined ? ":…" : ""}@${host}:${url.port}/${encodeURIComponent(url.database)}${query ? `?${query}` : ""}`;
}

/** A raw `--store` value with any password hidden, for echoing a value that did not parse. */
export function redactStoreUrlText(text: string): string {
  return text.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:@/?#]*):[^@/?#]*@/, "$1:…@");
}

/**
 * The directory that holds the files kept next to the database (secret.key,
 * --tls-auto's tls/): the SQLite file's directory; undefined for an
 * in-memory database or a database on a server.
 */
export function storeFilesDir(url: StoreUrl): string | undefined {
  if (url.engine !== "sqlite" || url.path === ":memory:") return undefined;
  return dirname(url.path);
}
