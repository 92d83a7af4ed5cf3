/**
 * Confirmation for actions that lose something. It names what it acts on;
 * with `typeToConfirm` the operator must type that text (purging data).
 * The dialog stays open with the manager's error if the action fails.
 */
import { useState, type ReactNode } from "react";
import { ErrorText } from "./error-box.js";
import { Modal } from "./modal.js";

export function ConfirmDialog(props: {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  typeToConfirm?: string | undefined;
  onConfirm: () => Promise<string | undefined | void>;
  onClose: () => void;
}) {
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const blocked = props.typeToConfirm !== undefined && typed !== props.typeToConfirm;
  const submit = async () => {
    if (blocked || busy) return;
    setBusy(true);
    setError(undefined);
    const err = await props.onConfirm();
    setBusy(false);
    if (err) setError(err);
    else props.onClose();
  };
  return (
    <Modal
      title={props.title}
      onClose={props.onClose}
      footer={
        <>
          <button type="button" className="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="button" className={`button ${props.danger ? "danger" : "primary"}`} disabled={blocked || busy} onClick={submit}>
            {busy ? "Working…" : props.confirmLabel}
          </button>
        </>
      }
    >
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        {props.children}
        {props.typeToConfirm !== undefined && (
          <label className="field">
            <span>
              Type <code>{props.typeToConfirm}</code> to confirm
            </span>
            <input value={typed} onChange={(e) => setTyped(e.target.value)} autoComplete="off" spellCheck={false} data-autofocus aria-label="Confirmation text" />
          </label>
        )}
        <ErrorText text={error} />
      </form>
    </Modal>
  );
}
