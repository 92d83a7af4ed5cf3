/**
 * A server's backup policy (ServerSpec.backup_policy): how many successful
 * backups retention keeps and for how long, and after how many hours without
 * a successful backup the backup_overdue alert fires. Saved with
 * UpdateServer and the whole spec as the watch last showed it, so every other
 * field stays as it is; the spec's generation goes up like any edit.
 */
import { useState, type FormEvent } from "react";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { BackupPolicySchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ErrorText } from "../ui/error-box.js";
import { useToast } from "../ui/toast.js";
import { formOfPolicy as formOf, POLICY_LIMITS, policyOf, policySummary, type PolicyForm, type PolicyNumber } from "./backup-model.js";
import { checkSpecRules } from "./spec-rules.js";

export function BackupPolicyForm({ server }: { server: Server }) {
  const { api, can, actions } = useSession();
  const toast = useToast();
  const saved = server.spec?.backupPolicy;
  const [form, setForm] = useState<PolicyForm>(() => formOf(saved));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ field: keyof PolicyForm | undefined; message: string }>();
  const dirty = JSON.stringify(form) !== JSON.stringify(formOf(saved));
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const parsed = policyOf(form);
    if ("field" in parsed) {
      setError(parsed);
      return;
    }
    if (!server.spec) return;
    setBusy(true);
    setError(undefined);
    try {
      // The whole spec as it is, with only the policy replaced.
      const spec = { ...server.spec, backupPolicy: create(BackupPolicySchema, parsed.policy) };
      await checkSpecRules(spec);
      const { server: updated } = await api.servers.updateServer({ id: server.id, spec });
      if (updated) {
        actions.trackUpdate(server, updated.generation);
        setForm(formOf(updated.spec?.backupPolicy));
      }
      toast("ok", `Saved the backup policy of ${server.spec.name}`);
    } catch (err) {
      setError({ field: undefined, message: err instanceof ConnectError ? errorText(err) : err instanceof Error ? err.message : errorText(err) });
    } finally {
      setBusy(false);
    }
  };
  const field = (k: PolicyNumber, unit: string, hint: string) => (
    <label className={`field${error?.field === k ? " invalid" : ""}`}>
      <span className="label">{POLICY_LIMITS[k].label}</span>
      <span className="inline">
        <input
          type="number"
          min={0}
          max={POLICY_LIMITS[k].max}
          step={1}
          inputMode="numeric"
          value={form[k]}
          disabled={!can.operate}
          aria-invalid={error?.field === k ? true : undefined}
          onChange={(e) => setForm((f) => ({ ...f, [k]: e.target.value }))}
        />
        <span>{unit}</span>
      </span>
      <span className="hint">{hint}</span>
    </label>
  );
  return (
    <details className="backup-policy">
      <summary>
        <span className="strong">Backup policy</span> <span className="muted small">{policySummary(saved)}</span>
      </summary>
      <form onSubmit={submit} noValidate aria-label="Backup policy">
        <div className="form-grid three">
          {field("keepLast", "backups", "successful backups kept by count; 0: no count rule")}
          {field("keepDays", "days", "successful backups newer than this are kept; 0: no age rule")}
          {field("alertAfterHours", "hours", "backup_overdue fires when the newest successful backup is older; 0: no alert")}
        </div>
        <label className={`field${error?.field === "ignore" ? " invalid" : ""}`}>
          <span className="label">Leave out</span>
          <textarea
            rows={3}
            value={form.ignore}
            disabled={!can.operate}
            placeholder={"*.tmp\ncache/"}
            aria-invalid={error?.field === "ignore" ? true : undefined}
            onChange={(e) => setForm((f) => ({ ...f, ignore: e.target.value }))}
          />
          <span className="hint">one pattern per line, like .gitignore; every backup that names none of its own leaves these out (transfers and clones copy everything)</span>
        </label>
        <p className="muted small">Retention never deletes a locked backup. Saving changes the spec (a new generation); the container is not recreated for it.</p>
        <ErrorText text={error?.message} />
        {can.operate && (
          <div className="form-actions">
            <button type="submit" className="button" disabled={busy || !dirty}>
              {busy ? "Saving…" : "Save policy"}
            </button>
            {dirty && (
              <button type="button" className="button ghost" onClick={() => (setForm(formOf(saved)), setError(undefined))}>
                Reset
              </button>
            )}
          </div>
        )}
      </form>
    </details>
  );
}
