/**
 * "Clone" (CloneServer): a new server with the source's spec (ports re-picked
 * when they clash) and a copy of its data, either from one of its backups
 * (opened from that backup's row) or from a fresh backup made now. The new
 * server opens in the drawer once the manager has it.
 */
import { useState } from "react";
import { type Backup } from "@berth/proto/berth/v1/backup_pb.js";
import { DesiredState, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { useHosts, useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { useTargets } from "../backups/use-targets.js";
import { TargetSelect } from "../backups/target-select.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { count, formatBytes, formatTime, tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { setParam } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { carriesBetweenHosts, hostChoices } from "./move-model.js";

export function CloneDialog({ source, fromBackup, onClose }: { source: Server; fromBackup?: Backup; onClose: () => void }) {
  const { api } = useSession();
  const { hosts, names } = useHosts();
  const targets = useTargets();
  const toast = useToast();
  const srcName = source.spec?.name ?? source.id;
  const srcHost = source.spec?.hostId ?? "";
  const [name, setName] = useState(`${srcName}-copy`.slice(0, 63));
  const [host, setHost] = useState(srcHost);
  const [target, setTarget] = useState("");
  const [start, setStart] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const otherHost = host !== srcHost;
  // Another host reads the data only from a target both reach.
  const usable = (targets.targets ?? []).filter((t) => !otherHost || carriesBetweenHosts(t));
  const chosenTarget = usable.some((t) => t.id === target) ? target : "";

  const submit = async () => {
    if (busy) return;
    setBusy(true);
    setError(undefined);
    try {
      const res = await api.servers.cloneServer({
        source: source.id,
        name: name.trim(),
        host: otherHost ? host : "",
        fromBackup: fromBackup?.id ?? "",
        target: fromBackup ? "" : chosenTarget,
        desiredState: start ? DesiredState.RUNNING : DesiredState.STOPPED,
      });
      toast("ok", `Cloning ${srcName} as ${res.server?.spec?.name ?? name}${res.backupId ? ` from backup ${res.backupId}` : ""}`);
      onClose();
      if (res.server) setParam("server", res.server.id, true);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal
      title={fromBackup ? `Clone ${srcName} from this backup` : `Clone ${srcName}`}
      onClose={onClose}
      testId="clone-dialog"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="button" className="button primary" disabled={busy || name.trim() === ""} onClick={() => void submit()}>
            {busy ? "Asking…" : "Clone"}
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
          A new server in project <strong>{source.project}</strong> with the spec of <strong>{srcName}</strong> (host ports re-picked when they clash) and a copy of its data{" "}
          {fromBackup ? (
            <>
              from backup <span className="mono">{fromBackup.id}</span> ({formatTime(tsMs(fromBackup.createTime))}, {formatBytes(fromBackup.archiveBytes)}).
            </>
          ) : (
            <>from a backup made now (the source stops for the copy and starts again).</>
          )}
        </p>
        <label className="field">
          <span className="label">New server name</span>
          <input value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" spellCheck={false} data-autofocus />
          <span className="hint">lowercase letters, digits and -; unique in the project</span>
        </label>
        <div className="form-grid">
          <label className="field">
            <span className="label">Host</span>
            <select value={host} onChange={(e) => setHost(e.target.value)}>
              {hostChoices(hosts).map(({ host: h, blocked }) => (
                <option key={h.id} value={h.id} disabled={blocked !== undefined}>
                  {h.name || h.id}
                  {h.id === srcHost ? " (the source's host)" : ""} · {count(h.serverCount, "server")}{h.dataRootTotalBytes > 0n ? ` · ${formatBytes(h.dataRootFreeBytes)} free` : ""}
                  {blocked ? ` (${blocked})` : ""}
                </option>
              ))}
              {!hosts.some((h) => h.id === srcHost) && <option value={srcHost}>{names.get(srcHost) ?? srcHost}</option>}
            </select>
          </label>
          {!fromBackup && (
            <TargetSelect
              label="Backup target"
              value={chosenTarget}
              onChange={setTarget}
              targets={usable}
              loading={!targets.targets}
              automatic="Automatic: the first one both hosts reach"
              hint={otherHost && "another host: S3 or a shared directory only"}
            />
          )}
        </div>
        <label className="check">
          <input type="checkbox" checked={start} onChange={(e) => setStart(e.target.checked)} /> Start the clone once its data is in place (otherwise it stays stopped)
        </label>
        <ErrorBox error={targets.error} what="Could not list backup targets" />
        <ErrorText text={error} />
      </form>
    </Modal>
  );
}
