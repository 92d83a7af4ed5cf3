/**
 * The colours of a chart's series, in order: mid tones that read on the light
 * and the dark theme alike (and on either, a line of one is told from its
 * neighbours'). The last, grey, is for "other".
 */
const PALETTE = ["#2563eb", "#d97706", "#059669", "#c026d3", "#0891b2", "#dc2626", "#65a30d", "#8b8f98"];

export function seriesColour(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}
