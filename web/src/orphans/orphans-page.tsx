/**
 * Orphans: where the hosts and the database disagree (containers or data
 * directories no server record owns). Adopt one as a server of a project,
 * or destroy it after a dry run shows exactly what would go.
 */
import { useEffect, useMemo, useState } from "react";
import { OrphanKind, type Orphan } from "@berth/proto/berth/v1/orphan_pb.js";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { ErrorBox } from "../ui/error-box.js";
import { tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { Poll, usePoll } from "../ui/poll.js";
import { setParam } from "../ui/router.js";
import { useToast } from "../ui/toast.js";

const KINDS: { kind: OrphanKind; title: string; about: string }[] = [
  { kind: OrphanKind.UNTRACKED, title: "Untracked containers", about: "labelled by this manager for a server it has no record of" },
  { kind: OrphanKind.STRANDED, title: "Stranded", about: "belong to a server record that no longer matches them" },
  { kind: OrphanKind.STRAY_DATA, title: "Stray data directories", about: "data directories under an agent's data root that no server owns" },
  { kind: OrphanKind.FOREIGN, title: "Foreign containers", about: "labelled by another berth manager" },
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
                        {o.containerId && kind !== OrphanKind.STRAY_DATA && (
                          <button type="button" className="button small" onClick={() => setAdopting(o)}>
                            Adopt…
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

function AdoptDialog({ orphan, onClose, onDone }: { orphan: Orphan; onClose: () => void; onDone: () => void }) {
  const { api } = useSession();
  const watch = useWatch();
  const toast = useToast();
  const projects = [...new Set(["default", ...[...watch.servers.values()].map((s) => s.project)])].sort();
  const [project, setProject] = useState("default");
  const [name, setName] = useState(suggestName(orphan));
  const [moveData, setMoveData] = useState(true);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const adopt = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const { server } = await api.orphans.adoptOrphan({ id: orphan.id, project, name, moveData });
      toast("ok", `Adopted ${orphan.containerName || orphan.id} as ${server?.spec?.name} in ${server?.project}`);
      onDone();
      onClose();
      if (server) setParam("server", server.id);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
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
          <button type="button" className="button primary" onClick={adopt} disabled={busy || !name}>
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
      <label className="check">
        <input type="checkbox" checked={moveData} onChange={(e) => setMoveData(e.target.checked)} /> Move its data into berth's data root
      </label>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
    </Modal>
  );
}

function DestroyDialog({ orphan, onClose, onDone }: { orphan: Orphan; onClose: () => void; onDone: () => void }) {
  const { api } = useSession();
  const toast = useToast();
  const [removeData, setRemoveData] = useState(orphan.kind === OrphanKind.STRAY_DATA);
  const [preview, setPreview] = useState<{ removed: string[] } | { error: string }>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  useEffect(() => {
    let live = true;
    setPreview(undefined);
    api.orphans.destroyOrphan({ id: orphan.id, removeData, dryRun: true }).then(
      (r) => live && setPreview({ removed: r.removed }),
      (err: unknown) => live && setPreview({ error: errorText(err) }),
    );
    return () => {
      live = false;
    };
  }, [api, orphan.id, removeData]);
  const destroy = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const r = await api.orphans.destroyOrphan({ id: orphan.id, removeData, dryRun: false });
      toast("ok", `Destroyed: ${r.removed.join(", ") || orphan.id}`);
      onDone();
      onClose();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const ready = preview !== undefined && "removed" in preview;
  return (
    <Modal
      title={`Destroy ${orphan.containerName || orphan.id}?`}
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
      {orphan.dataPath && orphan.kind !== OrphanKind.STRAY_DATA && (
        <label className="check">
          <input type="checkbox" checked={removeData} onChange={(e) => setRemoveData(e.target.checked)} /> Also remove its data ({orphan.dataPath})
        </label>
      )}
      <h3>Dry run</h3>
      {!preview && <p className="muted">Asking the host what would be removed…</p>}
      {preview && "error" in preview && (
        <p className="error-box" role="alert">
          {preview.error}
        </p>
      )}
      {preview && "removed" in preview && (
        <ul className="dry-run" aria-label="Would be removed">
          {preview.removed.map((r) => (
            <li key={r} className="mono">
              {r}
            </li>
          ))}
          {preview.removed.length === 0 && <li className="muted">nothing</li>}
        </ul>
      )}
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
    </Modal>
  );
}
