/**
 * Orphans: where the hosts and the database disagree (containers or data
 * directories no server record owns). Adopt one as a server of a project,
 * or destroy it after a dry run shows exactly what would go.
 */
import { useEffect, useMemo, useState } from "react";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanKind, type AdoptOrphanResponse, type Orphan } from "@berth/proto/berth/v1/orphan_pb.js";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { Poll, usePoll } from "../ui/poll.js";
import { navigate } from "../ui/router.js";
import { useToast } from "../ui/toast.js";

const KINDS: { kind: OrphanKind; title: string; about: string }[] = [
  { kind: OrphanKind.UNTRACKED, title: "Untracked containers", about: "labelled by this manager for a server it has no record of" },
  { kind: OrphanKind.STRANDED, title: "Stranded servers", about: "server records whose host was removed: move them to a host that has their data, or destroy the record" },
  { kind: OrphanKind.STRAY_DATA, title: "Stray data directories", about: "data directories under an agent's data root that no server owns" },
  { kind: OrphanKind.FOREIGN, title: "Foreign containers", about: "labelled by another berth manager: adopting or destroying one needs force (make sure that manager is gone)" },
  { kind: OrphanKind.UNMANAGED, title: "Unmanaged containers", about: "containers berth did not create (shown on request)" },
];

export function OrphansPage() {
  const { api, can } = useSession();
  const { names } = useHosts();
  const [unmanaged, setUnmanaged] = useState(false);
  const poll = useMemo(() => new Poll(async () => (await api.orphans.listOrphans({ includeUnmanaged: unmanaged })).orphans, 10_000), [api, unmanaged]);
  const st = usePoll(poll);
  const [adopting, setAdopting] = useState<Orphan>();
  const [destroying, setDestroying] = useState<Orphan>();
  const [moving, setMoving] = useState<Orphan>();
  const orphans = st.data ?? [];

  if (!can.infra) {
    return (
      <section className="page" aria-labelledby="orphans-title">
        <h1 id="orphans-title">Orphans</h1>
        <p className="notice">Orphans are shared by every project: only an all-projects admin token can list, adopt or destroy them.</p>
      </section>
    );
  }
  return (
    <section className="page" aria-labelledby="orphans-title">
      <div className="page-head">
        <div>
          <h1 id="orphans-title">Orphans</h1>
          <p className="summary">Containers and data directories on the hosts that no server record owns. berth never removes them by itself.</p>
        </div>
        <label className="check">
          <input type="checkbox" checked={unmanaged} onChange={(e) => setUnmanaged(e.target.checked)} /> Include unmanaged containers
        </label>
      </div>
      <ErrorBox error={st.error} what="Could not list orphans" />
      {st.loading && !st.data && !st.error && <p className="muted">Loading…</p>}
      {st.data && orphans.length === 0 && <p className="muted empty-inline">No orphans: the hosts and the database agree.</p>}
      {KINDS.map(({ kind, title, about }) => {
        const list = orphans.filter((o) => o.kind === kind);
        if (list.length === 0) return null;
        return (
          <div key={kind} className="orphan-group">
            <h2 className="section-title">
              {title} <span className="count">{list.length}</span>
            </h2>
            <p className="muted small">{about}</p>
            <div className="table-wrap">
              <table className="table" aria-label={title}>
                <thead>
                  <tr>
                    <th>What</th>
                    <th>Host</th>
                    <th>Image / path</th>
                    <th>State</th>
                    <th>Why</th>
                    <th>Created</th>
                    <th aria-label="Actions" />
                  </tr>
                </thead>
                <tbody>
                  {list.map((o) => (
                    <tr key={o.id} data-orphan-id={o.id}>
                      <td>
                        <div className="strong">{o.containerName || o.serverId || o.id}</div>
                        <div className="muted mono small">{o.containerId ? o.containerId.slice(0, 12) : o.id}</div>
                      </td>
                      <td>{names.get(o.hostId) ?? o.hostId}</td>
                      <td className="mono small">
                        {o.image && <div>{o.image}</div>}
                        {o.dataPath && <div className="muted">{o.dataPath}</div>}
                      </td>
                      <td>{o.state || "—"}</td>
                      <td className="message">{o.reason}</td>
                      <td>
                        <RelTime ms={tsMs(o.createTime)} />
                      </td>
                      <td className="actions">
                        {o.containerId && (kind === OrphanKind.UNTRACKED || kind === OrphanKind.FOREIGN || kind === OrphanKind.UNMANAGED) && (
                          <button type="button" className="button small" onClick={() => setAdopting(o)}>
                            Adopt…
                          </button>
                        )}
                        {kind === OrphanKind.STRANDED && (
                          <button type="button" className="button small" onClick={() => setMoving(o)}>
                            Move…
                          </button>
                        )}
                        <button type="button" className="button small danger-soft" onClick={() => setDestroying(o)}>
                          Destroy…
                        </button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </div>
        );
      })}
      {adopting && <AdoptDialog orphan={adopting} onClose={() => setAdopting(undefined)} onDone={() => void poll.refresh()} />}
      {destroying && <DestroyDialog orphan={destroying} onClose={() => setDestroying(undefined)} onDone={() => void poll.refresh()} />}
      {moving && <MoveDialog orphan={moving} onClose={() => setMoving(undefined)} onDone={() => void poll.refresh()} />}
    </section>
  );
}

function suggestName(o: Orphan): string {
  return (o.containerName || o.id)
    .replace(/^\//, "")
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63);
}

/** Mount destinations of an orphan container ("source:destination[:mode]" strings). */
function mountTargets(o: Orphan): string[] {
  return o.mounts.map((m) => /:(\/[^:]*)(?::[a-z,]+)?$/.exec(m)?.[1] ?? "").filter(Boolean);
}

function AdoptDialog({ orphan, onClose, onDone }: { orphan: Orphan; onClose: () => void; onDone: () => void }) {
  const { api } = useSession();
  const watch = useWatch();
  const toast = useToast();
  const projects = [...new Set(["default", ...[...watch.servers.values()].map((s) => s.project)])].sort();
  const targets = mountTargets(orphan);
  const [project, setProject] = useState("default");
  const [name, setName] = useState(suggestName(orphan));
  const [mountPath, setMountPath] = useState(targets.length === 1 ? targets[0]! : "");
  const [moveData, setMoveData] = useState(false);
  const [force, setForce] = useState(false);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<AdoptOrphanResponse>();
  const foreign = orphan.kind === OrphanKind.FOREIGN;
  const adopt = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const res = await api.orphans.adoptOrphan({ id: orphan.id, project, name, moveData, dataMountPath: mountPath, force });
      toast("ok", `Adopted ${orphan.containerName || orphan.id} as ${res.server?.spec?.name} in ${res.server?.project}`);
      onDone();
      setDone(res);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  if (done) {
    return (
      <Modal
        title={`Adopted as ${done.server?.spec?.name}`}
        onClose={onClose}
        testId="adopt-dialog"
        footer={
          <>
            <button type="button" className="button" onClick={onClose}>
              Done
            </button>
            <button type="button" className="button primary" onClick={() => navigate(`/servers?server=${encodeURIComponent(done.server?.id ?? "")}`)}>
              Open server
            </button>
          </>
        }
      >
        <p>
          berth manages <strong>{done.server?.spec?.name}</strong> in project <strong>{done.server?.project}</strong> from now on.
        </p>
        {done.warnings.length > 0 && (
          <>
            <h3>Not taken over</h3>
            <ul className="dry-run">
              {done.warnings.map((w) => (
                <li key={w}>{w}</li>
              ))}
            </ul>
          </>
        )}
      </Modal>
    );
  }
  return (
    <Modal
      title={`Adopt ${orphan.containerName || orphan.id}`}
      onClose={onClose}
      testId="adopt-dialog"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="button" className="button primary" onClick={adopt} disabled={busy || !name || (foreign && !force)}>
            {busy ? "Adopting…" : "Adopt"}
          </button>
        </>
      }
    >
      <p>berth makes a server record from the container's actual configuration and manages it from then on.</p>
      <label className="field">
        <span className="label">Project</span>
        <input value={project} onChange={(e) => setProject(e.target.value)} list="adopt-projects" aria-label="Project" />
        <datalist id="adopt-projects">
          {projects.map((p) => (
            <option key={p} value={p} />
          ))}
        </datalist>
      </label>
      <label className="field">
        <span className="label">Server name</span>
        <input value={name} onChange={(e) => setName(e.target.value)} aria-label="Server name" spellCheck={false} />
      </label>
      {targets.length > 0 && (
        <label className="field">
          <span className="label">Data mount</span>
          <select value={mountPath} onChange={(e) => setMountPath(e.target.value)} aria-label="Data mount">
            {targets.length > 1 && <option value="">Choose the mount that holds its data</option>}
            {targets.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
          <span className="hint">a berth server has one data directory; other mounts are dropped when berth recreates the container</span>
        </label>
      )}
      <label className="check">
        <input type="checkbox" checked={moveData} onChange={(e) => setMoveData(e.target.checked)} /> Copy its data into berth's data root (stops and recreates the
        container; the original stays)
      </label>
      {foreign && (
        <label className="check">
          <input type="checkbox" checked={force} onChange={(e) => setForce(e.target.checked)} /> It belongs to another berth manager that is gone for good: adopt it anyway
        </label>
      )}
      <ErrorText text={error} />
    </Modal>
  );
}

function DestroyDialog({ orphan, onClose, onDone }: { orphan: Orphan; onClose: () => void; onDone: () => void }) {
  const { api } = useSession();
  const toast = useToast();
  const foreign = orphan.kind === OrphanKind.FOREIGN;
  const [removeData, setRemoveData] = useState(orphan.kind === OrphanKind.STRAY_DATA);
  const [force, setForce] = useState(false);
  const [preview, setPreview] = useState<{ removed: string[]; kept: string[] } | { error: string }>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  useEffect(() => {
    let live = true;
    setPreview(undefined);
    api.orphans.destroyOrphan({ id: orphan.id, removeData, force, dryRun: true }).then(
      (r) => live && setPreview({ removed: r.removed, kept: r.kept }),
      (err: unknown) => live && setPreview({ error: errorText(err) }),
    );
    return () => {
      live = false;
    };
  }, [api, orphan.id, removeData, force]);
  const destroy = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const r = await api.orphans.destroyOrphan({ id: orphan.id, removeData, force, dryRun: false });
      toast("ok", `Destroyed: ${r.removed.join("; ") || orphan.id}`);
      onDone();
      onClose();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const ready = preview !== undefined && "removed" in preview && preview.removed.length > 0;
  return (
    <Modal
      title={`Destroy ${orphan.containerName || orphan.serverId || orphan.id}?`}
      onClose={onClose}
      testId="destroy-dialog"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="button" className="button danger" onClick={destroy} disabled={!ready || busy}>
            {busy ? "Destroying…" : "Destroy"}
          </button>
        </>
      }
    >
      {orphan.dataPath && orphan.kind !== OrphanKind.STRAY_DATA && orphan.kind !== OrphanKind.STRANDED && (
        <label className="check">
          <input type="checkbox" checked={removeData} onChange={(e) => setRemoveData(e.target.checked)} /> Also remove its data directory ({orphan.dataPath})
        </label>
      )}
      {foreign && (
        <label className="check">
          <input type="checkbox" checked={force} onChange={(e) => setForce(e.target.checked)} /> It belongs to another berth manager that is gone: destroy it anyway
        </label>
      )}
      <h3>Dry run: what would happen</h3>
      {!preview && <p className="muted">Asking the manager…</p>}
      {preview && "error" in preview && (
        <p className="error-box" role="alert">
          {preview.error}
        </p>
      )}
      {preview && "removed" in preview && (
        <>
          <p className="small strong">Removed</p>
          <ul className="dry-run" aria-label="Would be removed">
            {preview.removed.map((r) => (
              <li key={r}>{r}</li>
            ))}
            {preview.removed.length === 0 && <li className="muted">nothing</li>}
          </ul>
          {preview.kept.length > 0 && (
            <>
              <p className="small strong">Kept</p>
              <ul className="dry-run muted" aria-label="Would be kept">
                {preview.kept.map((r) => (
                  <li key={r}>{r}</li>
                ))}
              </ul>
            </>
          )}
        </>
      )}
      <ErrorText text={error} />
    </Modal>
  );
}

function MoveDialog({ orphan, onClose, onDone }: { orphan: Orphan; onClose: () => void; onDone: () => void }) {
  const { api } = useSession();
  const { hosts } = useHosts();
  const toast = useToast();
  const online = hosts.filter((h) => h.state === HostState.ONLINE && h.id !== orphan.hostId);
  const [hostId, setHostId] = useState(online[0]?.id ?? "");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const move = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const { server } = await api.orphans.reassignServer({ id: orphan.id, hostId });
      toast("ok", `Moved ${server?.spec?.name} to ${hosts.find((h) => h.id === hostId)?.name ?? hostId}`);
      onDone();
      onClose();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      title={`Move server ${orphan.serverId}`}
      onClose={onClose}
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="button" className="button primary" onClick={move} disabled={busy || !hostId}>
            {busy ? "Moving…" : "Move"}
          </button>
        </>
      }
    >
      <p>Its host was removed. Point it at a host that already has its data directory; the reconciler recreates the container there.</p>
      <label className="field">
        <span className="label">Host</span>
        <select value={hostId} onChange={(e) => setHostId(e.target.value)} aria-label="Host">
          {online.length === 0 && <option value="">No other host is online</option>}
          {online.map((h) => (
            <option key={h.id} value={h.id}>
              {h.name || h.id}
            </option>
          ))}
        </select>
      </label>
      <ErrorText text={error} />
    </Modal>
  );
}
