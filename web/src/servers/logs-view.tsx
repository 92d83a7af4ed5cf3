/**
 * The container's output through TailLogs: the last lines, then (with
 * "Follow") new ones as they come; a container still being made is waited
 * for, and a silent one reads "no output yet". Sticks to the bottom unless
 * the reader scrolled up. Keeps at most MAX_LINES lines.
 */
import { useEffect, useLayoutEffect, useRef, useState } from "react";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText, isAbort } from "../api/client.js";
import { isDeleted } from "./model.js";
import { appendBounded, asText, LineSplitter, matching, type OutputLine } from "./output-lines.js";

const MAX_LINES = 5000;

export function LogsView({ server }: { server: Server }) {
  const { api } = useSession();
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<OutputLine[]>([]);
  const [state, setState] = useState<{ kind: "opening" | "open" | "ended" } | { kind: "error"; message: string }>({ kind: "opening" });
  const [attempt, setAttempt] = useState(0);
  const [query, setQuery] = useState("");
  const [times, setTimes] = useState(false);
  const box = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const id = server.id;
  const deleted = isDeleted(server);

  useEffect(() => {
    if (deleted) return;
    const abort = new AbortController();
    const splitter = new LineSplitter();
    setLines([]);
    setState({ kind: "opening" });
    void (async () => {
      try {
        // announceOpen: the manager says when the log is open, so a silent container reads "no output yet".
        for await (const chunk of api.servers.tailLogs({ id, follow, tailLines: 500, announceOpen: true }, { signal: abort.signal })) {
          setState((s) => (s.kind === "open" ? s : { kind: "open" }));
          if (chunk.data.length === 0) continue;
          const add = splitter.push(chunk.stream, chunk.data, chunk.time ? Number(chunk.time.seconds) * 1000 + Math.floor(chunk.time.nanos / 1e6) : Date.now());
          if (add.length > 0) setLines((cur) => appendBounded(cur, add, MAX_LINES));
        }
        const tail = splitter.flush();
        if (tail.length) setLines((cur) => cur.concat(tail));
        setState({ kind: "ended" });
      } catch (err) {
        if (!isAbort(err) && !abort.signal.aborted) setState({ kind: "error", message: errorText(err) });
      }
    })();
    return () => abort.abort();
  }, [api, id, follow, attempt, deleted]);

  useLayoutEffect(() => {
    const el = box.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [lines]);

  const shown = matching(lines, query);
  if (deleted) return <p className="muted">A deleted server has no container and no logs. Restore and start it to read its logs.</p>;
  return (
    <div className="logs">
      <div className="logs-bar">
        <label className="check">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> Follow
        </label>
        <span className="muted small" data-testid="logs-state">
          {state.kind === "opening" ? "opening…" : state.kind === "open" ? (follow ? "live" : "loaded") : state.kind === "ended" ? "stream ended" : ""}
        </span>
        <label className="check">
          <input type="checkbox" checked={times} onChange={(e) => setTimes(e.target.checked)} /> Times
        </label>
        <input type="search" className="logs-search" placeholder="Search" aria-label="Search the output" value={query} onChange={(e) => setQuery(e.target.value)} />
        <span className="grow" />
        <button type="button" className="button small" onClick={() => download(`${server.spec?.name ?? id}.log`, asText(lines, true))} disabled={lines.length === 0}>
          Download
        </button>
        <button type="button" className="button small" onClick={() => setAttempt((a) => a + 1)}>
          Reload
        </button>
        <button type="button" className="button small" onClick={() => setLines([])}>
          Clear
        </button>
      </div>
      {state.kind === "error" && (
        <p className="error-box" role="alert">
          {state.message}
        </p>
      )}
      <div
        className="log-lines mono"
        ref={box}
        role="log"
        aria-label="Container output"
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {lines.length === 0 && state.kind === "open" && <div className="muted">{follow ? "No output yet: new lines appear here as the container writes them." : "No output."}</div>}
        {lines.length === 0 && state.kind === "ended" && <div className="muted">No output.</div>}
        {query.trim() && shown.length === 0 && lines.length > 0 && <div className="muted">No line matches “{query.trim()}”.</div>}
        {shown.map((l) => (
          <div key={l.n} className={l.stream === "stderr" ? "stderr" : undefined} title={l.stream === "stderr" ? "stderr" : undefined}>
            {times && l.time ? <span className="log-time">{new Date(l.time).toLocaleTimeString()} </span> : null}
            {l.stream === "stderr" && <span className="sr-only">stderr: </span>}
            {l.text || "\u00a0"}
          </div>
        ))}
      </div>
    </div>
  );
}

/** Saves `text` as a file named `name` (the browser's download). */
function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1_000);
}
