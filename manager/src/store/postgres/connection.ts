/**
 * A parsed postgres store URL (store-url.ts) as the connection strings `pg`
 * and libpq's tools (pg_dump) take.
 */
import type { StoreUrl } from "../store-url.js";

/** The PostgreSQL form of a store URL. */
export type PostgresStoreUrl = Extract<StoreUrl, { engine: "postgres" }>;

/**
 * `postgres://user[:password]@host:port/database[?options]`. Leave the
 * password out (`password: false`) for a command line, where every user of
 * the machine can read it: pass it in PGPASSWORD instead.
 */
export function postgresConnectionString(url: PostgresStoreUrl, opts: { password: boolean }): string {
  const host = url.host.includes(":") ? `[${url.host}]` : url.host;
  const auth = encodeURIComponent(url.user) + (opts.password && url.password !== undefined ? `:${encodeURIComponent(url.password)}` : "");
  const query = new URLSearchParams(url.options).toString();
  return `postgres://${auth}@${host}:${url.port}/${encodeURIComponent(url.database)}${query ? `?${query}` : ""}`;
}
