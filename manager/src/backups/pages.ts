import type { BackupFilter, BackupRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";

/** Backups read per page by the fleet-wide passes (retention, the backup alert's first read). */
const PAGE = 500;

/** Calls `fn` with every backup `filter` selects, newest first, a page at a time (keyset on createdAt, id). */
export async function forEachBackupPage(store: Pick<Store, "listBackups">, filter: Omit<BackupFilter, "before" | "limit">, fn: (page: BackupRecord[]) => void): Promise<void> {
  let before: { createdAt: number; id: string } | undefined;
  for (;;) {
    const page = await store.listBackups({ ...filter, limit: PAGE, ...(before ? { before } : {}) });
    fn(page);
    const last = page.at(-1);
    if (page.length < PAGE || !last) return;
    before = { createdAt: last.createdAt, id: last.id };
  }
}
