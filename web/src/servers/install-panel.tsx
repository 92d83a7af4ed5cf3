/**
 * The install part of a server's Overview (detail drawer), for a server with
 * an install script (spec.install; docs/templates.md "Install scripts"): the
 * state of the script from the watch (status.install), its image and
 * timeout; "Show log" reads GetInstallLog (the last attempts, newest first),
 * again whenever the state changes and every 2 s while the script runs.
 * Operators get Reinstall (ReinstallServer) after a confirmation; when the
 * manager would refuse it (a succeeded install on a server not stopped) the
 * button is disabled with the reason, and any refusal shows as it comes.
 */
import { useEffect, useId, useState } from "react";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { useNow } from "../ui/clock.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { tsMs } from "../ui/format.js";
import { useToast } from "../ui/toast.js";
import { attemptViews, INSTALL_POLL_MS, installStateName, installStateText, pollsLog, reinstallBlocked, timeoutSeconds, type AttemptView } from "./install-model.js";

export function InstallPanel({ s }: { s: Server }) {
  const install = s.spec?.install;
  if (!install) return null;
  return <Install s={s} />;
}

function Install({ s }: { s: Server }) {
  const { api, can } = useSession();
  const toast = useToast();
  const now = useNow();
  const titleId = useId();
  const blockedId = useId();
  const logId = useId();
  const install = s.spec!.install!;
  const st = s.status?.install;
  const state = installStateText(s, Math.max(now, Date.now() - 1000));
  const timeout = timeoutSeconds(s);
  const [logOpen, setLogOpen] = useState(false);
  const [attempts, setAttempts] = useState<AttemptView[]>();
  const [logError, setLogError] = useState<string>();
  const [confirming, setConfirming] = useState(false);
  const [result, setResult] = useState<{ text: string; attempt: number }>();
  const blocked = reinstallBlocked(s);
  const running = pollsLog(s);

  // The log is read when it opens, whenever the install moves on, and every
  // INSTALL_POLL_MS while the script runs.
  const finished = tsMs(st?.finishedTime) ?? 0;
  useEffect(() => {
    if (!logOpen) return;
    let live = true;
    const read = () =>
      api.servers.getInstallLog({ id: s.id }).then(
        (r) => {
          if (!live) return;
          setAttempts(attemptViews(r.attempts, timeout));
          setLogError(undefined);
        },
        (err) => live && setLogError(errorText(err)),
      );
    void read();
    const timer = running ? setInterval(() => void read(), INSTALL_POLL_MS) : undefined;
    return () => {
      live = false;
      if (timer) clearInterval(timer);
    };
  }, [api, s.id, logOpen, running, st?.state, st?.attempt, finished, timeout]);

  const reinstall = async (): Promise<string | undefined> => {
    // The attempt it asks for follows the last one the watch showed (a reinstall is refused while one is pending or running).
    const next = (st?.attempt ?? 0) + 1;
    try {
      await api.servers.reinstallServer({ id: s.id });
      setResult({ text: `Reinstall requested: the install script runs again (attempt ${next}) before the server's container is started.`, attempt: next });
      toast("ok", `Reinstall of ${s.spec?.name} requested`);
      return undefined;
    } catch (err) {
      return errorText(err);
    }
  };

  // The note stays until the attempt it asked for has finished.
  const showResult = result !== undefined && !((st?.attempt ?? 0) >= result.attempt && ["failed", "succeeded"].includes(installStateName(st)));

  return (
    <section className="server-install" aria-labelledby={titleId} data-testid="server-install">
      <h3 id={titleId}>Install</h3>
      <dl className="kv">
        <dt>State</dt>
        <dd>
          <span className={`badge tone-${state.tone}`} data-testid="install-state" data-install-state={installStateName(st)}>
            {state.text}
          </span>
        </dd>
        <dt>Attempt</dt>
        <dd data-testid="install-attempt">{st?.attempt ? st.attempt : <span className="muted">none yet</span>}</dd>
        {st?.message && (
          <>
            <dt>Message</dt>
            <dd data-testid="install-message">{st.message}</dd>
          </>
        )}
        <dt>Image</dt>
        <dd className="mono">{install.image}</dd>
        <dt>Runs with</dt>
        <dd className="mono">{install.entrypoint || "sh"} -c &lt;script&gt;</dd>
        <dt>Timeout</dt>
        <dd>{timeout} s</dd>
      </dl>
      <div className="install-actions">
        <button type="button" className="button small" aria-expanded={logOpen} aria-controls={logId} onClick={() => setLogOpen((o) => !o)}>
          {logOpen ? "Hide log" : "Show log"}
        </button>
        {can.operate && (
          <button type="button" className="button small" disabled={blocked !== undefined} aria-describedby={blocked ? blockedId : undefined} onClick={() => setConfirming(true)}>
            Reinstall…
          </button>
        )}
      </div>
      {can.operate && blocked && (
        <p className="muted small" id={blockedId} data-testid="reinstall-blocked">
          {blocked}
        </p>
      )}
      {showResult && (
        <p className="ok-box" role="status" data-testid="reinstall-result">
          {result?.text}
        </p>
      )}
      {logOpen && (
        <div className="install-log" id={logId} data-testid="install-log">
          {logError && (
            <p className="error-box" role="alert">
              {logError}
            </p>
          )}
          {attempts === undefined && !logError && <p className="muted">Loading the log…</p>}
          {attempts?.length === 0 && <p className="muted">{running ? "The script is running; its output is read back when it exits." : "No attempt has finished yet."}</p>}
          {attempts && attempts.length > 0 && running && <p className="muted small">Attempt {st?.attempt} is running; its output is read back when it exits.</p>}
          {attempts?.map((a) => (
            <article key={a.attempt} className="install-attempt" data-attempt={a.attempt} aria-label={`Attempt ${a.attempt}`}>
              <p className="install-attempt-head">
                <span className="strong">Attempt {a.attempt}</span> <span className="muted">started {a.started}, finished {a.finished}</span>{" "}
                <span className={`badge tone-${a.ok ? "ok" : "bad"}`}>{a.outcome}</span>
              </p>
              {a.truncated && <p className="muted small">Earlier output was dropped: the manager keeps the last 64 KiB.</p>}
              <pre className="install-output" tabIndex={0} aria-label={`Output of attempt ${a.attempt}`}>
                {a.text}
              </pre>
            </article>
          ))}
        </div>
      )}
      {confirming && (
        <ConfirmDialog title={`Reinstall ${s.spec?.name}?`} confirmLabel="Reinstall" onConfirm={reinstall} onClose={() => setConfirming(false)}>
          <p>
            The install script runs again (in <span className="mono">{install.image}</span>) over the server&apos;s data directory, mounted at{" "}
            <span className="mono">/mnt/server</span>: whatever it writes there replaces what is there. Nothing else is removed first.
          </p>
          <p>
            {installStateName(st) === "failed"
              ? "The server starts once the script succeeds, if it is meant to run."
              : "The server stays stopped until you start it."}
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
