/**
 * Fleet-wide reads in pages: a read of every server (the alert rules'
 * facts, the orphan detector's placements, /metrics) is one synchronous step
 * on SQLite, and at 100,000 servers that step held the event loop for
 * hundreds of milliseconds (docs/benchmarks.md, issue 17). readPages reads
 * FLEET_PAGE rows at a time in id order and lets the loop run between pages.
 * The result is not one snapshot: a server that changes meanwhile is seen as
 * it was or as it is, which every such reader tolerates (they run again).
 */
import type { IdPage } from "./store.js";

/** Rows per page of a fleet-wide read: a few milliseconds of work each. */
export const FLEET_PAGE = 1_000;

/** `page.limit` as a LIMIT: a whole number, at least 1. */
export function pageLimit(page: IdPage): number {
  return Math.max(1, Math.floor(page.limit));
}

/** Every row `read` pages through (id order), yielding to the event loop between pages. */
export async function readPages<T extends { id: string }>(read: (page: IdPage) => Promise<T[]>, limit = FLEET_PAGE): Promise<T[]> {
  const all: T[] = [];
  let after = "";
  for (;;) {
    const page = await read({ after, limit });
    for (const row of page) all.push(row);
    if (page.length < limit) return all;
    after = page[page.length - 1]!.id;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
