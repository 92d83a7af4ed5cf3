/**
 * Keyboard focus for layers over the page (the server drawer, dialogs) and
 * for rows of buttons that are one tab stop (the table's sort headers).
 */
import { useEffect, useRef, type KeyboardEvent as ReactKeyboardEvent, type RefObject } from "react";

const TABBABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]';

/** The elements Tab reaches inside `root`, in document order (visible, enabled, not tabindex -1). */
export function tabbables(root: HTMLElement): HTMLElement[] {
  return [...root.querySelectorAll<HTMLElement>(TABBABLE)].filter((el) => el.tabIndex >= 0 && el.getClientRects().length > 0);
}

/**
 * Keeps Tab and Shift+Tab inside `ref` while it is mounted and `isTop()`
 * says nothing is layered over it (a dialog or a menu opened from it handles
 * its own keys). Focus that has left the layer (a click behind it) comes back
 * on the next Tab.
 */
export function useTabTrap(ref: RefObject<HTMLElement | null>, isTop: () => boolean): void {
  const top = useRef(isTop);
  top.current = isTop;
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const root = ref.current;
      if (e.key !== "Tab" || e.defaultPrevented || !root || !top.current()) return;
      const list = tabbables(root);
      const first = list[0];
      const last = list[list.length - 1];
      const active = document.activeElement;
      let next: HTMLElement | undefined;
      if (!first || !last) next = root;
      else if (!root.contains(active)) next = e.shiftKey ? last : first;
      else if (e.shiftKey && (active === first || active === root)) next = last;
      else if (!e.shiftKey && active === last) next = first;
      if (!next) return;
      e.preventDefault();
      next.focus();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [ref]);
}

/**
 * Arrow keys, Home and End move focus among the `selector` elements inside
 * the element handling the event: a row of controls that is one tab stop
 * (the others have tabIndex -1) instead of one stop each.
 */
export function moveFocusWithArrows(e: ReactKeyboardEvent<HTMLElement>, selector: string): void {
  const all = [...e.currentTarget.querySelectorAll<HTMLElement>(selector)];
  const i = all.indexOf(document.activeElement as HTMLElement);
  if (i < 0) return;
  const to = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : e.key === "Home" ? 0 : e.key === "End" ? all.length - 1 : undefined;
  if (to === undefined) return;
  e.preventDefault();
  all[Math.max(0, Math.min(all.length - 1, to))]?.focus();
}
