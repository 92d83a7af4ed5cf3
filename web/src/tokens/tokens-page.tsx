/** Operator tokens (admins): list, create (the secret is shown once), revoke. */
import { useMemo, useState } from "react";
import { Role, type CreateTokenResponse, type Token } from "@berth/proto/berth/v1/access_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { roleName } from "../api/session.js";
import { RelTime } from "../ui/clock.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { CopyField } from "../ui/copy.js";
import { ErrorBox } from "../ui/error-box.js";
import { tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { Poll, usePoll } from "../ui/poll.js";
import { useToast } from "../ui/toast.js";

export function TokensPage() {
  const { api, can, me } = useSession();
  const poll = useMemo(() => new Poll(async () => (await api.access.listTokens({})).tokens, 15_000), [api]);
  const st = usePoll(poll);
  const toast = useToast();
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<Token>();
  if (!can.admin) {
    return (
      <section className="page">
        <h1>Tokens</h1>
        <p className="notice">Only an admin token can manage tokens.</p>
      </section>
    );
  }
  return (
    <section className="page" aria-labelledby="tokens-title">
      <div className="page-head">
        <div>
          <h1 id="tokens-title">Tokens</h1>
          <p className="summary">Roles: viewer (read, logs) &lt; operator (change servers) &lt; admin (purge, tokens; all-projects admins also hosts and orphans).</p>
        </div>
        <button type="button" className="button primary" onClick={() => setCreating(true)}>
          New token
        </button>
      </div>
      <ErrorBox error={st.error} what="Could not list tokens" />
      <div className="table-wrap">
        <table className="table" aria-label="Tokens">
          <thead>
            <tr>
              <th>Name</th>
              <th>Role</th>
              <th>Project</th>
              <th>Created</th>
              <th>Last used</th>
              <th>Status</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {(st.data ?? []).map((t) => (
              <tr key={t.id} className={t.revokeTime ? "resolved" : undefined}>
                <td>
                  <div className="strong">
                    {t.name} {t.id === me.id && <span className="badge tone-idle">you</span>}
                  </div>
                  <div className="muted mono small">{t.id}</div>
                </td>
                <td>{roleName(t.role)}</td>
                <td>{t.project || <span className="muted">all projects</span>}</td>
                <td>
                  <RelTime ms={tsMs(t.createTime)} />
                </td>
                <td>
                  <RelTime ms={tsMs(t.lastUsedTime)} />
                </td>
                <td>{t.revokeTime ? <span className="badge tone-muted">revoked</span> : <span className="badge tone-ok">active</span>}</td>
                <td className="actions">
                  {!t.revokeTime && (
                    <button type="button" className="button small danger-soft" onClick={() => setRevoking(t)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {creating && <CreateTokenDialog onClose={() => setCreating(false)} onDone={() => void poll.refresh()} />}
      {revoking && (
        <ConfirmDialog
          title={`Revoke token ${revoking.name}?`}
          confirmLabel="Revoke"
          danger
          onClose={() => setRevoking(undefined)}
          onConfirm={async () => {
            try {
              await api.access.revokeToken({ id: revoking.id });
              toast("ok", `Revoked ${revoking.name}`);
              void poll.refresh();
              return undefined;
            } catch (err) {
              return errorText(err);
            }
          }}
        >
          <p>
            <strong>{revoking.name}</strong> <span className="muted mono">({revoking.id})</span> stops working at once; its open streams end.
            {revoking.id === me.id && " This is the token you are signed in with: you will be signed out."}
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}

function CreateTokenDialog({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const { api, can } = useSession();
  const [name, setName] = useState("");
  const [role, setRole] = useState(Role.OPERATOR);
  const [project, setProject] = useState(can.project ?? "default");
  const [res, setRes] = useState<CreateTokenResponse>();
  const [error, setError] = useState<string>();
  const create = async () => {
    setError(undefined);
    try {
      setRes(await api.access.createToken({ name, role, project: can.project ?? project.trim() }));
      onDone();
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <Modal
      title="New token"
      onClose={onClose}
      footer={
        res ? (
          <button type="button" className="button primary" onClick={onClose}>
            Done
          </button>
        ) : (
          <>
            <button type="button" className="button" onClick={onClose}>
              Cancel
            </button>
            <button type="button" className="button primary" onClick={create} disabled={!name}>
              Create
            </button>
          </>
        )
      }
    >
      {res ? (
        <>
          <p>
            The secret of <strong>{res.token?.name}</strong>. It is shown only now: copy it somewhere safe.
          </p>
          <CopyField value={res.secret} label="Token secret" />
        </>
      ) : (
        <>
          <label className="field">
            <span className="label">Name</span>
            <input value={name} onChange={(e) => setName(e.target.value)} aria-label="Token name" />
          </label>
          <label className="field">
            <span className="label">Role</span>
            <select value={role} onChange={(e) => setRole(Number(e.target.value) as Role)} aria-label="Role">
              <option value={Role.VIEWER}>viewer</option>
              <option value={Role.OPERATOR}>operator</option>
              <option value={Role.ADMIN}>admin</option>
            </select>
          </label>
          <label className="field">
            <span className="label">Project</span>
            <input value={can.project ?? project} disabled={can.project !== null} onChange={(e) => setProject(e.target.value)} aria-label="Project" />
            <span className="hint">{can.project === null ? "empty: all projects (admin only)" : "tokens you create belong to your project"}</span>
          </label>
          {error && (
            <p className="error-box" role="alert">
              {error}
            </p>
          )}
        </>
      )}
    </Modal>
  );
}
