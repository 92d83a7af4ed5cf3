import type uPlot from "uplot";

/**
 * Keeps a uPlot chart as wide as its container (at least `minWidth`),
 * height unchanged. Returns the function that stops following.
 */
export function followWidth(u: uPlot, el: HTMLElement, minWidth: number): () => void {
  const resize = new ResizeObserver(() => {
    const w = Math.max(minWidth, el.clientWidth);
    if (w !== u.width) u.setSize({ width: w, height: u.height });
  });
  resize.observe(el);
  return () => resize.disconnect();
}
