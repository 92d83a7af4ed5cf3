/**
 * "Columns": a button that opens a list of checkboxes, one per optional
 * column of a table. Escape or a click elsewhere closes it; the choice is the
 * caller's to keep (useStoredChoice).
 */
import { useCallback, useEffect, useId, useRef, useState } from "react";

export function ColumnChooser<K extends string>({
  columns,
  shown,
  onChange,
}: {
  /** `defaultOn`: shown unless turned off (not counted as an extra in the button). */
  columns: readonly { key: K; label: string; hint?: string; defaultOn?: boolean }[];
  shown: ReadonlySet<K>;
  onChange: (next: ReadonlySet<K>) => void;
}) {
  const [open, setOpen] = useState(false);
  const box = useRef<HTMLDivElement>(null);
  const button = useRef<HTMLButtonElement>(null);
  const id = useId();
  const extra = columns.filter((c) => !c.defaultOn && shown.has(c.key)).length;
  useEffect(() => {
    if (!open) return;
    const onDown = (e: MouseEvent) => {
      if (!box.current?.contains(e.target as Node)) setOpen(false);
    };
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "Escape") return;
      e.stopPropagation();
      setOpen(false);
      button.current?.focus();
    };
    document.addEventListener("mousedown", onDown);
    window.addEventListener("keydown", onKey, true);
    return () => {
      document.removeEventListener("mousedown", onDown);
      window.removeEventListener("keydown", onKey, true);
    };
  }, [open]);
  return (
    <div className="column-chooser" ref={box}>
      <button ref={button} type="button" className="button small" aria-expanded={open} aria-controls={id} onClick={() => setOpen((o) => !o)}>
        Columns{extra > 0 ? ` (+${extra})` : ""}
      </button>
      {open && (
        <div className="column-chooser-list" id={id} role="group" aria-labelledby={`${id}-title`}>
          <span className="column-chooser-title" id={`${id}-title`}>
            More columns
          </span>
          {columns.map((c) => (
            <label key={c.key} className="check" title={c.hint}>
              <input
                type="checkbox"
                checked={shown.has(c.key)}
                onChange={(e) => {
                  const next = new Set(shown);
                  if (e.target.checked) next.add(c.key);
                  else next.delete(c.key);
                  onChange(next);
                }}
              />{" "}
              {c.label}
            </label>
          ))}
        </div>
      )}
    </div>
  );
}

/**
 * A choice kept in localStorage under `key`, read through `parse` and written
 * through `format`; storage that is unavailable (private modes) only loses the
 * memory, not the choice.
 */
export function useStoredChoice<T>(key: string, parse: (raw: string | null) => T, format: (v: T) => string): [T, (v: T) => void] {
  const [value, setValue] = useState<T>(() => {
    try {
      return parse(localStorage.getItem(key));
    } catch {
      return parse(null);
    }
  });
  const set = useCallback(
    (v: T) => {
      setValue(v);
      try {
        localStorage.setItem(key, format(v));
      } catch {
        // not kept; still shown
      }
    },
    [key, format],
  );
  return [value, set];
}
