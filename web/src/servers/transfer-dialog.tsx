/**
 * "Move to another host" (TransferServer): pick a host that can take the
 * server (connected, not cordoned, not its own; with its server count and
 * free disk), the backup target the data travels through (S3 or a shared
 * directory: both hosts must reach it) and how long the source copy stays.
 * The move itself is followed where every data operation is: the server's
 * status.operation, in its row and the drawer header.
 */
import { useState } from "react";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useHosts, useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { useTargets } from "../backups/use-targets.js";
import { TargetSelect } from "../backups/target-select.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { formatBytes } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { carriesBetweenHosts, transferChoices } from "./move-model.js";

export function TransferDialog({ server, onClose }: { server: Server; onClose: () => void }) {
  const { api } = useSession();
  const { hosts, names, error: hostsError } = useHosts();
  const targets = useTargets();
  const toast = useToast();
  const name = server.spec?.name ?? server.id;
  const current = server.spec?.hostId ?? "";
  const choices = transferChoices(hosts, current);
  const [host, setHost] = useState<string>();
  const [target, setTarget] = useState("");
  const [keepHours, setKeepHours] = useState("0");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const carriers = (targets.targets ?? []).filter(carriesBetweenHosts);
  const picked = choices.find((c) => c.host.id === host && c.blocked === undefined)?.host.id;

  const submit = async () => {
    if (!picked || busy) return;
    const keep = Number(keepHours.trim() || "0");
    if (!Number.isInteger(keep) || keep < 0 || keep > 8760) {
      setError("Keep the source copy: a whole number of hours from 0 to 8760");
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      const res = await api.servers.transferServer({ id: server.id, host: picked, target, keepSourceHours: keep });
      toast("ok", `Moving ${name} to ${names.get(picked) ?? picked}${res.backupId ? ` (through backup ${res.backupId})` : ""}`);
      onClose();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal
      title={`Move ${name} to another host`}
      onClose={onClose}
      wide
      testId="transfer-dialog"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="button" className="button primary" disabled={!picked || busy} onClick={() => void submit()}>
            {busy ? "Asking…" : picked ? `Move to ${names.get(picked) ?? picked}` : "Move"}
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
        <p>
          The server stops, its data is copied through a backup target to the new host, and it starts there if it should run. The copy on{" "}
          <strong>{names.get(current) ?? current}</strong> is removed only once the server runs on the new host.
        </p>
        <ErrorBox error={hostsError} what="Could not list hosts" />
        <fieldset className="field host-choices">
          <legend>New host</legend>
          {choices.length === 0 && <p className="muted">No other host. Add one on the Hosts page.</p>}
          {choices.map(({ host: h, blocked }) => (
            <label key={h.id} className={`host-choice${blocked ? " blocked" : ""}${picked === h.id ? " on" : ""}`} data-host-id={h.id}>
              <input type="radio" name="transfer-host" value={h.id} checked={picked === h.id} disabled={blocked !== undefined} onChange={() => setHost(h.id)} />
              <span className="host-choice-name">
                <span className="strong">{h.name || h.id}</span>
                {h.name && <span className="muted mono small">{h.id}</span>}
                {blocked && <span className={`badge tone-${blocked === "offline" ? "bad" : "warn"}`}>{blocked}</span>}
              </span>
              <span className="host-choice-facts muted small">
                {h.serverCount} {h.serverCount === 1 ? "server" : "servers"} · {h.dataRootTotalBytes > 0n ? `${formatBytes(h.dataRootFreeBytes)} free` : "disk unknown"}
              </span>
            </label>
          ))}
        </fieldset>
        <div className="form-grid">
          <TargetSelect
            label="Through target"
            value={target}
            onChange={setTarget}
            targets={carriers}
            loading={!targets.targets}
            automatic="Automatic: the first S3 or shared target"
            hint="S3, or a directory every host shares; a plain directory is on one host only"
          />
          <label className="field">
            <span className="label">Keep the source copy</span>
            <span className="inline">
              <input type="number" min={0} max={8760} step={1} inputMode="numeric" value={keepHours} onChange={(e) => setKeepHours(e.target.value)} aria-label="Keep the source copy (hours)" />
              <span>hours</span>
            </span>
            <span className="hint">after it runs on the new host (container removed, data kept); 0: removed then</span>
          </label>
        </div>
        {targets.targets && carriers.length === 0 && (
          <p className="notice">No backup target can carry a move: it needs an S3 target, or a directory target every host shares. An all-projects admin creates one on the Backup targets page.</p>
        )}
        <ErrorBox error={targets.error} what="Could not list backup targets" />
        <ErrorText text={error} />
      </form>
    </Modal>
  );
}
