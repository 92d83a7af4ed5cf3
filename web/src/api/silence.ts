/**
 * A watch stream's silence: the manager sends heartbeats when nothing changes,
 * so a stream that says nothing for long means a manager frozen or cut off
 * behind a connection that has not closed. After `staleAfterMs` without a
 * message `onStale` is told (the view marks its data stale); after
 * `reconnectAfterMs` the stream's own controller is aborted, so the caller
 * reopens it. Used by the servers' watch and the events timeline alike.
 */
export interface Silence {
  /** A message arrived. */
  heard(): void;
  /** The stream ended: stop checking. */
  stop(): void;
}

export function watchSilence(own: AbortController, o: { staleAfterMs: number; reconnectAfterMs: number; onStale: (silentMs: number) => void }): Silence {
  let last = Date.now();
  // Checked often enough to be on time for short test settings, at most once a second.
  const every = Math.min(1000, Math.max(10, Math.floor(o.staleAfterMs / 4)));
  const timer = setInterval(() => {
    const silent = Date.now() - last;
    if (silent >= o.reconnectAfterMs) own.abort();
    else if (silent >= o.staleAfterMs) o.onStale(silent);
  }, every);
  return {
    heard: () => void (last = Date.now()),
    stop: () => clearInterval(timer),
  };
}
