/** The page's one WatchUsage stream as React hooks (usage-watch.ts holds the logic). */
import { useEffect, useMemo, useSyncExternalStore } from "react";
import type { UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { useSession } from "../app-context.js";
import { UsageWatch, type UsageSnapshot } from "./usage-watch.js";

/** The page's one usage stream: opened while the page is shown (and `enabled`), closed when it goes. */
export function useUsageStore(opts: { hosts: boolean; enabled?: boolean }): UsageWatch {
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
  return watch;
}

/** Everything the stream holds; the caller re-renders on every report. */
export function useUsageWatch(opts: { hosts: boolean; enabled?: boolean }): UsageSnapshot {
  const watch = useUsageStore(opts);
  return useSyncExternalStore(watch.subscribe, watch.getSnapshot);
}

/**
 * One server's latest sample: only the caller re-renders, and only when that
 * server's sample changes (the servers table's Usage cell, not its row).
 */
export function useServerUsage(watch: UsageWatch, serverId: string): UsageSample | undefined {
  return useSyncExternalStore(watch.subscribe, () => watch.getSnapshot().servers.get(serverId));
}
