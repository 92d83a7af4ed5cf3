/** Alerts: what is firing now and what fired before; acknowledge, mute for a while, unmute. */
import { useMemo } from "react";
import { AlertState, Severity, type Alert } from "@berth/proto/berth/v1/alert_pb.js";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime, useNow } from "../ui/clock.js";
import { ErrorBox } from "../ui/error-box.js";
import { formatTime, tsMs } from "../ui/format.js";
import { Menu } from "../ui/menu.js";
import { Poll, usePoll } from "../ui/poll.js";
import { navigate } from "../ui/router.js";
import { useToast } from "../ui/toast.js";

const MUTES = [
  { s: 15 * 60, label: "Mute 15 minutes" },
  { s: 3600, label: "Mute 1 hour" },
  { s: 4 * 3600, label: "Mute 4 hours" },
  { s: 86400, label: "Mute 24 hours" },
];

export function AlertsPage() {
  const session = useSession();
  const { api } = session;
  const poll = useMemo(() => new Poll(async () => (await api.alerts.listAlerts({ includeResolved: true })).alerts, 5000), [api]);
  const st = usePoll(poll);
  const all = st.data ?? [];
  const firing = all.filter((a) => a.state === AlertState.FIRING);
  const history = all.filter((a) => a.state !== AlertState.FIRING);
  const refresh = () => {
    void poll.refresh();
    void session.alerts.refresh();
  };
  return (
    <section className="page" aria-labelledby="alerts-title">
      <div className="page-head">
        <div>
          <h1 id="alerts-title">Alerts</h1>
          <p className="summary">
            {firing.length === 0 ? <span className="tone-text-ok">Nothing firing.</span> : <span className="tone-text-bad">{firing.length} firing</span>} · rules run every few
            seconds; a condition must hold for its threshold before it fires.
          </p>
        </div>
      </div>
      <ErrorBox error={st.error} what="Could not list alerts" />
      <h2 className="section-title">Firing</h2>
      <AlertTable alerts={firing} onChanged={refresh} empty="No alert is firing." label="Firing alerts" />
      <h2 className="section-title">History</h2>
      <AlertTable alerts={history} onChanged={refresh} empty="No resolved alerts yet." label="Alert history" />
    </section>
  );
}

function severityTone(s: Severity): string {
  return s === Severity.CRITICAL ? "bad" : s === Severity.WARNING ? "warn" : "idle";
}

function AlertTable({ alerts, onChanged, empty, label }: { alerts: Alert[]; onChanged: () => void; empty: string; label: string }) {
  const { api, can } = useSession();
  const toast = useToast();
  const watch = useWatch();
  const { names } = useHosts();
  const now = useNow();
  const act = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
      toast("ok", what);
      onChanged();
    } catch (err) {
      toast("error", `${what}: ${errorText(err)}`);
    }
  };
  const subject = (a: Alert) => {
    const [kind, id = ""] = a.subject.split(/:(.*)/s);
    if (kind === "server") {
      const s = watch.servers.get(id);
      return (
        <button type="button" className="link" onClick={() => navigate(`/servers?server=${encodeURIComponent(id)}`)}>
          server {s?.spec?.name ?? id}
        </button>
      );
    }
    if (kind === "host")
      return (
        <button type="button" className="link" onClick={() => navigate("/hosts")}>
          host {names.get(id) ?? id}
        </button>
      );
    if (kind === "orphan")
      return (
        <button type="button" className="link" onClick={() => navigate("/orphans")}>
          {a.subject}
        </button>
      );
    return a.subject;
  };
  if (alerts.length === 0) return <p className="muted empty-inline">{empty}</p>;
  return (
    <div className="table-wrap">
      <table className="table alerts" aria-label={label}>
        <thead>
          <tr>
            <th>Severity</th>
            <th>Rule</th>
            <th>Subject</th>
            <th>Message</th>
            <th>First seen</th>
            <th>Last seen</th>
            <th>Handled</th>
            <th aria-label="Actions" />
          </tr>
        </thead>
        <tbody>
          {alerts.map((a) => {
            const mutedUntil = tsMs(a.mutedUntil);
            const muted = mutedUntil !== undefined && mutedUntil > now;
            const firing = a.state === AlertState.FIRING;
            return (
              <tr key={a.id} data-alert-id={a.id} data-rule={a.rule} className={firing ? "firing" : "resolved"}>
                <td>
                  <span className={`badge tone-${firing ? severityTone(a.severity) : "muted"}`}>{Severity[a.severity].toLowerCase()}</span>
                </td>
                <td className="mono">{a.rule}</td>
                <td>{subject(a)}</td>
                <td className="message">{a.message}</td>
                <td title={formatTime(tsMs(a.firstSeen))}>
                  <RelTime ms={tsMs(a.firstSeen)} />
                </td>
                <td title={formatTime(tsMs(a.lastSeen))}>
                  <RelTime ms={tsMs(a.lastSeen)} />
                </td>
                <td className="small">
                  {a.acknowledgedBy ? <div>ack by {a.acknowledgedBy.replace(/^token:[^:]+:/, "")}</div> : firing ? <div className="muted">not acknowledged</div> : null}
                  {muted && (
                    <div className="muted">
                      muted until {formatTime(mutedUntil)}
                    </div>
                  )}
                </td>
                <td className="actions">
                  {can.operate && firing && !a.acknowledgedBy && (
                    <button type="button" className="button small" onClick={() => act(`Acknowledged ${a.rule}`, () => api.alerts.acknowledgeAlert({ id: a.id }))}>
                      Acknowledge
                    </button>
                  )}
                  {can.operate && firing && (
                    <Menu
                      label={`Mute ${a.rule} ${a.subject}`}
                      items={[
                        ...MUTES.map((m) => ({ label: m.label, onSelect: () => void act(`${m.label}: ${a.rule}`, () => api.alerts.muteAlert({ id: a.id, durationSeconds: m.s })) })),
                        ...(muted ? [{ label: "Unmute", onSelect: () => void act(`Unmuted ${a.rule}`, () => api.alerts.muteAlert({ id: a.id, durationSeconds: 0 })) }] : []),
                      ]}
                    >
                      {muted ? "Muted ▾" : "Mute ▾"}
                    </Menu>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
