/**
 * A new backup target (admins of all projects): a directory the agents allow
 * with --backup-dir (shared when every host mounts the same one), or
 * S3-compatible object storage. The secret is sent once and never shown
 * again: the manager reads it back as "********".
 */
import { useState, type FormEvent } from "react";
import type { BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ErrorText } from "../ui/error-box.js";
import { useToast } from "../ui/toast.js";

type Kind = "directory" | "s3";

export function TargetForm({ onCreated, onCancel }: { onCreated: (t: BackupTarget) => Promise<void>; onCancel?: () => void }) {
  const { api } = useSession();
  const toast = useToast();
  const [kind, setKind] = useState<Kind>("directory");
  const [name, setName] = useState("");
  const [path, setPath] = useState("");
  const [shared, setShared] = useState(false);
  const [s3, setS3] = useState({ endpoint: "", bucket: "", prefix: "", region: "", accessKeyId: "", secretAccessKey: "", pathStyle: false });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const set = (k: keyof typeof s3) => (e: { target: { value: string } }) => setS3((v) => ({ ...v, [k]: e.target.value }));
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const { target } = await api.backups.createBackupTarget({
        name: name.trim(),
        kind:
          kind === "directory"
            ? { case: "directory", value: { path: path.trim(), shared } }
            : {
                case: "s3",
                value: {
                  endpoint: s3.endpoint.trim(),
                  bucket: s3.bucket.trim(),
                  prefix: s3.prefix.trim(),
                  region: s3.region.trim(),
                  accessKeyId: s3.accessKeyId.trim(),
                  secretAccessKey: s3.secretAccessKey,
                  pathStyle: s3.pathStyle,
                },
              },
      });
      toast("ok", `Created backup target ${target?.name}`);
      // The secret leaves the page with the form.
      setS3((v) => ({ ...v, secretAccessKey: "" }));
      if (target) await onCreated(target);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="target-form" onSubmit={submit} noValidate aria-label={kind === "directory" ? "New directory target" : "New S3 target"}>
      <div className="segmented" role="radiogroup" aria-label="Target kind">
        <label className={`check${kind === "directory" ? " on" : ""}`}>
          <input type="radio" name="target-kind" checked={kind === "directory"} onChange={() => setKind("directory")} /> Directory
        </label>
        <label className={`check${kind === "s3" ? " on" : ""}`}>
          <input type="radio" name="target-kind" checked={kind === "s3"} onChange={() => setKind("s3")} /> S3-compatible storage
        </label>
      </div>
      <div className="form-grid">
        <label className="field">
          <span>Target name</span>
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder={kind === "s3" ? "offsite" : "local"} autoComplete="off" spellCheck={false} />
          <span className="hint">lowercase letters, digits and -</span>
        </label>
        {kind === "directory" ? (
          <label className="field">
            <span>Directory on the hosts</span>
            <input value={path} onChange={(e) => setPath(e.target.value)} placeholder="/var/backups/berth" autoComplete="off" spellCheck={false} />
            <span className="hint">an agent&apos;s --backup-dir, or under one</span>
          </label>
        ) : (
          <>
            <label className="field">
              <span>Endpoint</span>
              <input value={s3.endpoint} onChange={set("endpoint")} placeholder="https://minio.example.com:9000" autoComplete="off" spellCheck={false} inputMode="url" />
              <span className="hint">https://… or http://…; empty: AWS S3 of the region</span>
            </label>
            <label className="field">
              <span>Bucket</span>
              <input value={s3.bucket} onChange={set("bucket")} placeholder="berth-backups" autoComplete="off" spellCheck={false} />
            </label>
            <label className="field">
              <span>Prefix</span>
              <input value={s3.prefix} onChange={set("prefix")} placeholder="berth/" autoComplete="off" spellCheck={false} />
              <span className="hint">put before every object key</span>
            </label>
            <label className="field">
              <span>Region</span>
              <input value={s3.region} onChange={set("region")} placeholder="us-east-1" autoComplete="off" spellCheck={false} />
            </label>
            <label className="field">
              <span>Access key ID</span>
              <input value={s3.accessKeyId} onChange={set("accessKeyId")} autoComplete="off" spellCheck={false} />
            </label>
            <label className="field">
              <span>Secret access key</span>
              <input type="password" value={s3.secretAccessKey} onChange={set("secretAccessKey")} autoComplete="new-password" spellCheck={false} />
              <span className="hint">write-only: never shown again</span>
            </label>
          </>
        )}
      </div>
      {kind === "directory" ? (
        <label className="check">
          <input type="checkbox" checked={shared} onChange={(e) => setShared(e.target.checked)} /> Shared: every host sees the same directory (a backup made on one host can be
          restored on another, and servers can move between hosts through it)
        </label>
      ) : (
        <label className="check">
          <input type="checkbox" checked={s3.pathStyle} onChange={(e) => setS3((v) => ({ ...v, pathStyle: e.target.checked }))} /> Path-style URLs (endpoint/bucket/key), as MinIO and
          Ceph need
        </label>
      )}
      <ErrorText text={error} />
      <div className="form-actions">
        <button type="submit" className="button" disabled={busy}>
          {busy ? "Creating…" : "Create target"}
        </button>
        {onCancel && (
          <button type="button" className="button ghost" onClick={onCancel}>
            Cancel
          </button>
        )}
      </div>
    </form>
  );
}
