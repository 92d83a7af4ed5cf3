/**
 * The filter bars' advanced mode: a CEL expression the manager evaluates
 * (docs/explore.md), applied on Enter or Apply, with completion of field
 * names for the word under the cursor (api/cel-fields.ts), example chips that
 * fill the input, and the manager's refusal shown under the input (the column
 * it names marked). Which filter is in force is the page's business (the URL).
 */
import { useEffect, useId, useMemo, useRef, useState } from "react";
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
}) {
  const [draft, setDraft] = useState(applied);
  const [cursor, setCursor] = useState(applied.length);
  const input = useRef<HTMLInputElement>(null);
  const ids = useId();
  useEffect(() => setDraft(applied), [applied]);
  const fields = celFields(kind);
  const hints = useMemo(() => suggest(draft, cursor, fields), [draft, cursor, fields]);
  const pos = error ? errorPosition(error.message) : undefined;
  const errLine = error && pos ? error.filter.split("\n")[pos.line - 1] : undefined;
  const track = (e: { currentTarget: HTMLInputElement }) => setCursor(e.currentTarget.selectionStart ?? e.currentTarget.value.length);
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
          aria-invalid={error && error.filter === draft.trim() ? true : undefined}
          aria-describedby={error ? `${ids}-error` : `${ids}-help`}
          onChange={(e) => {
            setDraft(e.target.value);
            track(e);
          }}
          onKeyUp={track}
          onClick={track}
        />
        <button type="submit" className="button small">
          Apply
        </button>
        <button type="button" className="button small" onClick={onClear} aria-label="Clear the CEL filter and leave the advanced mode">
          Clear
        </button>
        {pending && <span className="muted small">applying…</span>}
      </div>
      {hints.options.length > 0 && (
        <ul className="cel-suggest" aria-label="Field suggestions">
          {hints.options.map((o) => (
            <li key={o}>
              <button type="button" className="chip mono" onMouseDown={(e) => e.preventDefault()} onClick={() => { const r = applySuggestion(draft, hints, o); fill(r.text, r.cursor); }}>
                {o}
              </button>
            </li>
          ))}
        </ul>
      )}
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
