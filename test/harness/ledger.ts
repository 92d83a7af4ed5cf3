/** Reads the manager's event ledger straight from its SQLite file (read-only), for assertions. */
import Database from "better-sqlite3";

export interface LedgerRow {
  id: number;
  type: string;
  reason: string;
  message: string;
  actor: string;
  server_id: string;
}

export function eventsFor(dbPath: string, serverId: string): LedgerRow[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare("SELECT id, type, reason, message, actor, server_id FROM events WHERE server_id = ? ORDER BY id").all(serverId) as LedgerRow[];
  } finally {
    db.close();
  }
}
