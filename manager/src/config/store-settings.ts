/**
 * `--store URL` and its shorthand `--db PATH`, shared by the manager and its
 * `token` and `backup` commands (see store/store-url.ts for the forms).
 */
import { chooseStoreUrl, DEFAULT_STORE_URL, parseStoreUrl, redactStoreUrlText, STORE_URL_FORMS, StoreUrlError } from "../store/store-url.js";
import { ConfigError, type Setting, type Source } from "./settings.js";

/** The two settings, for a settings table (`group` is the --help heading they go under). */
export function storeSettings(group: string): { store: Setting<"string"> & { default: string }; db: Setting<"string"> } {
  return {
    store: {
      kind: "string",
      group,
      arg: "URL",
      default: DEFAULT_STORE_URL,
      help: `the store: ${STORE_URL_FORMS} (a relative sqlite path is relative to the working directory; a SQLite file is created with its directory when missing)`,
      redact: redactStoreUrlText,
      check: (v) => {
        try {
          parseStoreUrl(v);
          return undefined;
        } catch (err) {
          if (err instanceof StoreUrlError) return err.message;
          throw err;
        }
      },
    },
    db: { kind: "string", group, arg: "PATH", help: "SQLite database file: short for --store sqlite://PATH (not together with --store)" },
  };
}

/**
 * The effective store URL of loaded settings: `--db PATH` becomes
 * `sqlite://PATH`; both set (from any source) is a ConfigError naming both.
 */
export function effectiveStoreUrl(values: { store: string; db?: string | undefined }, sources: { store: Source; db: Source }): string {
  let url: string;
  try {
    url = chooseStoreUrl({ ...(sources.store !== "default" ? { store: values.store } : {}), ...(values.db !== undefined ? { db: values.db } : {}) });
  } catch (err) {
    if (err instanceof StoreUrlError) throw new ConfigError(err.message);
    throw err;
  }
  if (values.db !== undefined && values.db.trim() === "") throw new ConfigError("invalid --db (BERTH_DB) \"\": names no database file; use --db PATH or --store URL");
  return url;
}
