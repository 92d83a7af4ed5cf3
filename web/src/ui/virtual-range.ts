/**
 * The rows a fixed-height window shows: [start, end) for a scroll offset and
 * viewport height, with `overscan` extra rows each side. The header scrolls
 * with the body, so `top` may include it; a few rows too many is harmless.
 */
export function windowRange(top: number, height: number, rowHeight: number, count: number, overscan: number): { start: number; end: number } {
  if (count === 0 || rowHeight <= 0) return { start: 0, end: 0 };
  const first = Math.floor(Math.max(0, top) / rowHeight);
  const visible = Math.ceil(Math.max(height, rowHeight) / rowHeight) + 1;
  const start = Math.max(0, Math.min(first - overscan, count - 1));
  const end = Math.min(count, first + visible + overscan);
  return { start, end: Math.max(start, end) };
}
