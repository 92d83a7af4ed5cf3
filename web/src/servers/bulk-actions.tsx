/**
 * Actions on several selected servers: one confirmation listing them (and
 * those the action does not apply to in their phase), then one result per
 * server as the manager answers.
 */
import { useState } from "react";
import { Code } from "@connectrpc/connect";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { runBulk, type ActionResult } from "./action-store.js";
import { ACTION_LABEL, type ServerAction } from "./model.js";
import { allowedActions } from "./server-actions.js";

const BULK: readonly ServerAction[] = ["start", "stop", "delete", "purge"];

export function BulkBar({ servers, onClear }: { servers: Server[]; onClear: () => void }) {
  const { can } = useSession();
  const [action, setAction] = useState<ServerAction>();
  const offered = BULK.filter((a) => servers.some((s) => allowedActions(s, can).includes(a)));
  return (
    <div className="bulk-bar" role="toolbar" aria-label="Bulk actions">
      <strong>{servers.length} selected</strong>
      {offered.map((a) => (
        <button key={a} type="button" className={`button small${a === "purge" || a === "delete" ? " danger-soft" : ""}`} onClick={() => setAction(a)}>
          {ACTION_LABEL[a]}…
        </button>
      ))}
      {offered.length === 0 && <span className="muted">no bulk action applies to these servers</span>}
      <span className="grow" />
      <button type="button" className="button small ghost" onClick={onClear}>
        Clear selection
      </button>
      {action && <BulkDialog action={action} servers={servers} onClose={() => setAction(undefined)} />}
    </div>
  );
}

type RowResult = { state: "waiting" } | { state: "sending" } | ActionResult;

function BulkDialog({ action, servers, onClose }: { action: ServerAction; servers: Server[]; onClose: () => void }) {
  const { can, actions } = useSession();
  const toast = useToast();
  // The list is fixed when the dialog opens; later changes do not move it.
  const [targets] = useState(() => servers.filter((s) => allowedActions(s, can).includes(action)));
  const [skipped] = useState(() => servers.filter((s) => !allowedActions(s, can).includes(action)));
  const [removeData, setRemoveData] = useState(false);
  const [typed, setTyped] = useState("");
  const [results, setResults] = useState<Map<string, RowResult>>();
  const running = results !== undefined && [...results.values()].some((r) => "state" in r);
  const confirmText = `${targets.length}`;
  const blocked = targets.length === 0 || (action === "purge" && removeData && typed !== confirmText);

  const go = async () => {
    const accepted: Server[] = [];
    const m = new Map<string, RowResult>(targets.map((s) => [s.id, { state: "waiting" }]));
    setResults(new Map(m));
    await runBulk(
      targets,
      4,
      async (s) => {
        setResults((cur) => new Map(cur).set(s.id, { state: "sending" }));
        const r = await actions.run(s, action, { removeData });
        setResults((cur) => new Map(cur).set(s.id, r));
        if (r.ok) accepted.push(s);
        return r;
      },
      (r) => !r.ok && r.error.startsWith(`${Code[Code.ResourceExhausted]}:`),
    );
    // A notice that outlives the dialog; servers deleted can be restored from it (they come back stopped).
    const n = `${accepted.length} server${accepted.length === 1 ? "" : "s"}`;
    if (accepted.length > 0 && action === "delete") {
      toast("ok", `Deleted ${n}`, {
        label: "Undo",
        run: () =>
          void Promise.all(accepted.map((s) => actions.run(s, "restore"))).then((rs) => {
            const failed = rs.filter((r) => !r.ok).length;
            toast(failed ? "error" : "ok", failed ? `Restored ${rs.length - failed} of ${n}; ${failed} failed` : `Restored ${n} (stopped)`);
          }),
      });
    } else if (accepted.length > 0 && action === "purge") {
      toast("ok", `Purged ${n}${removeData ? " and their data" : ""}`);
    }
  };

  const done = results !== undefined && !running;
  const failed = results ? [...results.values()].filter((r) => "ok" in r && !r.ok).length : 0;
  return (
    <Modal
      title={`${ACTION_LABEL[action]} ${targets.length} server${targets.length === 1 ? "" : "s"}?`}
      onClose={onClose}
      wide
      testId="bulk-dialog"
      footer={
        done ? (
          <>
            <span className="grow muted">
              {targets.length - failed} done{failed > 0 ? `, ${failed} failed` : ""}
            </span>
            <button type="button" className="button primary" onClick={onClose}>
              Close
            </button>
          </>
        ) : (
          <>
            <button type="button" className="button" onClick={onClose} disabled={running}>
              Cancel
            </button>
            <button type="button" className={`button ${action === "purge" || action === "delete" ? "danger" : "primary"}`} disabled={blocked || running} onClick={go}>
              {running ? "Working…" : `${ACTION_LABEL[action]} ${targets.length}`}
            </button>
          </>
        )
      }
    >
      {action === "purge" && !results && (
        <>
          <label className="check">
            <input type="checkbox" checked={removeData} onChange={(e) => setRemoveData(e.target.checked)} /> Also remove their data directories (cannot be undone)
          </label>
          {removeData && (
            <label className="field">
              <span>
                Type the number of servers, <code>{confirmText}</code>, to confirm
              </span>
              <input value={typed} onChange={(e) => setTyped(e.target.value)} aria-label="Confirmation text" autoComplete="off" />
            </label>
          )}
        </>
      )}
      <ul className="bulk-list" aria-label="Servers">
        {targets.map((s) => {
          const r = results?.get(s.id);
          return (
            <li key={s.id} data-server-id={s.id}>
              <span className="name">{s.spec?.name}</span>
              <span className="muted mono">{s.id}</span>
              <span className="grow" />
              {r === undefined ? null : "state" in r ? (
                <span className="muted">{r.state === "sending" ? "sending…" : "waiting"}</span>
              ) : r.ok ? (
                <span className="result ok">✓ accepted</span>
              ) : (
                <span className="result bad" role="alert">
                  ✗ {r.error}
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {skipped.length > 0 && (
        <p className="muted">
          Skipped (not valid in their phase, or not allowed for your role): {skipped.map((s) => s.spec?.name).join(", ")}
        </p>
      )}
    </Modal>
  );
}
