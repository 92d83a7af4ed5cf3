/**
 * One shared clock for relative times ("12s ago"). Only the small <RelTime>
 * elements subscribe, so the passing of time re-renders a few text nodes,
 * never a table row.
 */
import { useSyncExternalStore } from "react";
import { formatAgo, formatTime } from "./format.js";

let now = Date.now();
const listeners = new Set<() => void>();
let timer: ReturnType<typeof setInterval> | undefined;

function subscribe(fn: () => void): () => void {
  listeners.add(fn);
  timer ??= setInterval(() => {
    now = Date.now();
    for (const l of listeners) l();
  }, 1000);
  return () => {
    listeners.delete(fn);
    if (listeners.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

export function useNow(): number {
  return useSyncExternalStore(subscribe, () => now);
}

export function RelTime({ ms, className }: { ms: number | undefined; className?: string }) {
  const t = useNow();
  if (ms === undefined || ms === 0) return <span className={className}>—</span>;
  return (
    <time className={className} dateTime={new Date(ms).toISOString()} title={formatTime(ms)}>
      {formatAgo(ms, Math.max(t, Date.now() - 1000))}
    </time>
  );
}
