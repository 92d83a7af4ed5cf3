/**
 * The filter bars' advanced mode: a CEL expression the manager evaluates
 * (docs/explore.md), applied on Enter or Apply, with completion of field
 * names for the word under the cursor (api/cel-fields.ts), example chips that
 * fill the input, and the manager's refusal shown under the input (the column
 * it names marked). Which filter is in force is the page's business (the URL).
 *
 * The input is a combobox (WAI-ARIA 1.2): the suggestions are its listbox;
 * Down and Up move through them (the input keeps the focus and names the one
 * chosen with aria-activedescendant), Enter takes it, Escape closes the list
 * (until the next edit).
 */
import { useEffect, useId, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { Code } from "@connectrpc/connect";
import { applySuggestion, celFields, errorPosition, suggest, type CelKind } from "../api/cel-fields.js";

export interface CelError {
  code: Code;
  message: string;
  /** The expression it is about. */
  filter: string;
}

export function CelBar({
  kind,
  applied,
  pending,
  error,
  examples,
  onApply,
  onClear,
  clearLabel = "Clear the CEL filter and leave the advanced mode",
}: {
  kind: CelKind;
  /** The expression in force (from the URL). */
  applied: string;
  /** An expression being applied (the manager has not answered yet). */
  pending?: boolean;
  error: CelError | undefined;
  examples: readonly string[];
  onApply: (expr: string) => void;
  onClear: () => void;
  /** The Clear button's accessible name. */
  clearLabel?: string;
}) {
  const [draft, setDraft] = useState(applied);
  const [cursor, setCursor] = useState(applied.length);
  const input = useRef<HTMLInputElement>(null);
  const ids = useId();
  useEffect(() => setDraft(applied), [applied]);
  const fields = celFields(kind);
  const hints = useMemo(() => suggest(draft, cursor, fields), [draft, cursor, fields]);
  // The suggestion chosen with the arrow keys (-1: none), and whether Escape closed the list.
  const [active, setActive] = useState(-1);
  const [closed, setClosed] = useState(false);
  const optionsKey = hints.options.join("\n");
  useEffect(() => setActive(-1), [optionsKey]);
  const listShown = hints.options.length > 0 && !closed;
  const optionId = (i: number) => `${ids}-option-${i}`;
  const take = (o: string) => {
    const r = applySuggestion(draft, hints, o);
    fill(r.text, r.cursor);
  };
  const onKeyDown = (e: KeyboardEvent<HTMLInputElement>) => {
    if (!listShown) return;
    const n = hints.options.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      setActive((a) => (e.key === "ArrowDown" ? (a + 1) % n : a <= 0 ? n - 1 : a - 1));
    } else if (e.key === "Enter" && active >= 0 && active < n) {
      e.preventDefault();
      take(hints.options[active]!);
    } else if (e.key === "Escape") {
      // Only the list closes (not a drawer or dialog around the bar).
      e.preventDefault();
      e.stopPropagation();
      setClosed(true);
      setActive(-1);
    }
  };
  const pos = error ? errorPosition(error.message) : undefined;
  const errLine = error && pos ? error.filter.split("\n")[pos.line - 1] : undefined;
  const track = (e: { currentTarget: HTMLInputElement; key?: string }) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp" || e.key === "Escape" || e.key === "Enter") return;
    setCursor(e.currentTarget.selectionStart ?? e.currentTarget.value.length);
  };
  const fill = (text: string, at: number) => {
    setDraft(text);
    setCursor(at);
    requestAnimationFrame(() => {
      input.current?.focus();
      input.current?.setSelectionRange(at, at);
    });
  };
  return (
    <form
      className="cel-bar"
      role="search"
      aria-label="CEL filter"
      data-testid="cel-bar"
      onSubmit={(e) => {
        e.preventDefault();
        onApply(draft.trim());
      }}
    >
      <div className="cel-row">
        <label htmlFor={`${ids}-input`} className="cel-label">
          CEL
        </label>
        <input
          ref={input}
          id={`${ids}-input`}
          name="cel"
          className="mono cel-input"
          value={draft}
          spellCheck={false}
          autoCapitalize="off"
          autoComplete="off"
          autoCorrect="off"
          placeholder={examples[0] ?? `${kind}.…`}
          role="combobox"
          aria-autocomplete="list"
          aria-expanded={listShown}
          aria-controls={`${ids}-suggest`}
          aria-activedescendant={listShown && active >= 0 ? optionId(active) : undefined}
          onKeyDown={onKeyDown}
          aria-invalid={error && error.filter === draft.trim() ? true : undefined}
          aria-describedby={error ? `${ids}-error` : `${ids}-help`}
          onChange={(e) => {
            setDraft(e.target.value);
            setClosed(false);
            track(e);
          }}
          onKeyUp={track}
          onClick={track}
        />
        <button type="submit" className="button small">
          Apply
        </button>
        <button type="button" className="button small" onClick={onClear} aria-label={clearLabel}>
          Clear
        </button>
        {pending && <span className="muted small">applying…</span>}
      </div>
      {/* Always in the DOM (the input's aria-controls names it); empty and hidden when there is nothing to offer. */}
      <ul className="cel-suggest" role="listbox" id={`${ids}-suggest`} aria-label="Field suggestions" hidden={!listShown}>
        {listShown &&
          hints.options.map((o, i) => (
            <li
              key={o}
              id={optionId(i)}
              role="option"
              aria-selected={i === active}
              className={`chip mono${i === active ? " active" : ""}`}
              onMouseDown={(e) => e.preventDefault()}
              onClick={() => take(o)}
            >
              {o}
            </li>
          ))}
      </ul>
      {error ? (
        <div id={`${ids}-error`} className="cel-error" role="alert" data-testid="cel-error">
          <p className="field-error">
            {error.code === Code.ResourceExhausted ? "Too costly: " : ""}
            {error.message}
          </p>
          {errLine !== undefined && pos && (
            <pre className="cel-caret mono" aria-hidden="true">
              {errLine}
              {"\n"}
              {" ".repeat(Math.max(0, pos.column - 1))}^
            </pre>
          )}
          {error.filter !== applied && <p className="muted small">{applied ? "The results of the previous filter are kept." : "Nothing is filtered by it."}</p>}
        </div>
      ) : (
        <p id={`${ids}-help`} className="muted small cel-help">
          Evaluated by the manager on each {kind} (docs/explore.md); Enter applies.
        </p>
      )}
      <div className="cel-examples">
        <span className="muted small">Examples:</span>
        {examples.map((x) => (
          <button key={x} type="button" className="chip mono" onClick={() => fill(x, x.length)}>
            {x}
          </button>
        ))}
      </div>
    </form>
  );
}
