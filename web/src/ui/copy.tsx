/** A read-only text with a Copy button; falls back to a selection copy where the Clipboard API is not allowed (plain http off localhost). */
import { useRef, useState } from "react";

export function CopyField({ value, label, multiline }: { value: string; label: string; multiline?: boolean }) {
  const ref = useRef<HTMLTextAreaElement & HTMLInputElement>(null);
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
    } catch {
      ref.current?.select();
      document.execCommand("copy");
    }
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return (
    <div className="copy-field">
      {multiline ? (
        <textarea ref={ref} readOnly value={value} aria-label={label} rows={3} onFocus={(e) => e.target.select()} spellCheck={false} />
      ) : (
        <input ref={ref} readOnly value={value} aria-label={label} onFocus={(e) => e.target.select()} spellCheck={false} />
      )}
      <button type="button" className="button" onClick={copy}>
        {copied ? "Copied" : "Copy"}
      </button>
    </div>
  );
}
