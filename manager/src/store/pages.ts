/**
 * Fleet-wide reads in pages: a read of every server (the alert rules'
 * facts, the orphan detector's placements, /metrics) is one synchronous step
 * on SQLite, and at 100,000 servers that step held the event loop for
 * hundreds of milliseconds (docs/benchmarks.md, issue 17). readPages reads
 * FLEET_PAGE rows at a time in id order and lets the loop run between pages.
 * The result is not one snapshot: a server that changes meanwhile is seen as
 * it was or as it is, which every such reader tolerates (they run again).
 */
import { turns } from "../turns.js";
import type { HostRange, IdPage } from "./store.js";

/** Rows per page of a fleet-wide read: a few milliseconds of work each. */
export const FLEET_PAGE = 1_000;

/** `page.limit` as a LIMIT: a whole number, at least 1. */
export function pageLimit(page: IdPage): number {
  return Math.max(1, Math.floor(page.limit));
}

/** Every row `read` pages through (id order), yielding to the event loop between pages. */
export async function readPages<T extends { id: string }>(read: (page: IdPage) => Promise<T[]>, limit = FLEET_PAGE): Promise<T[]> {
  const all: T[] = [];
  await forEachPage(read, (page) => {
    for (const row of page) all.push(row);
  }, limit);
  return all;
}

/**
 * Hands each page `read` returns (id order) to `onPage`, each read and its
 * handling in a slot of the event-loop turn (turns.ts): work proportional to
 * the fleet done a page at a time, never in one step.
 */
export async function forEachPage<T extends { id: string }>(read: (page: IdPage) => Promise<T[]>, onPage: (rows: T[]) => void, limit = FLEET_PAGE): Promise<void> {
  let after = "";
  for (;;) {
    await turns.slot();
    const page = await read({ after, limit });
    onPage(page);
    if (page.length < limit) return;
    after = page[page.length - 1]!.id;
  }
}

/** Hosts per read of a fleet-wide observation read (about 20 containers each in the benchmark). */
export const HOSTS_PER_READ = 50;

/**
 * Ranges of host ids, `perRange` known hosts each, that together cover every
 * id: the first starts at "" and the last has no end, so observations of a
 * host nobody listed (removed meanwhile) are read too.
 */
export function hostRanges(hostIds: Iterable<string>, perRange = HOSTS_PER_READ): HostRange[] {
  const ids = [...new Set(hostIds)].sort();
  const cuts: string[] = [];
  for (let i = perRange; i < ids.length; i += perRange) cuts.push(ids[i]!);
  return [...cuts, undefined].map((to, i) => ({ from: i === 0 ? "" : cuts[i - 1]!, ...(to !== undefined ? { to } : {}) }));
}
