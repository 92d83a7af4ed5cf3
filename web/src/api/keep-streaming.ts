/**
 * Keeps a server-streaming watch open (the servers' and the usage watches):
 * `stream` is opened again whenever it ends or fails, after a jittered delay
 * that doubles up to a maximum and starts over once a stream is live again
 * (`stream` calls `live()`). A refused token ends it for good; so does `signal`.
 */
import { Code, ConnectError } from "@connectrpc/connect";

export interface KeepStreaming {
  /** Reconnect backoff, ms: first and maximum delay. */
  backoffMs: readonly [number, number];
  /** Runs one stream until the manager ends it; calls `live()` once it delivers. */
  stream: (live: () => void) => Promise<void>;
  /** The stream is down, with why (shown beside the "reconnecting" badge); `ended`: the manager ended it, rather than an error. */
  onDown: (message: string, ended: boolean) => void;
  /** The token was refused: the session is over (after onDown). */
  onUnauthenticated?: (message: string) => void;
  /** An error retrying cannot mend (a refused filter): the watch ends for good, after onDown. */
  fatal?: (err: ConnectError) => boolean;
}

export async function keepStreaming(signal: AbortSignal, k: KeepStreaming): Promise<void> {
  const [first, max] = k.backoffMs;
  let delay = first;
  while (!signal.aborted) {
    try {
      await k.stream(() => (delay = first));
      // The manager ended the stream (shutting down): reconnect.
      k.onDown("the manager closed the stream", true);
    } catch (err) {
      if (signal.aborted) return;
      const e = ConnectError.from(err);
      if (e.code === Code.Unauthenticated) {
        k.onDown(e.rawMessage, false);
        k.onUnauthenticated?.(e.rawMessage);
        return;
      }
      k.onDown(`${Code[e.code]}: ${e.rawMessage}`, false);
      if (k.fatal?.(e)) return;
    }
    await sleep(delay * (0.75 + Math.random() * 0.5), signal);
    delay = Math.min(max, delay * 2);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
