/**
 * Asking for a server action: harmless ones run at once, the others open a
 * confirmation naming the server (purge with data: type its name). The
 * manager's answer comes back through the ActionStore (pending mark, or the
 * error in the row and a notice).
 */
import { useCallback, useState, type ReactNode } from "react";
import { Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { useToast } from "../ui/toast.js";
import type { ActionOptions } from "./action-store.js";
import { ACTION_LABEL, ADMIN_ACTIONS, DESTRUCTIVE, actionsFor, type ServerAction } from "./model.js";

/** The actions this token may do on this server now. */
export function allowedActions(s: Server, can: { operate: boolean; admin: boolean }): ServerAction[] {
  if (!can.operate) return [];
  return actionsFor(s).filter((a) => can.admin || !ADMIN_ACTIONS.has(a));
}

const EXPLAIN: Partial<Record<ServerAction, string>> = {
  stop: "Its container gets SIGTERM, then SIGKILL after 10 s. Desired state becomes stopped.",
  restart: "Its container is stopped and started again; a newer spec is applied on the way.",
  rebuild: "Its container is removed and created again from the current spec. The data directory is kept.",
  delete: "Soft delete: the container is removed, the record and the data directory are kept. Restore brings it back.",
  purge: "The record and the container are removed for good.",
};

export function useServerActionDialog(): [ReactNode, (s: Server, a: ServerAction) => void] {
  const { actions } = useSession();
  const toast = useToast();
  const [req, setReq] = useState<{ s: Server; a: ServerAction }>();
  const [removeData, setRemoveData] = useState(false);
  const [force, setForce] = useState(false);
  const [allowEmpty, setAllowEmpty] = useState(false);

  const run = useCallback(
    async (s: Server, a: ServerAction, opts: ActionOptions = {}) => {
      const r = await actions.run(s, a, opts);
      const name = s.spec?.name ?? s.id;
      if (!r.ok) toast("error", `${ACTION_LABEL[a]} ${name}: ${r.error}`);
      else if (a === "delete") {
        // A soft delete keeps the record and the data: Undo is a restore (the server comes back stopped).
        toast("ok", `Deleted ${name}`, {
          label: "Undo",
          run: () =>
            void actions.run(s, "restore").then((u) => toast(u.ok ? "ok" : "error", u.ok ? `Restored ${name} (stopped; start it when you want it running)` : `Restore ${name}: ${u.error}`)),
        });
      } else if (a === "purge") {
        toast("ok", opts.removeData ? `Purged ${name} and its data` : `Purged ${name}; its data stays on the host (see Orphans)`);
      }
      return r.ok ? undefined : r.error;
    },
    [actions, toast],
  );

  const request = useCallback(
    (s: Server, a: ServerAction) => {
      const dataLost = a === "start" && s.status?.phase === Phase.DATA_LOST;
      if (!DESTRUCTIVE.has(a) && !dataLost) {
        void run(s, a);
        return;
      }
      setRemoveData(false);
      setForce(false);
      setAllowEmpty(false);
      setReq({ s, a });
    },
    [run],
  );

  let dialog: ReactNode = null;
  if (req) {
    const { s, a } = req;
    const name = s.spec?.name ?? s.id;
    const offline = s.status?.phase === Phase.UNKNOWN;
    const close = () => setReq(undefined);
    if (a === "start") {
      dialog = (
        <ConfirmDialog title={`Start ${name}?`} confirmLabel="Start" onClose={close} onConfirm={() => run(s, a, { allowEmptyData: allowEmpty })}>
          <p>
            The data directory of <strong>{name}</strong> is gone. berth never recreates data by itself: start it with an empty data directory, or purge it.
          </p>
          <label className="check">
            <input type="checkbox" checked={allowEmpty} onChange={(e) => setAllowEmpty(e.target.checked)} /> Start with an empty data directory
          </label>
        </ConfirmDialog>
      );
    } else {
      dialog = (
        <ConfirmDialog
          title={`${ACTION_LABEL[a]} ${name}?`}
          confirmLabel={a === "purge" && removeData ? "Purge with data" : ACTION_LABEL[a]}
          danger={a === "purge" || a === "delete"}
          typeToConfirm={a === "purge" && removeData ? name : undefined}
          onClose={close}
          onConfirm={() => run(s, a, { removeData, force })}
        >
          <p>
            {ACTION_LABEL[a]} server <strong>{name}</strong> <span className="muted">({s.id})</span>. {EXPLAIN[a]}
          </p>
          {a === "purge" && (
            <>
              <label className="check">
                <input type="checkbox" checked={removeData} onChange={(e) => setRemoveData(e.target.checked)} /> Also remove the data directory (cannot be undone)
              </label>
              {!removeData && <p className="muted">Without it the data stays on the host, where it shows up as an orphan you can adopt later.</p>}
              {offline && (
                <label className="check">
                  <input type="checkbox" checked={force} onChange={(e) => setForce(e.target.checked)} /> Host is offline: drop the record now (the container stays until the host is cleaned up)
                </label>
              )}
            </>
          )}
        </ConfirmDialog>
      );
    }
  }
  return [dialog, request];
}
