/**
 * Stores for tests: a fresh, migrated in-memory SQLite database behind both
 * the table classes and the store contract (store/contract.ts), with a secret
 * box so specs with secret env values can be written.
 */
import { randomBytes } from "node:crypto";
import { openStore, type OpenedStore } from "../src/store/open.js";
import { SecretBox } from "../src/store/secrets.js";

/** A new in-memory store; close it with `close()` (or let the process end). */
export function memoryStore(): OpenedStore {
  return openStore("sqlite://:memory:", { secrets: () => new SecretBox(randomBytes(32)) });
}
