/**
 * Short notices in the corner (action results and errors, copied text); they
 * go away by themselves. One may offer an action (Undo): it then stays longer,
 * and the action runs once, closing the notice.
 */
import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react";

export type ToastKind = "info" | "error" | "ok";

/** A button on a notice, e.g. Undo after a delete. */
export interface ToastAction {
  label: string;
  run: () => void;
}

interface Toast {
  id: number;
  kind: ToastKind;
  text: string;
  action: ToastAction | undefined;
}

type Push = (kind: ToastKind, text: string, action?: ToastAction) => void;

const Ctx = createContext<Push>(() => {});

export function useToast(): Push {
  return useContext(Ctx);
}

/** How long a notice stays: errors and notices with an action (time to read, time to undo) longer. */
function lifetimeMs(kind: ToastKind, action: ToastAction | undefined): number {
  return kind === "error" || action ? 10_000 : 4000;
}

export function Toaster({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const next = useRef(1);
  const dismiss = useCallback((id: number) => setToasts((t) => t.filter((x) => x.id !== id)), []);
  const push = useCallback<Push>(
    (kind, text, action) => {
      const id = next.current++;
      setToasts((t) => [...t.slice(-4), { id, kind, text, action }]);
      setTimeout(() => dismiss(id), lifetimeMs(kind, action));
    },
    [dismiss],
  );
  const value = useMemo(() => push, [push]);
  return (
    <Ctx.Provider value={value}>
      {children}
      <div className="toasts" role="status" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast ${t.kind}`}>
            <span>{t.text}</span>
            {t.action && (
              <button
                type="button"
                className="button small toast-action"
                onClick={() => {
                  dismiss(t.id);
                  t.action!.run();
                }}
              >
                {t.action.label}
              </button>
            )}
            <button type="button" className="icon-button" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
              ×
            </button>
          </div>
        ))}
      </div>
    </Ctx.Provider>
  );
}
