/**
 * Backup targets: where backups (and the data of moves and clones) go. Every
 * token may list them; an all-projects admin creates them (a directory on the
 * hosts, shared or not, or S3-compatible storage) and deletes those no backup
 * uses. Credentials are write-only: a secret reads back as "********".
 */
import { useState } from "react";
import type { BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { ErrorBox } from "../ui/error-box.js";
import { formatTime, tsMs } from "../ui/format.js";
import { useToast } from "../ui/toast.js";
import { carriesBetweenHosts } from "../servers/move-model.js";
import { TargetForm } from "./target-form.js";
import { useTargets } from "./use-targets.js";

export function TargetsPage() {
  const { can, api } = useSession();
  const toast = useToast();
  const targets = useTargets();
  const [adding, setAdding] = useState(false);
  const [deleting, setDeleting] = useState<BackupTarget>();
  const list = targets.targets ?? [];
  return (
    <section className="page" aria-labelledby="targets-title">
      <div className="page-head">
        <div>
          <h1 id="targets-title">Backup targets</h1>
          <p className="summary">Where backups go, and what moves and clones carry data through between hosts (S3, or a directory every host shares).</p>
        </div>
        {can.infra && !adding && (
          <button type="button" className="button primary" onClick={() => setAdding(true)}>
            New target
          </button>
        )}
      </div>
      {adding && (
        <TargetForm
          onCreated={async () => {
            setAdding(false);
            await targets.refresh();
          }}
          onCancel={() => setAdding(false)}
        />
      )}
      <ErrorBox error={targets.error} what="Could not list backup targets" />
      <div className="table-wrap">
        <table className="table targets stack-on-phone" aria-label="Backup targets">
          <thead>
            <tr>
              <th>Name</th>
              <th>Kind</th>
              <th>Where</th>
              <th>Details</th>
              <th>Created</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr key={t.id} data-target-name={t.name}>
                <td>
                  <div className="strong">{t.name}</div>
                  <div className="muted mono small">{t.id}</div>
                </td>
                <td>
                  {t.kind.case === "s3" ? "S3" : t.kind.case === "directory" ? "Directory" : "—"}
                  {carriesBetweenHosts(t) && (
                    <div>
                      <span className="badge tone-ok" title="Backups made on one host are readable on every host: moves and clones can go through it">
                        every host
                      </span>
                    </div>
                  )}
                </td>
                <td className="mono small wrap">
                  {t.kind.case === "directory" && t.kind.value.path}
                  {t.kind.case === "s3" && (
                    <>
                      <div>{t.kind.value.endpoint || `AWS S3 (${t.kind.value.region || "default region"})`}</div>
                      <div>
                        {t.kind.value.bucket}/{t.kind.value.prefix}
                      </div>
                    </>
                  )}
                </td>
                <td className="small">
                  {t.kind.case === "directory" && (t.kind.value.shared ? "shared by every host" : "on each host that makes a backup")}
                  {t.kind.case === "s3" && (
                    <dl className="kv compact">
                      {t.kind.value.region && (
                        <>
                          <dt>Region</dt>
                          <dd>{t.kind.value.region}</dd>
                        </>
                      )}
                      <dt>Access key</dt>
                      <dd className="mono">{t.kind.value.accessKeyId || <span className="muted">none</span>}</dd>
                      <dt>Secret</dt>
                      <dd className="mono" data-testid="target-secret">
                        {t.kind.value.secretAccessKey || <span className="muted">none</span>}
                      </dd>
                      {t.kind.value.pathStyle && (
                        <>
                          <dt>URLs</dt>
                          <dd>path-style</dd>
                        </>
                      )}
                    </dl>
                  )}
                </td>
                <td className="small">
                  {formatTime(tsMs(t.createTime))}
                  {t.createdBy && <div className="muted">by {t.createdBy}</div>}
                </td>
                <td className="actions">
                  {can.infra && (
                    <button type="button" className="button small danger-soft" onClick={() => setDeleting(t)}>
                      Delete
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {targets.targets && list.length === 0 && (
              <tr>
                <td colSpan={6} className="empty">
                  No backup target yet. {can.infra ? "Create one: a directory the agents allow (berth-agent run --backup-dir), or S3." : "An all-projects admin can create one."}
                </td>
              </tr>
            )}
            {!targets.targets && !targets.error && (
              <tr>
                <td colSpan={6} className="muted">
                  Loading…
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {deleting && (
        <ConfirmDialog
          title={`Delete backup target ${deleting.name}?`}
          confirmLabel="Delete target"
          danger
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            try {
              await api.backups.deleteBackupTarget({ id: deleting.id });
            } catch (err) {
              return errorText(err);
            }
            toast("ok", `Deleted backup target ${deleting.name}`);
            void targets.refresh();
            return undefined;
          }}
        >
          <p>
            berth forgets target <strong>{deleting.name}</strong>; nothing in it is touched. The manager refuses while a backup still uses it: delete those backups first.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
