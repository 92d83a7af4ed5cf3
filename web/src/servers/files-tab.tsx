/**
 * A server's data directory (FileService), running or stopped: a listing
 * (folders first, paged, breadcrumbs), downloads and a text editor for
 * everyone who may see the server; uploads (button or drag-and-drop, 1 MiB
 * chunks, a bar and Cancel per file), new folder, rename/move, copy,
 * chmod, delete, archive and extract for operators. What the manager
 * refuses is shown in its words where the action was taken.
 */
import { lazy, Suspense, useCallback, useEffect, useRef, useState, type DragEvent, type FormEvent, type ReactNode } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { ArchiveFormat, FileType, type FileInfo } from "@berth/proto/berth/v1/file_pb.js";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText, isAbort } from "../api/client.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { count, formatBytes, formatTime, tsMs } from "../ui/format.js";
import { Menu, type MenuItem } from "../ui/menu.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { downloadBlob, uploadBlob } from "./file-transfer.js";
import {
  archiveName,
  baseName,
  breadcrumbs,
  displayPath,
  extractDestination,
  formatMode,
  isArchive,
  joinPath,
  mergePage,
  nameProblem,
  normalizePath,
  notEditable,
  octalMode,
  parseOctalMode,
  percent,
  sortEntries,
  textOf,
  writeErrorText,
} from "./files-model.js";
import { isDeleted } from "./model.js";

/** CodeMirror is loaded when a file is first opened, not with the dashboard. */
const CodeEditor = lazy(() => import("../ui/code-editor.js").then((m) => ({ default: m.CodeEditor })));

const PAGE = 200;

interface Listing {
  entries: FileInfo[] | undefined;
  next: string;
  error: unknown;
  loading: boolean;
}

/** One directory's entries, a page at a time; `refresh` reloads as many entries as were shown. */
function useListing(server: string, dir: string, enabled: boolean) {
  const { api } = useSession();
  const [state, setState] = useState<Listing>({ entries: undefined, next: "", error: undefined, loading: true });
  const seq = useRef(0);
  const shown = useRef(0);
  shown.current = state.entries?.length ?? 0;
  const load = useCallback(
    async (token: string, append: boolean) => {
      const mine = ++seq.current;
      setState((s) => ({ ...s, loading: true }));
      try {
        const want = append ? 0 : shown.current;
        let page = await api.files.listFiles({ server, path: dir, pageSize: PAGE, pageToken: token });
        let got = page.entries;
        // A refresh after an action keeps the pages that were loaded.
        while (!append && page.nextPageToken && got.length < want) {
          page = await api.files.listFiles({ server, path: dir, pageSize: PAGE, pageToken: page.nextPageToken });
          got = [...got, ...page.entries];
        }
        if (mine !== seq.current) return;
        setState((s) => ({ entries: append ? mergePage(s.entries ?? [], got) : sortEntries(got), next: page.nextPageToken, error: undefined, loading: false }));
      } catch (error) {
        if (mine !== seq.current) return;
        setState((s) => ({ ...s, error, loading: false }));
      }
    },
    [api, server, dir],
  );
  useEffect(() => {
    shown.current = 0;
    setState({ entries: undefined, next: "", error: undefined, loading: true });
    if (enabled) void load("", false);
  }, [load, enabled]);
  return { ...state, refresh: () => load("", false), loadMore: () => load(state.next, true) };
}

type TransferState = "queued" | "running" | "done" | "failed" | "canceled";

interface Transfer {
  key: number;
  kind: "upload" | "download";
  path: string;
  total: number;
  done: number;
  state: TransferState;
  error?: string;
  abort: AbortController;
}

/** The manager's words for a refused file call; "changed since you opened it" for Aborted. */
function fileErrorText(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Canceled) return "canceled";
  return writeErrorText(Code[e.code], e.rawMessage);
}

type Dialog =
  | { kind: "mkdir" }
  | { kind: "rename" | "copy" | "chmod" | "delete" | "extract"; entry: FileInfo }
  | { kind: "archive" | "delete-selected"; names: string[] }
  | { kind: "replace"; files: File[]; existing: string[] };

export function FilesTab({ server }: { server: Server }) {
  const { api, can } = useSession();
  const toast = useToast();
  const [dir, setDir] = useState("");
  const deleted = isDeleted(server);
  const list = useListing(server.id, dir, !deleted);
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const [dialog, setDialog] = useState<Dialog>();
  const [opened, setOpened] = useState<FileInfo>();
  const [transfers, setTransfers] = useState<Transfer[]>([]);
  const [dropping, setDropping] = useState(false);
  const picker = useRef<HTMLInputElement>(null);
  const keys = useRef(0);
  const queue = useRef<Promise<void>>(Promise.resolve());
  // Uploads and dialogs finish after the folder shown may have changed: they refresh the one shown then.
  const latestRefresh = useRef(list.refresh);
  latestRefresh.current = list.refresh;
  const refresh = () => latestRefresh.current();

  useEffect(() => setSelected(new Set()), [dir]);
  // Transfers under way stop when the tab closes.
  const live = useRef(transfers);
  live.current = transfers;
  useEffect(() => () => live.current.forEach((t) => t.abort.abort()), []);

  const patch = (key: number, p: Partial<Transfer>) => setTransfers((ts) => ts.map((t) => (t.key === key ? { ...t, ...p } : t)));
  const add = (t: Omit<Transfer, "key" | "abort" | "done" | "state">): Transfer => {
    const full: Transfer = { ...t, key: ++keys.current, done: 0, state: "queued", abort: new AbortController() };
    // Everything under way stays listed; of what has finished, the last few (dismissable).
    setTransfers((ts) => {
      const finished = ts.filter((x) => x.state !== "queued" && x.state !== "running").slice(-5);
      return [...ts.filter((x) => x.state === "queued" || x.state === "running" || finished.includes(x)), full];
    });
    return full;
  };

  if (deleted) return <p className="muted">A deleted server's files are unavailable. Restore the server first.</p>;

  const upload = (files: File[]) => {
    for (const f of files) {
      const t = add({ kind: "upload", path: joinPath(dir, f.name), total: f.size });
      // One file at a time, one chunk in flight: the host writes each chunk before the next is sent.
      queue.current = queue.current.then(async () => {
        if (t.abort.signal.aborted) return;
        patch(t.key, { state: "running" });
        try {
          await uploadBlob(api.files, server.id, t.path, f, { signal: t.abort.signal, onProgress: (done) => patch(t.key, { done }) });
          patch(t.key, { state: "done", done: f.size });
          void refresh();
        } catch (err) {
          if (t.abort.signal.aborted || isAbort(err)) patch(t.key, { state: "canceled" });
          else patch(t.key, { state: "failed", error: fileErrorText(err) });
        }
      });
    }
  };
  /** Uploads, asking first when a name is already listed here. */
  const offerUpload = (files: File[]) => {
    if (files.length === 0) return;
    const names = new Set((list.entries ?? []).map((e) => e.name));
    const existing = files.map((f) => f.name).filter((n) => names.has(n));
    if (existing.length > 0) setDialog({ kind: "replace", files, existing });
    else upload(files);
  };
  const download = async (entry: FileInfo) => {
    const path = joinPath(dir, entry.name);
    const t = add({ kind: "download", path, total: Number(entry.size) });
    patch(t.key, { state: "running" });
    try {
      const { blob } = await downloadBlob(api.files, server.id, path, { signal: t.abort.signal, onProgress: (done, total) => patch(t.key, { done, total }) });
      saveBlob(blob, entry.name);
      patch(t.key, { state: "done", done: blob.size, total: blob.size });
    } catch (err) {
      if (t.abort.signal.aborted || isAbort(err)) patch(t.key, { state: "canceled" });
      else patch(t.key, { state: "failed", error: errorText(err) });
    }
  };

  const onDragOver = (e: DragEvent) => {
    if (!can.operate || !e.dataTransfer.types.includes("Files")) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    setDropping(true);
  };
  const onDrop = (e: DragEvent) => {
    if (!can.operate) return;
    e.preventDefault();
    setDropping(false);
    offerUpload([...e.dataTransfer.files]);
  };

  const entries = list.entries ?? [];
  const names = entries.map((e) => e.name);
  const allSelected = names.length > 0 && names.every((n) => selected.has(n));
  const toggle = (name: string) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(name)) n.delete(name);
      else n.add(name);
      return n;
    });
  const chosen = names.filter((n) => selected.has(n));
  const done = (message: string) => {
    toast("ok", message);
    setSelected(new Set());
    void refresh();
  };

  return (
    <div
      className={`files${dropping ? " dropping" : ""}`}
      onDragOver={onDragOver}
      onDragLeave={(e) => e.currentTarget === e.target && setDropping(false)}
      onDrop={onDrop}
      data-testid="files"
    >
      <div className="files-bar">
        <nav aria-label="Folder path" className="crumbs">
          {breadcrumbs(dir).map((c, i, all) =>
            i === all.length - 1 ? (
              <span key={c.path} className="crumb current mono" aria-current="location">
                {c.label}
              </span>
            ) : (
              <span key={c.path} className="crumb-step">
                <button type="button" className="link mono" onClick={() => setDir(c.path)}>
                  {c.label}
                </button>
                <span className="muted" aria-hidden="true">
                  /
                </span>
              </span>
            ),
          )}
        </nav>
        <span className="grow" />
        <button type="button" className="button small" onClick={() => void refresh()} disabled={list.loading}>
          Refresh
        </button>
        {can.operate && (
          <>
            <button type="button" className="button small" onClick={() => setDialog({ kind: "mkdir" })}>
              New folder…
            </button>
            <button type="button" className="button small primary" onClick={() => picker.current?.click()}>
              Upload files…
            </button>
            <input
              ref={picker}
              type="file"
              multiple
              hidden
              aria-label="Files to upload"
              onChange={(e) => {
                offerUpload([...(e.target.files ?? [])]);
                e.target.value = "";
              }}
            />
          </>
        )}
      </div>
      {can.operate && chosen.length > 0 && (
        <div className="files-selection" role="group" aria-label="Selected entries">
          <span className="strong">{count(chosen.length, "selected entry", "selected entries")}</span>
          <button type="button" className="button small" onClick={() => setDialog({ kind: "archive", names: chosen })}>
            Archive…
          </button>
          <button type="button" className="button small danger-soft" onClick={() => setDialog({ kind: "delete-selected", names: chosen })}>
            Delete…
          </button>
          <button type="button" className="link" onClick={() => setSelected(new Set())}>
            Clear selection
          </button>
        </div>
      )}
      {can.operate && <p className="muted small files-hint">Drop files here to upload them into {displayPath(dir)}.</p>}
      <Transfers transfers={transfers} onCancel={(t) => (t.abort.abort(), patch(t.key, { state: "canceled" }))} onDismiss={(t) => setTransfers((ts) => ts.filter((x) => x.key !== t.key))} />
      <ErrorBox error={list.error} what={`Could not list ${displayPath(dir)}`} />
      {list.entries === undefined && !list.error && <p className="muted">Loading…</p>}
      {list.entries && entries.length === 0 && <p className="muted empty-inline">{dir === "" ? "The data directory is empty." : "This folder is empty."}</p>}
      {entries.length > 0 && (
        <div className="table-wrap">
          <table className="table files-table stack-on-phone" aria-label={`Files in ${displayPath(dir)}`}>
            <thead>
              <tr>
                {can.operate && (
                  <th className="pick">
                    <input type="checkbox" aria-label="Select all" checked={allSelected} onChange={() => setSelected(allSelected ? new Set() : new Set(names))} />
                  </th>
                )}
                <th>Name</th>
                <th className="num">Size</th>
                <th>Mode</th>
                <th>Modified</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <EntryRow
                  key={e.name}
                  e={e}
                  selected={selected.has(e.name)}
                  onToggle={() => toggle(e.name)}
                  onEnter={() => setDir(joinPath(dir, e.name))}
                  onOpen={() => setOpened(e)}
                  onDownload={() => void download(e)}
                  onDialog={setDialog}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {list.next && (
        <button type="button" className="button small" disabled={list.loading} onClick={() => void list.loadMore()}>
          {list.loading ? "Loading…" : `Load more (${entries.length} shown)`}
        </button>
      )}
      {opened && <FileEditor server={server} path={joinPath(dir, opened.name)} entry={opened} onClose={() => setOpened(undefined)} onSaved={() => void refresh()} onDownload={() => void download(opened)} />}
      {dialog && <FileDialog server={server} dir={dir} dialog={dialog} onClose={() => setDialog(undefined)} onDone={done} onRefresh={() => void refresh()} onUpload={upload} />}
    </div>
  );
}

function EntryRow(props: { e: FileInfo; selected: boolean; onToggle: () => void; onEnter: () => void; onOpen: () => void; onDownload: () => void; onDialog: (d: Dialog) => void }) {
  const { e } = props;
  const { can } = useSession();
  const isDir = e.type === FileType.DIRECTORY;
  const isFile = e.type === FileType.FILE;
  const items: MenuItem[] = [
    { label: "Rename or move…", onSelect: () => props.onDialog({ kind: "rename", entry: e }) },
    ...(isDir || isFile ? [{ label: "Copy…", onSelect: () => props.onDialog({ kind: "copy", entry: e }) }] : []),
    ...(isDir || isFile ? [{ label: "Change mode…", onSelect: () => props.onDialog({ kind: "chmod", entry: e }) }] : []),
    ...(isFile && isArchive(e.name) ? [{ label: "Extract…", onSelect: () => props.onDialog({ kind: "extract", entry: e }) }] : []),
    ...(isDir || isFile ? [{ label: "Archive…", onSelect: () => props.onDialog({ kind: "archive", names: [e.name] }) }] : []),
    { label: "Delete…", onSelect: () => props.onDialog({ kind: "delete", entry: e }), danger: true },
  ];
  return (
    <tr data-name={e.name} data-type={FileType[e.type].toLowerCase()} className={props.selected ? "selected" : undefined}>
      {can.operate && (
        <td className="pick">
          <input type="checkbox" aria-label={`Select ${e.name}`} checked={props.selected} onChange={props.onToggle} />
        </td>
      )}
      <td className="name wrap">
        {isDir ? (
          <button type="button" className="link strong" onClick={props.onEnter} aria-label={`Open folder ${e.name}`}>
            <span aria-hidden="true">📁 </span>
            {e.name}/
          </button>
        ) : isFile ? (
          <button type="button" className="link" onClick={props.onOpen} aria-label={`Open ${e.name}`}>
            {e.name}
          </button>
        ) : (
          <span className="muted" title={e.type === FileType.SYMLINK ? "A symlink: listed, never followed" : "A device, socket or FIFO: listed, never opened"}>
            {e.name} <span className="small">({e.type === FileType.SYMLINK ? "symlink" : "special"})</span>
          </span>
        )}
      </td>
      <td className="num" data-label="Size">
        {isDir ? <span className="muted">—</span> : formatBytes(e.size)}
      </td>
      <td className="mono" data-label="Mode" title={octalMode(e.mode)}>
        {formatMode(e.mode, e.type)}
      </td>
      <td data-label="Modified">{formatTime(tsMs(e.modifyTime))}</td>
      <td className="actions">
        {isFile && (
          <button type="button" className="button small" onClick={props.onDownload} aria-label={`Download ${e.name}`}>
            Download
          </button>
        )}
        {can.operate && (
          <Menu label={`Actions for ${e.name}`} items={items}>
            ⋯
          </Menu>
        )}
      </td>
    </tr>
  );
}

function Transfers({ transfers, onCancel, onDismiss }: { transfers: Transfer[]; onCancel: (t: Transfer) => void; onDismiss: (t: Transfer) => void }) {
  if (transfers.length === 0) return null;
  return (
    <ul className="transfers" aria-label="Transfers">
      {transfers.map((t) => {
        const p = percent(t.done, t.total);
        const what = `${t.kind === "upload" ? "Upload" : "Download"} of ${displayPath(t.path)}`;
        const status =
          t.state === "queued"
            ? "waiting"
            : t.state === "running"
              ? `${formatBytes(t.done)} of ${formatBytes(t.total)}`
              : t.state === "done"
                ? `${t.kind === "upload" ? "uploaded" : "downloaded"}, ${formatBytes(t.total)}`
                : t.state;
        return (
          <li key={t.key} className={`transfer ${t.state}`} data-state={t.state} data-kind={t.kind} data-path={t.path}>
            <span className="transfer-name mono">{baseName(t.path)}</span>
            <span className="op-bar" role="progressbar" aria-label={what} aria-valuemin={0} aria-valuemax={100} aria-valuenow={p} aria-valuetext={`${p}%, ${status}`}>
              <span style={{ width: `${p}%` }} />
            </span>
            <span className="muted small transfer-status">{status}</span>
            {t.state === "queued" || t.state === "running" ? (
              <button type="button" className="button small" onClick={() => onCancel(t)} aria-label={`Cancel ${what}`}>
                Cancel
              </button>
            ) : (
              <button type="button" className="icon-button" onClick={() => onDismiss(t)} aria-label={`Dismiss ${what}`}>
                ×
              </button>
            )}
            {t.error && (
              <p className="error-box" role="alert">
                {t.error}
              </p>
            )}
          </li>
        );
      })}
    </ul>
  );
}

type EditorState = { kind: "loading"; received: number } | { kind: "refused"; message: string } | { kind: "error"; message: string } | { kind: "text"; base: string; modifyTime: FileInfo["modifyTime"] };

/** A small text file in the code editor: read-only for viewers; Save refuses to overwrite a change made since it was read. */
function FileEditor(props: { server: Server; path: string; entry: FileInfo; onClose: () => void; onSaved: () => void; onDownload: () => void }) {
  const { api, can } = useSession();
  const toast = useToast();
  const [state, setState] = useState<EditorState>(() => {
    const why = notEditable(props.entry);
    return why ? { kind: "refused", message: why } : { kind: "loading", received: 0 };
  });
  const [text, setText] = useState("");
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<string>();
  const [conflict, setConflict] = useState(false);
  const [reads, setReads] = useState(0);
  const { server, path } = props;

  useEffect(() => {
    if (notEditable(props.entry)) return;
    const abort = new AbortController();
    setState({ kind: "loading", received: 0 });
    void (async () => {
      try {
        const { entry, blob } = await downloadBlob(api.files, server.id, path, { signal: abort.signal, onProgress: (received) => setState({ kind: "loading", received }) });
        const why = entry ? notEditable(entry) : undefined;
        if (why) return setState({ kind: "refused", message: why });
        const t = textOf(new Uint8Array(await blob.arrayBuffer()));
        if (t === undefined) return setState({ kind: "refused", message: "This file is not text (it holds NUL bytes or is not UTF-8). Download it instead." });
        setText(t);
        setState({ kind: "text", base: t, modifyTime: entry?.modifyTime });
      } catch (err) {
        if (!abort.signal.aborted) setState({ kind: "error", message: errorText(err) });
      }
    })();
    return () => abort.abort();
  }, [api, server.id, path, props.entry, reads]);

  const dirty = state.kind === "text" && text !== state.base;
  const save = async (e: FormEvent | undefined, overwrite = false) => {
    e?.preventDefault();
    if (state.kind !== "text" || saving) return;
    setSaving(true);
    setError(undefined);
    try {
      const written = await uploadBlob(api.files, server.id, path, new Blob([text]), { expectedModifyTime: overwrite ? undefined : state.modifyTime });
      setState({ kind: "text", base: text, modifyTime: written?.modifyTime });
      setConflict(false);
      toast("ok", `Saved ${displayPath(path)}`);
      props.onSaved();
    } catch (err) {
      setConflict(ConnectError.from(err).code === Code.Aborted);
      setError(fileErrorText(err));
    } finally {
      setSaving(false);
    }
  };
  const close = () => {
    if (dirty && !window.confirm(`Discard your changes to ${displayPath(path)}?`)) return;
    props.onClose();
  };
  const editable = can.operate && state.kind === "text";
  return (
    <Modal
      title={<span className="mono">{displayPath(path)}</span>}
      onClose={close}
      wide
      testId="file-editor"
      footer={
        <>
          <button type="button" className="button" onClick={props.onDownload}>
            Download
          </button>
          {conflict && (
            <>
              <button type="button" className="button" onClick={() => (setError(undefined), setConflict(false), setReads((n) => n + 1))}>
                Reload (drop my changes)
              </button>
              <button type="button" className="button danger" disabled={saving} onClick={() => void save(undefined, true)}>
                Overwrite anyway
              </button>
            </>
          )}
          {editable && (
            <button type="submit" form="file-editor-form" className="button primary" disabled={saving || !dirty}>
              {saving ? "Saving…" : "Save"}
            </button>
          )}
          <button type="button" className="button" onClick={close}>
            Close
          </button>
        </>
      }
    >
      <p className="muted small file-facts">
        {formatBytes(props.entry.size)} · <span className="mono">{formatMode(props.entry.mode, props.entry.type)}</span> · modified {formatTime(tsMs(props.entry.modifyTime))}
      </p>
      {state.kind === "loading" && <p className="muted">Reading… {state.received > 0 && formatBytes(state.received)}</p>}
      {state.kind === "refused" && <p className="notice">{state.message}</p>}
      {state.kind === "error" && <ErrorText text={state.message} />}
      {state.kind === "text" && (
        <form id="file-editor-form" onSubmit={(e) => void save(e)}>
          <Suspense fallback={<p className="muted">Loading the editor…</p>}>
            <CodeEditor value={text} readOnly={!can.operate} ariaLabel={`Contents of ${displayPath(path)}`} onChange={setText} onSave={() => void save(undefined)} />
          </Suspense>
          {!can.operate && <p className="muted small">Viewers read files; an operator may edit them.</p>}
        </form>
      )}
      <ErrorText text={error} />
    </Modal>
  );
}

/** Every dialog of the tab: one text field checked before it is sent, the manager's refusal shown in the dialog. */
function FileDialog(props: { server: Server; dir: string; dialog: Dialog; onClose: () => void; onDone: (message: string) => void; onRefresh: () => void; onUpload: (files: File[]) => void }) {
  const { api } = useSession();
  const { server, dir, dialog, onClose, onDone } = props;
  const id = server.id;
  const at = (name: string) => joinPath(dir, name);
  /** A typed path: "/…" from the data directory, otherwise from the folder shown. */
  const target = (typed: string) => (typed.trim().startsWith("/") ? normalizePath(typed.trim()) : joinPath(dir, typed.trim()));
  const pathProblem = (typed: string) => (normalizePath(typed.trim()) === "" ? "Type a name or a path." : undefined);
  switch (dialog.kind) {
    case "mkdir":
      return (
        <PromptDialog
          title={`New folder in ${displayPath(dir)}`}
          label="Folder name"
          initial=""
          confirmLabel="Create folder"
          check={nameProblem}
          onClose={onClose}
          onSubmit={async (name) => {
            await api.files.makeDirectory({ server: id, path: at(name) });
            onDone(`Created ${displayPath(at(name))}`);
          }}
        />
      );
    case "rename":
    case "copy": {
      const from = at(dialog.entry.name);
      const copy = dialog.kind === "copy";
      return (
        <PromptDialog
          title={`${copy ? "Copy" : "Rename or move"} ${displayPath(from)}`}
          label={copy ? "Copy to" : "New name or path"}
          hint={`A name in ${displayPath(dir)}, or a path from the data directory starting with “/”. ${copy ? "It must not exist." : "An existing entry is not replaced."}`}
          initial={copy ? `${dialog.entry.name}.copy` : dialog.entry.name}
          confirmLabel={copy ? "Copy" : "Rename"}
          check={pathProblem}
          onClose={onClose}
          onSubmit={async (typed) => {
            const to = target(typed);
            if (copy) {
              const res = await api.files.copyFile({ server: id, fromPath: from, toPath: to });
              onDone(`Copied ${displayPath(from)} to ${displayPath(to)} (${count(res.entries, "entry", "entries")}, ${formatBytes(res.bytes)})`);
            } else {
              await api.files.moveFile({ server: id, fromPath: from, toPath: to });
              onDone(`Moved ${displayPath(from)} to ${displayPath(to)}`);
            }
          }}
        />
      );
    }
    case "chmod": {
      const e = dialog.entry;
      const path = at(e.name);
      return (
        <PromptDialog
          title={`Change the mode of ${displayPath(path)}`}
          label="Mode (octal)"
          hint={`Now ${octalMode(e.mode)} (${formatMode(e.mode, e.type)}).`}
          preview={(typed) => {
            const m = parseOctalMode(typed);
            return "mode" in m ? <span className="mono">{formatMode(m.mode, e.type)}</span> : null;
          }}
          initial={octalMode(e.mode)}
          confirmLabel="Change mode"
          check={(typed) => {
            const m = parseOctalMode(typed);
            return "problem" in m ? m.problem : undefined;
          }}
          onClose={onClose}
          onSubmit={async (typed) => {
            const m = parseOctalMode(typed);
            if (!("mode" in m)) return;
            const res = await api.files.changeFileMode({ server: id, path, mode: m.mode });
            onDone(`${displayPath(path)} is now ${formatMode(res.entry?.mode ?? m.mode, e.type)}`);
          }}
        />
      );
    }
    case "extract": {
      const archive = at(dialog.entry.name);
      return (
        <PromptDialog
          title={`Extract ${displayPath(archive)}`}
          label="Into the folder"
          hint="A path from the data directory; created if missing. Nothing existing is overwritten: a name already there refuses the whole archive."
          initial={displayPath(extractDestination(archive))}
          confirmLabel="Extract"
          onClose={onClose}
          onSubmit={async (typed) => {
            const dest = target(typed);
            const res = await api.files.extractArchive({ server: id, archivePath: archive, destinationPath: dest });
            onDone(`Extracted ${count(res.entries, "entry", "entries")} (${formatBytes(res.bytes)}) into ${displayPath(dest)}`);
          }}
        />
      );
    }
    case "archive": {
      const paths = dialog.names.map(at);
      return (
        <PromptDialog
          title={`Archive ${dialog.names.length === 1 ? displayPath(paths[0]!) : count(dialog.names.length, "entry", "entries")}`}
          label="Archive name"
          hint={`Written in ${displayPath(dir)} (or a path starting with “/”); end it in .tar.gz or .zip. Symlinks and special files are left out.`}
          initial={archiveName(dir, dialog.names, ".tar.gz")}
          confirmLabel="Create archive"
          check={(typed) => (formatOf(typed) ? pathProblem(typed) : "End the name in .tar.gz (or .tgz) or .zip.")}
          onClose={onClose}
          onSubmit={async (typed) => {
            const to = target(typed);
            const res = await api.files.createArchive({ server: id, paths, archivePath: to, format: formatOf(typed)! });
            const skipped = res.skippedCount > 0n ? `; ${count(res.skippedCount, "entry", "entries")} left out (symlinks or special files)` : "";
            onDone(`Created ${displayPath(to)} (${count(res.entries, "entry", "entries")}, ${formatBytes(res.entry?.size)})${skipped}`);
          }}
        >
          <ul className="mono small path-list">
            {paths.map((p) => (
              <li key={p}>{displayPath(p)}</li>
            ))}
          </ul>
        </PromptDialog>
      );
    }
    case "delete": {
      const e = dialog.entry;
      const path = at(e.name);
      const isDir = e.type === FileType.DIRECTORY;
      return (
        <ConfirmDialog
          title={`Delete ${displayPath(path)}?`}
          confirmLabel="Delete"
          danger
          onClose={onClose}
          onConfirm={async () => {
            try {
              await api.files.deleteFile({ server: id, path, recursive: isDir });
              onDone(`Deleted ${displayPath(path)}`);
              return undefined;
            } catch (err) {
              return errorText(err);
            }
          }}
        >
          <p>
            {isDir ? "The folder " : ""}
            <code>{displayPath(path)}</code> {isDir ? "and everything in it will be deleted" : "will be deleted"} from the server's data directory. There is no undo (a backup has what it had then).
          </p>
        </ConfirmDialog>
      );
    }
    case "delete-selected": {
      const list = dialog.names.map((n) => ({ n, path: at(n) }));
      return (
        <ConfirmDialog
          title={`Delete ${count(list.length, "entry", "entries")}?`}
          confirmLabel="Delete"
          danger
          onClose={onClose}
          onConfirm={async () => {
            // One at a time; the first refusal stops and is shown, what was deleted before it stays deleted.
            for (const [i, { path }] of list.entries()) {
              try {
                await api.files.deleteFile({ server: id, path, recursive: true });
              } catch (err) {
                if (i > 0) props.onRefresh();
                return `${displayPath(path)}: ${errorText(err)}${i > 0 ? ` (the ${count(i, "entry", "entries")} before it were deleted)` : ""}`;
              }
            }
            onDone(`Deleted ${count(list.length, "entry", "entries")}`);
            return undefined;
          }}
        >
          <p>These will be deleted from the server's data directory, folders with everything in them. There is no undo.</p>
          <ul className="mono small path-list">
            {list.map(({ path }) => (
              <li key={path}>{displayPath(path)}</li>
            ))}
          </ul>
        </ConfirmDialog>
      );
    }
    case "replace":
      return (
        <ConfirmDialog
          title={`Replace ${count(dialog.existing.length, "file")}?`}
          confirmLabel="Upload and replace"
          onClose={onClose}
          onConfirm={async () => props.onUpload(dialog.files)}
        >
          <p>{dialog.existing.length === 1 ? "This name is" : "These names are"} already in {displayPath(dir)}; the upload replaces what is there once it has arrived whole.</p>
          <ul className="mono small path-list">
            {dialog.existing.map((n) => (
              <li key={n}>{n}</li>
            ))}
          </ul>
        </ConfirmDialog>
      );
  }
}

function formatOf(name: string): ArchiveFormat | undefined {
  const n = name.trim().toLowerCase();
  if (n.endsWith(".zip")) return ArchiveFormat.ZIP;
  if (n.endsWith(".tar.gz") || n.endsWith(".tgz")) return ArchiveFormat.TAR_GZ;
  return undefined;
}

function PromptDialog(props: {
  title: string;
  label: string;
  hint?: string;
  initial: string;
  confirmLabel: string;
  check?: (value: string) => string | undefined;
  preview?: (value: string) => ReactNode;
  onSubmit: (value: string) => Promise<void>;
  onClose: () => void;
  children?: ReactNode;
}) {
  const [value, setValue] = useState(props.initial);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    if (busy) return;
    const problem = props.check?.(value);
    if (problem) return setError(problem);
    setBusy(true);
    setError(undefined);
    try {
      await props.onSubmit(value);
      props.onClose();
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };
  return (
    <Modal
      title={props.title}
      onClose={props.onClose}
      footer={
        <>
          <button type="button" className="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="button" className="button primary" disabled={busy} onClick={() => void submit()}>
            {busy ? "Working…" : props.confirmLabel}
          </button>
        </>
      }
    >
      <form onSubmit={(e) => void submit(e)}>
        {props.children}
        <label className="field">
          <span>{props.label}</span>
          <input
            className="mono"
            value={value}
            onChange={(e) => (setValue(e.target.value), setError(undefined))}
            autoComplete="off"
            spellCheck={false}
            data-autofocus
            aria-invalid={error ? true : undefined}
          />
          {props.hint && <span className="hint">{props.hint}</span>}
          {props.preview?.(value)}
        </label>
        <ErrorText text={error} />
      </form>
    </Modal>
  );
}

/** Hands a Blob to the browser as a download named `name`. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.style.display = "none";
  document.body.append(a);
  a.click();
  a.remove();
  // The browser has started reading the URL by now; give it time before letting go.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
