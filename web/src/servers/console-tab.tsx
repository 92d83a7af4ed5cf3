/**
 * A server's console (WatchConsole, SendConsoleCommand): its output from a
 * backlog on, across restarts (marked), and an input line with history
 * (↑/↓) for operators. A stream that drops is reopened with a backlog, and
 * what was already shown is not shown twice (afterOverlap); when the lines
 * on screen are no longer in the backlog, a marker says output may be missing.
 */
import { useEffect, useLayoutEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText, isAbort } from "../api/client.js";
import { isDeleted } from "./model.js";
import { afterOverlap, appendBounded, LineSplitter, type OutputLine } from "./output-lines.js";

const MAX_LINES = 5000;
const BACKLOG_LINES = 200;
/** A reopened stream's first output is its backlog, gathered this long before it is joined to what is shown. */
const BACKLOG_GATHER_MS = 400;
const HISTORY = 100;

type State = { kind: "connecting" | "live" } | { kind: "reconnecting"; message: string };

export function ConsoleTab({ server }: { server: Server }) {
  const { api, can } = useSession();
  const [lines, setLines] = useState<OutputLine[]>([]);
  const [state, setState] = useState<State>({ kind: "connecting" });
  const [input, setInput] = useState("");
  const [sendError, setSendError] = useState<string>();
  const [sending, setSending] = useState(false);
  const history = useRef<string[]>([]);
  const cursor = useRef(-1);
  const box = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const shown = useRef<OutputLine[]>([]);
  const id = server.id;
  const enabled = server.spec?.console ?? false;
  const deleted = isDeleted(server);

  useEffect(() => {
    if (deleted || !enabled) return;
    const abort = new AbortController();
    const splitter = new LineSplitter();
    const show = (add: OutputLine[]) => {
      if (add.length === 0) return;
      shown.current = appendBounded(shown.current, add, MAX_LINES);
      setLines(shown.current);
    };
    shown.current = [];
    setLines([]);
    void (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        const reopened = attempt > 0;
        let gathering: OutputLine[] | undefined = reopened ? [] : undefined;
        const join = () => {
          if (!gathering) return;
          const { fresh, gap } = afterOverlap(shown.current, gathering);
          gathering = undefined;
          show(gap ? [splitter.marker("reconnected: some output may be missing here"), ...fresh] : fresh);
        };
        const timer = reopened ? setTimeout(join, BACKLOG_GATHER_MS) : undefined;
        try {
          setState((s) => (s.kind === "live" ? { kind: "reconnecting", message: "" } : s));
          for await (const m of api.servers.watchConsole({ id, backlogLines: BACKLOG_LINES }, { signal: abort.signal })) {
            setState({ kind: "live" });
            // "opened" says only that the console is open (the state above shows it).
            if (m.marker === "opened") continue;
            const add = m.marker ? [splitter.marker(markerText(m.marker, m.message))] : splitter.push(m.stream, m.data);
            if (gathering) gathering.push(...add);
            else show(add);
          }
        } catch (err) {
          if (abort.signal.aborted || isAbort(err)) return;
          setState({ kind: "reconnecting", message: errorText(err) });
        } finally {
          clearTimeout(timer);
          join();
        }
        await new Promise((r) => setTimeout(r, Math.min(8_000, 1_000 * 2 ** Math.min(attempt, 3))));
      }
    })();
    return () => abort.abort();
  }, [api, id, enabled, deleted]);

  useLayoutEffect(() => {
    const el = box.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [lines]);

  const send = async (e: FormEvent) => {
    e.preventDefault();
    const line = input;
    if (!line.trim()) return;
    setSending(true);
    setSendError(undefined);
    try {
      await api.servers.sendConsoleCommand({ id, line });
      history.current = [line, ...history.current.filter((h) => h !== line)].slice(0, HISTORY);
      cursor.current = -1;
      setInput("");
    } catch (err) {
      setSendError(errorText(err));
    } finally {
      setSending(false);
    }
  };

  const onKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key !== "ArrowUp" && e.key !== "ArrowDown") return;
    const h = history.current;
    if (h.length === 0) return;
    e.preventDefault();
    cursor.current = e.key === "ArrowUp" ? Math.min(h.length - 1, cursor.current + 1) : Math.max(-1, cursor.current - 1);
    setInput(cursor.current === -1 ? "" : h[cursor.current]!);
  };

  if (deleted) return <p className="muted">A deleted server has no console. Restore and start it first.</p>;
  if (!enabled) {
    return (
      <p className="muted">
        This server has no console. {can.operate ? "Turn on Console in Edit spec (its main process then keeps stdin open), and restart it." : "An operator can turn it on."}
      </p>
    );
  }
  return (
    <div className="logs console">
      <div className="logs-bar">
        <span className="muted small" data-testid="console-state">
          {stateText(state)}
        </span>
        <span className="grow" />
        <button type="button" className="button small" onClick={() => ((shown.current = []), setLines([]))}>
          Clear
        </button>
      </div>
      <div
        className="log-lines mono"
        ref={box}
        role="log"
        aria-label="Console output"
        tabIndex={0}
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {lines.length === 0 && state.kind === "live" && <div className="muted">No output yet: what the server writes appears here.</div>}
        {lines.map((l) => (
          <div key={l.n} className={l.stream === "stderr" ? "stderr" : l.stream === "marker" ? "marker" : undefined}>
            {l.text || "\u00a0"}
          </div>
        ))}
      </div>
      {can.operate ? (
        <form className="console-input" onSubmit={send}>
          <label className="sr-only" htmlFor="console-line">
            Console command
          </label>
          <input
            id="console-line"
            className="mono"
            value={input}
            placeholder="A command for the server's console (↑/↓: history)"
            autoComplete="off"
            spellCheck={false}
            maxLength={4096}
            onChange={(e) => setInput(e.target.value)}
            onKeyDown={onKey}
            aria-invalid={sendError ? true : undefined}
            aria-describedby={sendError ? "console-error" : undefined}
          />
          <button type="submit" className="button primary small" disabled={sending || !input.trim()}>
            Send
          </button>
        </form>
      ) : (
        <p className="muted small">Viewers watch the console; an operator may send commands.</p>
      )}
      {sendError && (
        <p className="error-box" role="alert" id="console-error">
          {sendError}
        </p>
      )}
    </div>
  );
}

function markerText(marker: string, message: string): string {
  switch (marker) {
    case "container_stopped":
      return `── ${message || "the container stopped"} ──`;
    case "container_started":
      return `── ${message || "the container started"}: container restarted ──`;
    case "dropped":
      return `── ${message || "output left out"} ──`;
    default:
      return `── ${message || marker} ──`;
  }
}

function stateText(s: State): string {
  if (s.kind === "reconnecting") return `reconnecting…${s.message ? ` (${s.message})` : ""}`;
  return s.kind === "live" ? "live" : "connecting…";
}
