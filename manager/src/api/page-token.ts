import { InvalidArgumentError } from "../errors.js";

/** A keyset position: the last row of a page, newest first by (createdAt, id). */
export interface PagePosition {
  createdAt: number;
  id: string;
}

/** The opaque next_page_token after `last` (empty when there is no next page). */
export function pageTokenAfter(last: PagePosition | undefined, more: boolean): string {
  return more && last ? Buffer.from(`${last.createdAt}:${last.id}`).toString("base64url") : "";
}

/**
 * The position a page token names, or undefined for none. A token not made
 * by pageTokenAfter for ids with `idPrefix` is InvalidArgument naming the RPC.
 */
export function positionOfPageToken(token: string, idPrefix: string, rpc: string): PagePosition | undefined {
  if (!token) return undefined;
  const m = /^(\d+):([a-z]+_[a-z2-7]+)$/.exec(Buffer.from(token, "base64url").toString());
  if (!m || !m[2]!.startsWith(`${idPrefix}_`)) throw new InvalidArgumentError("page_token", `not a token returned by ${rpc}; omit it to start from the first page`);
  return { createdAt: Number(m[1]), id: m[2]! };
}
