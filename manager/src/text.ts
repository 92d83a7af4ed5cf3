/**
 * A lone UTF-16 surrogate: a high one not followed by a low one, or a low one
 * not preceded by a high one (what cutting a string by code units in an emoji
 * leaves, or what a client sends on purpose).
 */
export const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * `s` with every lone surrogate replaced by U+FFFD, as
 * String.prototype.toWellFormed does (ES2024, not in this project's lib).
 * Returns `s` itself when there is nothing to replace.
 */
export function wellFormed(s: string): string {
  return /[\ud800-\udfff]/.test(s) ? s.replace(LONE_SURROGATE, "\ufffd") : s;
}

/**
 * `s` cut to at most `max` UTF-16 code units, the last of them "…" when cut,
 * never between the two halves of a surrogate pair (an emoji is dropped
 * whole rather than halved).
 */
export function clipText(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max - 1;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}
