/**
 * A server's backups (BackupService), newest first: state, sizes, who made
 * it; lock, restore and delete them; back the server up now into a target.
 * The list is fetched when the tab opens and refreshed every 2 s only while
 * something is moving (a backup pending, running or being deleted, or the
 * server's status.operation set). The manager's answer to an action is shown
 * where it was taken: the form, the dialog, the backup's own item.
 */
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { BackupState, type Backup, type BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { formatBytes, formatTime, tsMs } from "../ui/format.js";
import { useToast } from "../ui/toast.js";
import { backupStateName, backupStateTone, isBackupActive, parseIgnore, percentOf } from "./backup-model.js";
import { isDeleted } from "./model.js";
import { BackupPolicyForm } from "./backup-policy.js";
import { CloneDialog } from "./clone-dialog.js";
import { TargetForm } from "../backups/target-form.js";
import { targetLabel, useTargets } from "../backups/use-targets.js";

const PAGE = 50;
const FOLLOW_MS = 2000;
const LIVE_WARNING = "Copied while the server keeps running: files it writes meanwhile may be caught half-written, and a database's files copied live may not open.";

interface ListState {
  backups: Backup[] | undefined;
  more: boolean;
  error: unknown;
}

/** The server's backups, newest first; refreshed every 2 s while `follow` or a backup is still moving. */
function useBackups(server: Server, limit: number, follow: boolean): ListState & { refresh: () => Promise<void> } {
  const { api } = useSession();
  const [state, setState] = useState<ListState>({ backups: undefined, more: false, error: undefined });
  const seq = useRef(0);
  const refresh = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const res = await api.backups.listBackups({ server: server.id, project: server.project, pageSize: limit });
      if (mine === seq.current) setState({ backups: res.backups, more: res.nextPageToken !== "", error: undefined });
    } catch (error) {
      // Old data stays on screen with the error above it.
      if (mine === seq.current) setState((s) => ({ ...s, error }));
    }
  }, [api, server.id, server.project, limit]);
  const moving = follow || (state.backups ?? []).some(isBackupActive);
  useEffect(() => {
    // Also once more when movement stops: the final state of what was moving.
    void refresh();
    if (!moving) return;
    const timer = setInterval(() => void refresh(), FOLLOW_MS);
    return () => clearInterval(timer);
  }, [refresh, moving]);
  return { ...state, refresh };
}

export function BackupsTab({ server }: { server: Server }) {
  const { can } = useSession();
  const [limit, setLimit] = useState(PAGE);
  const op = server.status?.operation;
  const list = useBackups(server, limit, op !== undefined);
  const targets = useTargets();
  const [restoring, setRestoring] = useState<Backup>();
  const [deleting, setDeleting] = useState<Backup>();
  const [cloning, setCloning] = useState<Backup>();
  const targetName = (id: string) => targets.targets?.find((t) => t.id === id)?.name ?? id;
  const backups = list.backups ?? [];
  return (
    <div className="backups">
      {can.operate && <BackupNow server={server} targets={targets.targets} targetsError={targets.error} onTargetCreated={targets.refresh} onRequested={list.refresh} />}
      <BackupPolicyForm key={server.id} server={server} />
      <h3>Backups</h3>
      <ErrorBox error={list.error} what="Could not list backups" />
      {!list.backups && !list.error && <p className="muted">Loading…</p>}
      {list.backups && backups.length === 0 && <p className="muted empty-inline">No backups of this server yet.</p>}
      {backups.length > 0 && (
        <ul className="backup-list" aria-label="Backups">
          {backups.map((b) => (
            <BackupItem
              key={b.id}
              b={b}
              server={server}
              target={targetName(b.targetId)}
              onChanged={list.refresh}
              onRestore={() => setRestoring(b)}
              onDelete={() => setDeleting(b)}
              onClone={() => setCloning(b)}
            />
          ))}
        </ul>
      )}
      {list.more && (
        <button type="button" className="button small" onClick={() => setLimit((l) => Math.min(l + PAGE, 1000))}>
          Show older backups
        </button>
      )}
      {restoring && <RestoreDialog server={server} b={restoring} onClose={() => setRestoring(undefined)} onDone={list.refresh} />}
      {cloning && <CloneDialog source={server} fromBackup={cloning} onClose={() => setCloning(undefined)} />}
      {deleting && <DeleteDialog server={server} b={deleting} target={targetName(deleting.targetId)} onClose={() => setDeleting(undefined)} onDone={list.refresh} />}
    </div>
  );
}

function BackupItem(props: { b: Backup; server: Server; target: string; onChanged: () => Promise<void>; onRestore: () => void; onDelete: () => void; onClone: () => void }) {
  const { b, server } = props;
  const { api, can } = useSession();
  // The box shows the asked-for lock at once; the list's next answer is the truth.
  const [asked, setAsked] = useState<boolean>();
  const [error, setError] = useState<string>();
  const state = backupStateName(b.state);
  const running = b.state === BackupState.RUNNING;
  const done = b.state === BackupState.SUCCEEDED;
  const percent = percentOf(b.bytesDone, b.bytesTotal);
  const serverBusy = server.status?.operation !== undefined;
  const lock = async (locked: boolean) => {
    setAsked(locked);
    setError(undefined);
    try {
      await api.backups.lockBackup({ id: b.id, locked });
      await props.onChanged();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setAsked(undefined);
    }
  };
  const locked = asked ?? b.locked;
  const restoreBlocked = serverBusy ? "A backup, restore or move of this server is under way" : isDeleted(server) ? "The server is deleted: restore the server first" : undefined;
  const deleteBlocked = locked ? "Locked: unlock it to delete it" : isBackupActive(b) ? "Still in progress: it can be deleted once it has finished" : undefined;
  return (
    <li className={`backup${b.state === BackupState.FAILED ? " failed" : ""}`} data-backup-id={b.id} data-state={state} aria-label={`Backup ${b.id}`}>
      <div className="backup-head">
        <span className={`badge tone-${backupStateTone(b.state)}`}>{state}</span>
        <span className="strong">{formatTime(tsMs(b.createTime))}</span>
        <RelTime ms={tsMs(b.createTime)} className="muted small" />
        {b.createdBy && <span className="muted small">by {b.createdBy}</span>}
        {b.live && (
          <span className="badge tone-warn" title={LIVE_WARNING}>
            live copy
          </span>
        )}
        {b.locked && !can.operate && <span className="badge tone-idle">locked</span>}
      </div>
      <div className="backup-facts">
        {done && (
          <span className="backup-size">
            {formatBytes(b.archiveBytes)} <span className="muted">archive</span> · {formatBytes(b.rawBytes)} <span className="muted">raw</span> · {b.files.toString()}{" "}
            <span className="muted">{b.files === 1n ? "file" : "files"}</span>
          </span>
        )}
        {running && (
          <span className="op-progress">
            <span className="op-text">
              Copying{percent !== undefined ? ` ${percent}%` : ""}
              {b.bytesTotal > 0n ? ` (${formatBytes(b.bytesDone)} of ${formatBytes(b.bytesTotal)})` : ""}
            </span>
            <span className={`op-bar${percent === undefined ? " unknown" : ""}`} role="progressbar" aria-label="Backup progress" aria-valuemin={0} aria-valuemax={100} aria-valuenow={percent}>
              <span style={percent === undefined ? undefined : { width: `${percent}%` }} />
            </span>
          </span>
        )}
        {b.state === BackupState.PENDING && <span className="muted">waiting for the server to stop, or for its host</span>}
        <span className="muted small">
          target <span className="mono">{props.target}</span> · <span className="mono">{b.id}</span>
        </span>
      </div>
      {b.live && done && <p className="backup-warning small">{LIVE_WARNING}</p>}
      {b.state === BackupState.FAILED && (
        <p className="error-box">
          <span className="code-name">{b.reason || "Failed"}</span> {b.message}
        </p>
      )}
      {can.operate && (
        <div className="backup-actions">
          <label className="check" title={locked ? "A locked backup is never deleted" : "Lock it so that nobody deletes it"}>
            <input type="checkbox" checked={locked} disabled={asked !== undefined || b.state === BackupState.DELETING} onChange={(e) => void lock(e.target.checked)} /> Locked
          </label>
          <span className="grow" />
          {done && (
            <span title={restoreBlocked}>
              <button type="button" className="button small" disabled={restoreBlocked !== undefined} onClick={props.onRestore}>
                Restore…
              </button>
            </span>
          )}
          {done && (
            <button type="button" className="button small" onClick={props.onClone} title="A new server with this server's spec and this backup's data">
              Clone from this backup…
            </button>
          )}
          {b.state !== BackupState.DELETING && (
            <span title={deleteBlocked}>
              <button type="button" className="button small danger-soft" disabled={deleteBlocked !== undefined} onClick={props.onDelete}>
                Delete…
              </button>
            </span>
          )}
        </div>
      )}
      <ErrorText text={error} />
    </li>
  );
}

function describe(b: Backup): string {
  const size = b.state === BackupState.SUCCEEDED ? `, ${formatBytes(b.archiveBytes)}` : "";
  return `made ${formatTime(tsMs(b.createTime))}${b.createdBy ? ` by ${b.createdBy}` : ""}${size}`;
}

function RestoreDialog({ server, b, onClose, onDone }: { server: Server; b: Backup; onClose: () => void; onDone: () => Promise<void> }) {
  const { api } = useSession();
  const toast = useToast();
  const [keepPrevious, setKeepPrevious] = useState(false);
  const name = server.spec?.name ?? server.id;
  const restore = async () => {
    try {
      await api.backups.restoreBackup({ server: server.id, backupId: b.id, keepPrevious });
    } catch (err) {
      return errorText(err);
    }
    toast("ok", `Restoring ${name} from backup ${b.id}`);
    void onDone();
    return undefined;
  };
  return (
    <ConfirmDialog title={`Restore ${name} from this backup?`} confirmLabel="Restore" danger onClose={onClose} onConfirm={restore}>
      <p>
        Restore server <strong>{name}</strong> from backup <span className="mono">{b.id}</span> ({describe(b)}).
      </p>
      <p>
        The server stops, its data directory is replaced with the backup, and it starts again if it should run. The current data is kept as a safety copy until the server runs
        again; if the restore fails, the current data stays in place.
      </p>
      {b.live && <p className="notice">{LIVE_WARNING}</p>}
      <label className="check">
        <input type="checkbox" checked={keepPrevious} onChange={(e) => setKeepPrevious(e.target.checked)} /> Keep the replaced data (in the data root&apos;s .berth-previous directory) after the
        server runs again
      </label>
    </ConfirmDialog>
  );
}

function DeleteDialog({ server, b, target, onClose, onDone }: { server: Server; b: Backup; target: string; onClose: () => void; onDone: () => Promise<void> }) {
  const { api } = useSession();
  const toast = useToast();
  const remove = async () => {
    try {
      await api.backups.deleteBackup({ id: b.id });
    } catch (err) {
      return errorText(err);
    }
    toast("ok", `Deleted backup ${b.id}`);
    void onDone();
    return undefined;
  };
  return (
    <ConfirmDialog title={`Delete backup ${b.id}?`} confirmLabel="Delete backup" danger onClose={onClose} onConfirm={remove}>
      <p>
        Delete the backup of <strong>{server.spec?.name ?? server.id}</strong> {describe(b)}. Its archive is removed from target <span className="mono">{target}</span>; this cannot be
        undone.
      </p>
    </ConfirmDialog>
  );
}

function BackupNow(props: { server: Server; targets: BackupTarget[] | undefined; targetsError: unknown; onTargetCreated: () => Promise<void>; onRequested: () => Promise<void> }) {
  const { server, targets } = props;
  const { api, can } = useSession();
  const toast = useToast();
  const [target, setTarget] = useState("");
  const [live, setLive] = useState(false);
  const [ignore, setIgnore] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [addingTarget, setAddingTarget] = useState(false);
  const name = server.spec?.name ?? server.id;
  const chosen = targets?.find((t) => t.id === target) ?? targets?.[0];
  const underWay = server.status?.operation !== undefined;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!chosen) return;
    setBusy(true);
    setError(undefined);
    try {
      const { backup } = await api.backups.createBackup({ server: server.id, target: chosen.id, live, ignore: parseIgnore(ignore) });
      toast("ok", `Backing up ${name} (${backup?.id})`);
      setIgnore("");
      setLive(false);
      await props.onRequested();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  if (props.targetsError) {
    return (
      <div className="backup-now">
        <ErrorBox error={props.targetsError} what="Could not list backup targets" />
        <button type="button" className="button" onClick={() => void props.onTargetCreated()}>
          Try again
        </button>
      </div>
    );
  }
  if (!targets) return <p className="muted">Loading backup targets…</p>;
  const targetForm = (
    <TargetForm
      onCreated={async (t) => {
        await props.onTargetCreated();
        setTarget(t.id);
        setAddingTarget(false);
      }}
    />
  );
  if (targets.length === 0) {
    return (
      <section className="backup-now" aria-label="Back up now">
        <h3>Back up now</h3>
        <p className="notice">
          No backup target yet. A backup goes into a target: a directory on the hosts that their agents allow (<code>berth-agent run --backup-dir &lt;path&gt;</code>), or S3-compatible storage.{" "}
          {can.infra ? "Create one:" : "Ask an all-projects admin to create one."}
        </p>
        {can.infra && targetForm}
      </section>
    );
  }
  return (
    <section className="backup-now" aria-label="Back up now">
      <h3>Back up now</h3>
      <form onSubmit={submit} noValidate>
        <div className="form-grid">
          <label className="field">
            <span>Target</span>
            <select value={chosen?.id ?? ""} onChange={(e) => setTarget(e.target.value)}>
              {targets.map((t) => (
                <option key={t.id} value={t.id}>
                  {targetLabel(t)}
                </option>
              ))}
            </select>
          </label>
          <label className="field">
            <span>Ignore patterns</span>
            <textarea rows={2} value={ignore} onChange={(e) => setIgnore(e.target.value)} placeholder={"cache/\n*.tmp"} spellCheck={false} />
            <span className="hint">one a line, like .gitignore: name, /path, dir/, *, **, !pattern</span>
          </label>
        </div>
        <label className="check">
          <input type="checkbox" checked={live} onChange={(e) => setLive(e.target.checked)} /> Live copy (no stop)
        </label>
        <p className={live ? "notice small" : "muted small"}>{live ? LIVE_WARNING : "Without it the server is stopped for the copy and started again if it should run."}</p>
        <ErrorText text={error} />
        <div className="form-actions">
          <button type="submit" className="button primary" disabled={busy || underWay} title={underWay ? "A backup, restore or move of this server is under way" : undefined}>
            {busy ? "Asking…" : "Back up now"}
          </button>
          {can.infra && !addingTarget && (
            <button type="button" className="button ghost" onClick={() => setAddingTarget(true)}>
              New target…
            </button>
          )}
        </div>
      </form>
      {addingTarget && targetForm}
    </section>
  );
}
