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
 * At most the first `max` UTF-16 code units of `s`, cut on a code point
 * boundary: one fewer when the cut would split a surrogate pair, whose lone
 * half is not text (the store would keep U+FFFD in its place).
 */
export function cutText(s: string, max: number): string {
  if (s.length <= max) return s;
  const splitsPair = /[\ud800-\udbff]/.test(s.charAt(max - 1)) && /[\udc00-\udfff]/.test(s.charAt(max));
  return s.slice(0, splitsPair ? max - 1 : max);
}

/** `s` in at most `max` code units, ending in "…" when cut (cutText: never half of an emoji). */
export function clipText(s: string, max: number): string {
  return s.length <= max ? s : `${cutText(s, max - 1)}…`;
}
