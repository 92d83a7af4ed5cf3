/**
 * Windowing for long tables with a fixed row height: only the rows in view
 * (plus a margin) exist in the DOM, placed absolutely inside a body as tall
 * as every row together. Scrolling changes which rows exist only when the
 * window crosses a row boundary, and rows that stay keep their elements.
 * The table is where the skip link lands (focusable by script, not by Tab:
 * the next Tab reaches its header, then its first row).
 */
import { useLayoutEffect, useRef, useState, type ReactNode } from "react";
import { windowRange } from "./virtual-range.js";


export function VirtualRows<T>(props: {
  items: readonly T[];
  rowHeight: number;
  overscan?: number;
  header: ReactNode;
  empty?: ReactNode;
  renderRow: (item: T, index: number, top: number) => ReactNode;
  className?: string;
  label: string;
  ariaRowCount?: number;
}) {
  const { items, rowHeight, overscan = 6 } = props;
  const scroller = useRef<HTMLDivElement>(null);
  const [viewport, setViewport] = useState({ top: 0, height: 800 });
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const measure = () => setViewport((v) => (v.top === el.scrollTop && v.height === el.clientHeight ? v : { top: el.scrollTop, height: el.clientHeight }));
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    el.addEventListener("scroll", measure, { passive: true });
    return () => {
      ro.disconnect();
      el.removeEventListener("scroll", measure);
    };
  }, []);
  const { start, end } = windowRange(viewport.top, viewport.height, rowHeight, items.length, overscan);
  const rows: ReactNode[] = [];
  for (let i = start; i < end; i++) rows.push(props.renderRow(items[i]!, i, i * rowHeight));
  return (
    <div className={`vt-scroll ${props.className ?? ""}`} ref={scroller} role="table" aria-label={props.label} aria-rowcount={(props.ariaRowCount ?? items.length) + 1} tabIndex={-1} data-skip-target="">
      {props.header}
      <div className="vt-body" role="rowgroup" style={{ height: Math.max(items.length * rowHeight, 1) }}>
        {rows}
      </div>
      {items.length === 0 && props.empty}
    </div>
  );
}
