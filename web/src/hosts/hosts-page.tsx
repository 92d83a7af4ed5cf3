/**
 * Docker hosts and their agents: online or not, cordoned or draining, last
 * heartbeat, versions, disk, servers, live usage (CPU, memory, load, the
 * data root's free space from WatchUsage; a chart of the last hour or day
 * from GetUsage in a row's details), and what its servers' limits take of
 * what it offers (allocated / allocatable CPU and memory). Add a host
 * (one-time enrollment command), resync one, cordon, drain or uncordon one,
 * set its capacity (overcommit and reserves), or remove one (revokes its
 * agent). Scheduling, capacity and removal are for all-projects admins.
 */
import { Fragment, useState, type ChangeEvent, type FormEvent } from "react";
import { ConditionStatus } from "@berth/proto/berth/v1/server_pb.js";
import { HostState, type CreateEnrollmentTokenResponse, type Host } from "@berth/proto/berth/v1/host_pb.js";
import { useHosts, useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { CopyField } from "../ui/copy.js";
import { ErrorBox } from "../ui/error-box.js";
import { count, formatBytes, formatTime, tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { navigate } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { useTargets } from "../backups/use-targets.js";
import { TargetSelect } from "../backups/target-select.js";
import { carriesBetweenHosts, schedulingBadge } from "../servers/move-model.js";
import { useUsageWatch } from "../servers/use-usage.js";
import { cpuGauge, loadText, memoryGauge } from "../servers/usage-model.js";
import { Meter, UsageHistory } from "../servers/usage-view.js";
import { Field } from "../servers/spec-form.js";
import { capacityForm, capacityRequest, capacityText, cpuAllocation, memoryAllocation, type CapacityForm } from "./capacity-model.js";

type Scheduling = { host: Host; action: "cordon" | "uncordon" | "drain" };

export function HostsPage() {
  const session = useSession();
  const { can, api } = session;
  const { hosts, error } = useHosts();
  const toast = useToast();
  const [adding, setAdding] = useState(false);
  const [removing, setRemoving] = useState<Host>();
  const [scheduling, setScheduling] = useState<Scheduling>();
  const [editing, setEditing] = useState<Host>();
  const [busy, setBusy] = useState<string>();
  const [charted, setCharted] = useState<ReadonlySet<string>>(new Set());
  const usage = useUsageWatch({ hosts: true });
  const online = hosts.filter((h) => h.state === HostState.ONLINE).length;

  const resync = async (h: Host) => {
    setBusy(h.id);
    try {
      await api.hosts.resyncHost({ id: h.id });
      toast("ok", `Asked ${h.name || h.id} for a full inventory`);
      void session.hosts.refresh();
    } catch (err) {
      toast("error", `Resync ${h.name || h.id}: ${errorText(err)}`);
    } finally {
      setBusy(undefined);
    }
  };

  return (
    <section className="page" aria-labelledby="hosts-title">
      <div className="page-head">
        <div>
          <h1 id="hosts-title">Hosts</h1>
          <p className="summary">
            {count(hosts.length, "host")} · <span className="tone-text-ok">{online} online</span>
            {hosts.length - online > 0 && (
              <>
                {" "}
                · <span className="tone-text-bad">{hosts.length - online} offline</span>
              </>
            )}
          </p>
        </div>
        {can.infra && (
          <button type="button" className="button primary" onClick={() => setAdding(true)}>
            Add host
          </button>
        )}
      </div>
      <ErrorBox error={error} what="Could not list hosts" />
      <div className="table-wrap">
        <table className="table hosts stack-on-phone" aria-label="Hosts">
          <thead>
            <tr>
              <th>Host</th>
              <th>Status</th>
              <th>Last heartbeat</th>
              <th>Versions</th>
              <th>Data root</th>
              <th className="num">Servers</th>
              <th>Usage</th>
              <th>Resources</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {hosts.map((h) => {
              const live = isOnlineHost(h) ? usage.hosts.get(h.id) : undefined;
              // The live sample's data root figures when there is one; the last inventory's otherwise.
              const free = Number(live?.diskFreeBytes ?? h.dataRootFreeBytes);
              const total = Number(live?.diskTotalBytes ?? h.dataRootTotalBytes);
              const cpu = cpuGauge(live, "host");
              const mem = memoryGauge(live, "host");
              const load = loadText(live);
              const open = charted.has(h.id);
              const toggleChart = () =>
                setCharted((cur) => {
                  const next = new Set(cur);
                  if (next.has(h.id)) next.delete(h.id);
                  else next.add(h.id);
                  return next;
                });
              const pct = total > 0 ? free / total : undefined;
              const isOnline = h.state === HostState.ONLINE;
              const badConds = h.conditions.filter((c) => c.status === ConditionStatus.FALSE);
              const sched = schedulingBadge(h);
              const cpuAlloc = cpuAllocation(h);
              const memAlloc = memoryAllocation(h);
              const capText = capacityText(h);
              return (
                <Fragment key={h.id}>
                  <tr data-host-id={h.id}>
                    <td>
                      <div className="strong">{h.name || h.id}</div>
                      <div className="muted mono small">{h.id}</div>
                    </td>
                    <td>
                      <span className={`badge tone-${isOnline ? "ok" : "bad"}`}>{isOnline ? "online" : "offline"}</span>
                      {isOnline && !h.dockerReachable && <span className="badge tone-warn">docker unreachable</span>}
                      {sched && (
                        <span className={`badge tone-${sched.tone}`} title={sched.title} data-testid="host-scheduling">
                          {sched.label}
                        </span>
                      )}
                      {sched?.detail && <div className="muted small drain-message">{sched.detail}</div>}
                      {badConds.map((c) => (
                        <div key={c.type} className="small tone-text-bad" title={c.message}>
                          {c.type}: {c.reason}
                        </div>
                      ))}
                      {isOnline && h.connectedSince && (
                        <div className="muted small">
                          since <RelTime ms={tsMs(h.connectedSince)} />
                        </div>
                      )}
                    </td>
                    <td data-label="Last heartbeat">
                      <RelTime ms={tsMs(h.lastHeartbeat)} />
                      <div className="muted small">{formatTime(tsMs(h.lastHeartbeat))}</div>
                    </td>
                    <td className="small">
                      <div>agent {h.agentVersion || "—"}</div>
                      <div className="muted">docker {h.dockerVersion || "—"}</div>
                    </td>
                    <td>
                      {pct !== undefined ? (
                        <div className="disk" title={`${formatBytes(free)} free of ${formatBytes(total)}`}>
                          <div className={`disk-bar${pct < 0.1 ? " low" : ""}`} role="meter" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round((1 - pct) * 100)} aria-label="Disk used">
                            <span style={{ width: `${Math.round((1 - pct) * 100)}%` }} />
                          </div>
                          <div className="small">
                            {formatBytes(free)} free <span className="muted">of {formatBytes(total)}</span>
                          </div>
                        </div>
                      ) : (
                        <span className="muted">—</span>
                      )}
                      <div className="muted mono small">{h.dataRoot}</div>
                    </td>
                    <td className="num" data-label="Servers">
                      <button type="button" className="link" onClick={() => navigate(`/servers?host=${encodeURIComponent(h.id)}`)}>
                        {h.serverCount}
                      </button>
                    </td>
                    <td className="host-usage" data-label="Usage" data-testid="host-usage">
                      {cpu || mem ? (
                        <>
                          {cpu && <Meter label="CPU" gauge={cpu} testId="host-cpu" />}
                          {mem && <Meter label="Mem" gauge={mem} testId="host-memory" />}
                          {load && (
                            <div className="muted small" title="load average over 1, 5 and 15 minutes">
                              load {load}
                            </div>
                          )}
                        </>
                      ) : (
                        <span className="muted" title={isOnline ? "no usage sample yet (its agent samples every 10 s; it may be connected to another manager)" : "offline: nothing measured"}>
                          —
                        </span>
                      )}
                      <div>
                        <button type="button" className="link small" aria-expanded={open} aria-controls={`host-chart-${h.id}`} onClick={toggleChart}>
                          {open ? "Hide chart" : "Chart"}
                        </button>
                      </div>
                    </td>
                    <td className="small host-resources" data-label="Resources" data-testid="host-resources">
                      {h.cpuCount ? `${h.cpuCount} CPU` : "—"}
                      <span className="muted">{h.memoryBytes ? ` · ${formatBytes(h.memoryBytes)}` : ""}</span>
                      {(cpuAlloc || memAlloc) && (
                        <div className="muted" title="what its servers' CPU and memory limits take of what it offers (its capacity)">
                          allocated
                        </div>
                      )}
                      {cpuAlloc && <Meter label="CPU" gauge={cpuAlloc} testId="host-cpu-allocated" short />}
                      {memAlloc && <Meter label="Mem" gauge={memAlloc} testId="host-memory-allocated" short />}
                      {capText && (
                        <div className="muted" data-testid="host-capacity" title="capacity settings (SetHostCapacity)">
                          {capText}
                        </div>
                      )}
                      {can.infra && (
                        <div>
                          <button type="button" className="link small" onClick={() => setEditing(h)}>
                            Capacity…
                          </button>
                        </div>
                      )}
                    </td>
                    <td className="actions">
                      {can.operate && (
                        <button type="button" className="button small" disabled={!isOnline || busy === h.id} onClick={() => resync(h)} title={isOnline ? "ask the agent for a full inventory and data check now" : "the agent is offline"}>
                          {busy === h.id ? "Resyncing…" : "Resync now"}
                        </button>
                      )}
                      {can.infra &&
                        (h.unschedulable || h.draining ? (
                          <button type="button" className="button small" onClick={() => setScheduling({ host: h, action: "uncordon" })} title="place new servers on it again; ends a drain">
                            Uncordon
                          </button>
                        ) : (
                          <>
                            <button type="button" className="button small" onClick={() => setScheduling({ host: h, action: "cordon" })} title="place no new server on it; its servers keep running">
                              Cordon
                            </button>
                            <button type="button" className="button small" onClick={() => setScheduling({ host: h, action: "drain" })} title="cordon it and move its servers to the other hosts">
                              Drain…
                            </button>
                          </>
                        ))}
                      {can.infra && (
                        <button type="button" className="button small danger-soft" onClick={() => setRemoving(h)}>
                          Remove
                        </button>
                      )}
                    </td>
                  </tr>
                  {open && (
                    <tr className="host-chart-row" id={`host-chart-${h.id}`}>
                      <td colSpan={9}>
                        <UsageHistory subject={{ case: "host", value: h.id }} name={h.name || h.id} />
                      </td>
                    </tr>
                  )}
                </Fragment>
              );
            })}
            {hosts.length === 0 && !error && (
              <tr>
                <td colSpan={9} className="empty">
                  No hosts yet. {can.infra ? "Add one: berth gives you the command to run on it." : "An all-projects admin can add one."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {adding && <AddHostDialog onClose={() => setAdding(false)} />}
      {editing && <CapacityDialog key={editing.id} host={hosts.find((x) => x.id === editing.id) ?? editing} onClose={() => setEditing(undefined)} />}
      {scheduling && <SchedulingDialog key={`${scheduling.host.id}-${scheduling.action}`} {...scheduling} onClose={() => setScheduling(undefined)} />}
      {removing && (
        <ConfirmDialog
          title={`Remove host ${removing.name || removing.id}?`}
          confirmLabel="Remove host"
          danger
          typeToConfirm={removing.serverCount > 0 ? removing.name || removing.id : undefined}
          onClose={() => setRemoving(undefined)}
          onConfirm={async () => {
            try {
              await api.hosts.removeHost({ id: removing.id });
              toast("ok", `Removed host ${removing.name || removing.id}`);
              void session.hosts.refresh();
              return undefined;
            } catch (err) {
              return errorText(err);
            }
          }}
        >
          <p>
            The agent of <strong>{removing.name || removing.id}</strong> <span className="muted mono">({removing.id})</span> is revoked and disconnected at once; it
            exits and must be enrolled again to come back. Containers and data on the host are left alone.
          </p>
          {removing.serverCount > 0 && <p className="notice">{count(removing.serverCount, "server")} {removing.serverCount === 1 ? "lives" : "live"} on this host; {removing.serverCount === 1 ? "it becomes" : "they become"} Unknown.</p>}
        </ConfirmDialog>
      )}
    </section>
  );
}

function isOnlineHost(h: Host): boolean {
  return h.state === HostState.ONLINE;
}

const TTLS = [
  { s: 600, label: "10 minutes" },
  { s: 3600, label: "1 hour" },
  { s: 86400, label: "24 hours" },
];

function AddHostDialog({ onClose }: { onClose: () => void }) {
  const { api } = useSession();
  const [ttl, setTtl] = useState(3600);
  const [res, setRes] = useState<CreateEnrollmentTokenResponse>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const create = async () => {
    setBusy(true);
    setError(undefined);
    try {
      setRes(await api.hosts.createEnrollmentToken({ ttlSeconds: ttl }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      title="Add a host"
      onClose={onClose}
      wide
      testId="add-host"
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
            <button type="button" className="button primary" onClick={create} disabled={busy}>
              {busy ? "Creating…" : "Create enrollment command"}
            </button>
          </>
        )
      }
    >
      {!res ? (
        <>
          <p>
            berth makes a one-time enrollment token. Run the command it gives on the new host (with Docker running); the agent enrolls, then dials the manager and
            the host shows up here.
          </p>
          <label className="field">
            <span className="label">Token valid for</span>
            <select value={ttl} onChange={(e) => setTtl(Number(e.target.value))}>
              {TTLS.map((t) => (
                <option key={t.s} value={t.s}>
                  {t.label}
                </option>
              ))}
            </select>
          </label>
          <ErrorBox error={error} />
        </>
      ) : (
        <>
          <p>
            Run this on the new host. The token works once and expires <strong>{formatTime(tsMs(res.expireTime))}</strong>; it is not shown again.
          </p>
          {res.notes.length > 0 && (
            <div className="notice" role="note" data-testid="add-host-notes">
              {res.notes.map((n) => (
                <p key={n}>{n}</p>
              ))}
            </div>
          )}
          <CopyField value={res.command} label="Agent command" multiline />
          <details>
            <summary>Token only</summary>
            <CopyField value={res.token} label="Enrollment token" />
          </details>
        </>
      )}
    </Modal>
  );
}

/** Confirms a cordon, drain or uncordon; the manager's refusal stays in the dialog. */
function SchedulingDialog({ host, action, onClose }: Scheduling & { onClose: () => void }) {
  const session = useSession();
  const { api } = session;
  const toast = useToast();
  const targets = useTargets();
  const [parallel, setParallel] = useState("2");
  const [target, setTarget] = useState("");
  const name = host.name || host.id;
  const carriers = (targets.targets ?? []).filter(carriesBetweenHosts);
  const confirm = async () => {
    try {
      if (action === "cordon") await api.hosts.cordonHost({ id: host.id });
      else if (action === "uncordon") await api.hosts.uncordonHost({ id: host.id });
      else {
        const n = Number(parallel.trim() || "2");
        if (!Number.isInteger(n) || n < 1 || n > 16) return "Moves at a time: a whole number from 1 to 16";
        await api.hosts.drainHost({ id: host.id, parallel: n, target });
      }
    } catch (err) {
      return errorText(err);
    }
    toast("ok", action === "cordon" ? `Cordoned ${name}` : action === "uncordon" ? `Uncordoned ${name}` : `Draining ${name}`);
    void session.hosts.refresh();
    return undefined;
  };
  if (action === "cordon") {
    return (
      <ConfirmDialog title={`Cordon ${name}?`} confirmLabel="Cordon" onClose={onClose} onConfirm={confirm}>
        <p>
          No new server is placed on <strong>{name}</strong>: not a created one, a clone, a move or another host&apos;s drain. Its {count(host.serverCount, "server")} {host.serverCount === 1 ? "keeps" : "keep"} running.
        </p>
      </ConfirmDialog>
    );
  }
  if (action === "uncordon") {
    return (
      <ConfirmDialog title={`Uncordon ${name}?`} confirmLabel="Uncordon" onClose={onClose} onConfirm={confirm}>
        <p>New servers may be placed on <strong>{name}</strong> again.</p>
        {host.draining && <p className="notice">This ends its drain: the moves under way finish, no further server is moved.</p>}
      </ConfirmDialog>
    );
  }
  return (
    <ConfirmDialog title={`Drain ${name}?`} confirmLabel="Drain" danger onClose={onClose} onConfirm={confirm}>
      <p>
        <strong>{name}</strong> is cordoned and its {count(host.serverCount, "server")} {host.serverCount === 1 ? "is" : "are"} moved to the other hosts a few at a time: each stops, its data goes through a backup target,
        and it starts on its new host if it should run. Uncordon ends the drain.
      </p>
      <div className="form-grid">
        <label className="field">
          <span className="label">Moves at a time</span>
          <input type="number" min={1} max={16} step={1} inputMode="numeric" value={parallel} onChange={(e) => setParallel(e.target.value)} />
        </label>
        <TargetSelect label="Through target" value={target} onChange={setTarget} targets={carriers} loading={!targets.targets} automatic="Automatic: the first one every host reaches" />
      </div>
      {targets.targets && carriers.length === 0 && <p className="notice">No backup target can carry a move: it needs an S3 target, or a directory target every host shares.</p>}
      <ErrorBox error={targets.error} what="Could not list backup targets" />
    </ConfirmDialog>
  );
}

/**
 * SetHostCapacity: overcommit ratios and what is kept back for the host. The
 * manager checks the ranges; its refusal stays in the dialog. Saved, the
 * dialog shows the host's new figures from the answer.
 */
function CapacityDialog({ host, onClose }: { host: Host; onClose: () => void }) {
  const session = useSession();
  const { api } = session;
  const toast = useToast();
  const [form, setForm] = useState<CapacityForm>(() => capacityForm(host));
  const [saved, setSaved] = useState<Host>();
  const [error, setError] = useState<unknown>();
  const [problem, setProblem] = useState<string>();
  const [busy, setBusy] = useState(false);
  const name = host.name || host.id;
  const shown = saved ?? host;
  const cpu = cpuAllocation(shown);
  const mem = memoryAllocation(shown);
  const save = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    setProblem(undefined);
    const made = capacityRequest(host.id, form);
    if ("problem" in made) {
      setProblem(made.problem);
      return;
    }
    setBusy(true);
    try {
      const res = await api.hosts.setHostCapacity(made.request);
      if (res.host) {
        setSaved(res.host);
        setForm(capacityForm(res.host));
      }
      toast("ok", `Saved the capacity of ${name}`);
      void session.hosts.refresh();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const set = (k: keyof CapacityForm) => (e: ChangeEvent<HTMLInputElement>) => setForm({ ...form, [k]: e.target.value });
  return (
    <Modal
      title={`Capacity of ${name}`}
      onClose={onClose}
      testId="host-capacity-dialog"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            {saved ? "Done" : "Cancel"}
          </button>
          <button type="submit" form={`capacity-${host.id}`} className="button primary" disabled={busy}>
            {busy ? "Saving…" : "Save"}
          </button>
        </>
      }
    >
      <p>
        New servers are placed on <strong>{name}</strong> only while their CPU and memory limits fit in what it offers: its CPUs and memory times the overcommit, less
        what is kept back for the host.
      </p>
      <div className="capacity-figures" data-testid="capacity-figures">
        {cpu ? <Meter label="CPU" gauge={cpu} /> : <span className="muted">The host has not reported its CPUs and memory yet.</span>}
        {mem && <Meter label="Mem" gauge={mem} />}
      </div>
      <form id={`capacity-${host.id}`} className="form-grid" onSubmit={save} noValidate>
        <Field label="CPU overcommit" hint={`times its ${host.cpuCount || "?"} CPUs; 1: none`}>
          <input inputMode="decimal" value={form.cpuOvercommit} onChange={set("cpuOvercommit")} />
        </Field>
        <Field label="Memory overcommit" hint={`times its ${host.memoryBytes ? formatBytes(host.memoryBytes) : "memory"}; 1: none`}>
          <input inputMode="decimal" value={form.memoryOvercommit} onChange={set("memoryOvercommit")} />
        </Field>
        <Field label="CPUs kept back" hint="for the host itself, e.g. 0.5">
          <input inputMode="decimal" value={form.reservedCpus} onChange={set("reservedCpus")} />
        </Field>
        <Field label="Memory kept back" hint="e.g. 512M or 1G">
          <input value={form.reservedMemory} onChange={set("reservedMemory")} />
        </Field>
      </form>
      {problem && (
        <p className="error-box" role="alert">
          {problem}
        </p>
      )}
      <ErrorBox error={error} what="Not saved" />
    </Modal>
  );
}
