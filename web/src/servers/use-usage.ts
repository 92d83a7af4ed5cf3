/** The page's one WatchUsage stream as a React hook (usage-watch.ts holds the logic). */
import { useEffect, useMemo, useSyncExternalStore } from "react";
import { useSession } from "../app-context.js";
import { UsageWatch, type UsageSnapshot } from "./usage-watch.js";

/** The page's one usage stream: opened while the page is shown (and `enabled`), closed when it goes. */
export function useUsageWatch(opts: { hosts: boolean; enabled?: boolean }): UsageSnapshot {
  const { api, signOut } = useSession();
  const watch = useMemo(
    () => new UsageWatch((req, signal) => api.usage.watchUsage(req, { signal }), { hosts: opts.hosts, onUnauthenticated: (m) => signOut(m) }),
    [api, signOut, opts.hosts],
  );
  const enabled = opts.enabled ?? true;
  useEffect(() => {
    if (!enabled) return;
    watch.start();
    return () => watch.stop();
  }, [watch, enabled]);
  return useSyncExternalStore(watch.subscribe, watch.getSnapshot);
}

