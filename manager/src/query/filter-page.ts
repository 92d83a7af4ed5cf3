/**
 * A page of a list RPC with a CEL filter (docs/explore.md): store pages are
 * read (in the RPC's order) and filtered until the page has `pageSize`
 * matches or `scanLimit` rows were read; the next page continues after the
 * last row read, so a sparse filter never reads the whole fleet in one call
 * (a page may then be short, even empty, with a next_page_token).
 */
import type { Message } from "@bufbuild/protobuf";
import type { CompiledFilter, FilterRun } from "./cel.js";

/** Rows a filtered list call reads at most before it answers with what it found. */
export const SCAN_LIMIT = 5_000;
/** Rows read from the store per step. */
export const READ_BATCH = 500;

export interface FilterPageOptions<R, P extends Message> {
  /** Up to `limit` rows after `after` (undefined: from the start), in the RPC's order. */
  read(after: R | undefined, limit: number): Promise<R[]>;
  /** The messages the RPC returns for these rows (same order). */
  convert(rows: R[]): Promise<P[]> | P[];
  filter: CompiledFilter;
  run: FilterRun;
  pageSize: number;
  /** Where the previous page stopped (from its token). */
  after?: R | undefined;
  scanLimit?: number;
  readBatch?: number;
}

export interface FilteredPage<R, P> {
  items: P[];
  /** The last row read when more rows may follow (the next token continues after it); undefined at the end. */
  continueAfter: R | undefined;
}

export async function filterPage<R, P extends Message>(o: FilterPageOptions<R, P>): Promise<FilteredPage<R, P>> {
  const scanLimit = o.scanLimit ?? SCAN_LIMIT;
  const batch = o.readBatch ?? READ_BATCH;
  const items: P[] = [];
  let after = o.after;
  let scanned = 0;
  for (;;) {
    const want = Math.min(batch, scanLimit - scanned);
    // One more than wanted: tells whether rows follow the last one read.
    const rows = await o.read(after, want + 1);
    const take = rows.slice(0, want);
    const msgs = await o.convert(take);
    for (let i = 0; i < take.length; i++) {
      scanned++;
      after = take[i]!;
      if (o.filter.test(msgs[i]!, o.run)) items.push(msgs[i]!);
      await o.run.pace();
      const more = i + 1 < take.length || rows.length > want;
      if (items.length >= o.pageSize || scanned >= scanLimit) return { items, continueAfter: more ? after : undefined };
    }
    if (rows.length <= want) return { items, continueAfter: undefined };
  }
}
