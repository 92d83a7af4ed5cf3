/**
 * A small drop-down menu of actions, rendered in a portal next to its button
 * (table rows clip overflow). Arrow keys move, Escape closes, Tab closes and
 * goes on from the button.
 */
import { useEffect, useLayoutEffect, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import { createPortal } from "react-dom";

export interface MenuItem {
  label: string;
  onSelect: () => void;
  danger?: boolean;
}

export function Menu({ label, items, children }: { label: string; items: MenuItem[]; children: ReactNode }) {
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const menu = useRef<HTMLDivElement>(null);
  const [pos, setPos] = useState({ top: 0, left: 0 });
  /** Where the button was when the menu was placed. */
  const anchor = useRef({ top: 0, left: 0 });
  useLayoutEffect(() => {
    if (!open || !button.current) return;
    const r = button.current.getBoundingClientRect();
    const h = menu.current?.offsetHeight ?? 200;
    const w = menu.current?.offsetWidth ?? 160;
    const below = r.bottom + 4 + h < window.innerHeight;
    setPos({ top: below ? r.bottom + 4 : Math.max(4, r.top - h - 4), left: Math.max(4, Math.min(r.right - w, window.innerWidth - w - 4)) });
    anchor.current = { top: r.top, left: r.left };
    // preventScroll: focusing must not scroll the page, or the scroll would close the menu at once.
    menu.current?.querySelector<HTMLElement>("[role=menuitem]")?.focus({ preventScroll: true });
  }, [open]);
  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent) => {
      if (!menu.current?.contains(e.target as Node) && !button.current?.contains(e.target as Node)) setOpen(false);
    };
    // A scroll that moves the button would leave the menu behind: close it. Other
    // scrolls (one that was under way when the button was clicked, one inside
    // the menu) leave it open.
    const onScroll = () => {
      const r = button.current?.getBoundingClientRect();
      if (!r || Math.abs(r.top - anchor.current.top) > 1 || Math.abs(r.left - anchor.current.left) > 1) setOpen(false);
    };
    const onKey = (e: globalThis.KeyboardEvent) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        setOpen(false);
      }
    };
    document.addEventListener("mousedown", close);
    window.addEventListener("scroll", onScroll, true);
    window.addEventListener("keydown", onKey, true);
    return () => {
      document.removeEventListener("mousedown", close);
      window.removeEventListener("scroll", onScroll, true);
      window.removeEventListener("keydown", onKey, true);
    };
  }, [open]);
  const onKey = (e: KeyboardEvent) => {
    const all = [...(menu.current?.querySelectorAll<HTMLElement>("[role=menuitem]") ?? [])];
    const i = all.indexOf(document.activeElement as HTMLElement);
    if (e.key === "Escape") {
      setOpen(false);
      button.current?.focus();
    } else if (e.key === "Tab") {
      // Tab leaves the menu from its button (the menu sits at the end of the page): to the control after it.
      setOpen(false);
      button.current?.focus();
    } else if (e.key === "ArrowDown") {
      e.preventDefault();
      all[(i + 1) % all.length]?.focus();
    } else if (e.key === "ArrowUp") {
      e.preventDefault();
      all[(i - 1 + all.length) % all.length]?.focus();
    }
  };
  return (
    <>
      <button ref={button} type="button" className="button small ghost" aria-haspopup="menu" aria-expanded={open} aria-label={label} onClick={() => setOpen((o) => !o)}>
        {children}
      </button>
      {open &&
        createPortal(
          <div ref={menu} className="menu" role="menu" aria-label={label} style={{ top: pos.top, left: pos.left }} onKeyDown={onKey}>
            {items.map((it) => (
              <button
                key={it.label}
                type="button"
                role="menuitem"
                className={it.danger ? "danger" : undefined}
                onClick={() => {
                  setOpen(false);
                  it.onSelect();
                }}
              >
                {it.label}
              </button>
            ))}
          </div>,
          document.body,
        )}
    </>
  );
}
