/**
 * The store contract (store.ts) on PostgreSQL. PLACEHOLDER: being written.
 */
import { StoreUnavailableError, type OpenStoreOptions, type Store } from "../store.js";
import { describeStoreUrl } from "../store-url.js";
import type { PostgresStoreUrl } from "./connection.js";

export async function openPostgresStore(url: PostgresStoreUrl, _opts: OpenStoreOptions): Promise<Store> {
  throw new StoreUnavailableError(`the PostgreSQL store is not yet available in this build (${describeStoreUrl(url)}); use --store sqlite:///path/berth.db`);
}
