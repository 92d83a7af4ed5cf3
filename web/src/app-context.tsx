/**
 * Everything the pages share for one signed-in session: the API clients, who
 * the token is and what it may do, the live server watch, pending actions,
 * and the host and alert lists (polled: the manager has no watch for them).
 */
import { createContext, useContext, useEffect, useMemo, useSyncExternalStore, type ReactNode } from "react";
import type { Token } from "@berth/proto/berth/v1/access_pb.js";
import type { Alert } from "@berth/proto/berth/v1/alert_pb.js";
import type { Host } from "@berth/proto/berth/v1/host_pb.js";
import { AlertState } from "@berth/proto/berth/v1/alert_pb.js";
import { abilitiesOf, type Abilities } from "./api/session.js";
import { createApi, type Api } from "./api/client.js";
import { ActionStore, type ActionState } from "./servers/action-store.js";
import { ServerWatch, type WatchSnapshot } from "./servers/server-watch.js";
import { Poll, usePoll } from "./ui/poll.js";

export interface Session {
  api: Api;
  me: Token;
  can: Abilities;
  watch: ServerWatch;
  actions: ActionStore;
  hosts: Poll<Host[]>;
  alerts: Poll<Alert[]>;
  signOut: (message?: string) => void;
}

const Ctx = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(Ctx);
  if (!s) throw new Error("useSession outside SessionProvider");
  return s;
}

export function SessionProvider(props: { token: string; me: Token; onSignOut: (message?: string) => void; children: ReactNode }) {
  const { token, me, onSignOut } = props;
  const session = useMemo<Session>(() => {
    const api = createApi(token, (message) => onSignOut(message));
    const watch = new ServerWatch((req, signal) => api.servers.watchServers(req, { signal }), { onUnauthenticated: (m) => onSignOut(m) });
    return {
      api,
      me,
      can: abilitiesOf(me),
      watch,
      actions: new ActionStore(api, watch),
      hosts: new Poll(async () => (await api.hosts.listHosts({})).hosts, 5000),
      alerts: new Poll(async () => (await api.alerts.listAlerts({ includeResolved: false })).alerts.filter((a) => a.state === AlertState.FIRING), 5000),
      signOut: onSignOut,
    };
  }, [token, me, onSignOut]);
  useEffect(() => {
    session.watch.start();
    session.actions.start();
    return () => {
      session.watch.stop();
      session.actions.stop();
    };
  }, [session]);
  return <Ctx.Provider value={session}>{props.children}</Ctx.Provider>;
}

export function useWatch(): WatchSnapshot {
  const { watch } = useSession();
  return useSyncExternalStore(watch.subscribe, watch.getSnapshot);
}

export function useActions(): ActionState {
  const { actions } = useSession();
  return useSyncExternalStore(actions.subscribe, actions.getSnapshot);
}

const NO_HOSTS: Host[] = [];

export function useHosts(): { hosts: Host[]; names: ReadonlyMap<string, string>; error: unknown } {
  const { hosts } = useSession();
  const st = usePoll(hosts);
  const list = st.data ?? NO_HOSTS;
  // The same names from the next poll keep the same Map: the servers table does not re-sort for nothing.
  const key = list.map((h) => `${h.id}\u0000${h.name}`).join("\n");
  const names = useMemo(() => new Map(key ? key.split("\n").map((l) => l.split("\u0000") as [string, string]).map(([id, n]) => [id, n || id]) : []), [key]);
  return { hosts: list, names, error: st.error };
}

/** Firing alerts, and the servers a `server_not_converged` alert calls stuck. */
export function useFiringAlerts(): { alerts: Alert[]; stuck: ReadonlySet<string> } {
  const { alerts } = useSession();
  const st = usePoll(alerts);
  const list = st.data;
  return useMemo(() => {
    const stuck = new Set<string>();
    for (const a of list ?? []) if (a.rule === "server_not_converged" && a.subject.startsWith("server:")) stuck.add(a.subject.slice("server:".length));
    return { alerts: list ?? [], stuck };
  }, [list]);
}
