/**
 * After the faults stop: wait for berth to quiesce, then check its
 * invariants against the truth — the Docker engines, the data roots on disk
 * and the database itself (store-probe.ts) — never against berth's own account
 * of it. berth's account is read from a live manager; with several, the
 * ledger is watched through each of them (each must deliver every event).
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { DesiredState, Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { firstLine, sleep, type Cluster, type ManagerApi } from "./cluster.js";
import { Rng } from "./rng.js";
import type { Tracker } from "./tracker.js";

/** Phases a server may rest in; every other one is on its way somewhere. */
export const SETTLED = new Set([Phase.RUNNING, Phase.STOPPED, Phase.PAUSED, Phase.MISSING, Phase.DATA_LOST, Phase.FAILED, Phase.DELETED]);

interface TruthContainer {
  id: string;
  state: string;
  serverId: string;
  managerId: string;
  hostIndex: number;
}

/** A live manager's admin API (checks read from whichever is up; with one manager, that one). */
const checkRng = new Rng("checks");
function clients(cluster: Cluster): ManagerApi {
  return cluster.pickApi(checkRng);
}

/** Every berth-labelled container on every host, straight from Docker. */
async function dockerTruth(cluster: Cluster): Promise<TruthContainer[]> {
  const out: TruthContainer[] = [];
  for (const node of cluster.hosts) {
    for (const c of await node.docker.listContainers({ all: true, filters: { label: ["berth.server"] } })) {
      out.push({ id: c.Id, state: c.State, serverId: c.Labels["berth.server"] ?? "", managerId: c.Labels["berth.manager"] ?? "", hostIndex: node.index });
    }
  }
  return out;
}

/** Each manager's answer to ListHosts: the hosts it shows ONLINE, and every host's state by id. */
async function hostViews(cluster: Cluster): Promise<{ api: ManagerApi; online: Set<string>; states: Map<string, HostState> }[]> {
  return Promise.all(
    cluster.managers.map(async (m) => {
      const api = cluster.api(m.index);
      const hosts = (await api.hosts.listHosts({})).hosts;
      return { api, online: new Set(hosts.filter((h) => h.state === HostState.ONLINE).map((h) => h.id)), states: new Map(hosts.map((h) => [h.id, h.state])) };
    }),
  );
}

/** With several managers: every one shows every host in the same state (any manager serves the API). */
async function checkHostViews(cluster: Cluster, v: (inv: string, detail: string) => void): Promise<void> {
  if (cluster.managers.length < 2) return;
  const views = await hostViews(cluster);
  for (const n of cluster.hosts) {
    const states = views.map((view) => HostState[view.states.get(n.hostId) ?? HostState.UNSPECIFIED]);
    if (new Set(states).size > 1) v("every manager shows the same host state", `host ${n.label} (${n.hostId}): ${states.map((st, i) => `${st} on manager ${i}`).join(", ")}`);
  }
}

/**
 * Brings every process back (managers, database, agents, links, engines), asks each host
 * for a full inventory, then waits until every server rests in a settled
 * phase with nothing in flight and neither berth nor Docker changed for 3 s.
 */
export async function quiesce(cluster: Cluster, tracker: Tracker, timeoutMs: number, log: (m: string) => void): Promise<{ ms: number; settled: boolean }> {
  const t0 = Date.now();
  if (cluster.databaseDown) await cluster.startDatabase();
  for (const m of cluster.managers) if (!m.proc) await cluster.startManagerProc(m.index);
  for (const node of cluster.hosts) {
    if (node.linkCut) cluster.healLink(node);
    if (!node.agent) cluster.startAgentProc(node);
  }
  if (cluster.store === "sqlite") await cluster.freeDbDisk();
  const deadline = t0 + timeoutMs;
  let stableSince = 0;
  let last = "";
  let resynced = false;
  let unsettled: string[] = [];
  let reportedAt = t0;
  while (Date.now() < deadline) {
    // What holds it up, now and then: a slow quiesce is a finding too.
    if (Date.now() - reportedAt >= 15_000 && unsettled.length) {
      reportedAt = Date.now();
      log(`quiescing for ${Math.round((reportedAt - t0) / 1000)}s: ${unsettled.slice(0, 6).join("; ")}`);
    }
    await sleep(1_000);
    try {
      const { servers } = clients(cluster);
      // Online on some manager: the one its agent is connected to (whether every manager
      // says so too is an invariant of its own, checkHostViews).
      const views = await hostViews(cluster);
      const ownerOf = (hostId: string) => views.find((v) => v.online.has(hostId))?.api;
      const offline = cluster.hosts.filter((n) => !ownerOf(n.hostId));
      if (offline.length) {
        unsettled = offline.map((n) => `host ${n.label} offline`);
        stableSince = 0;
        continue;
      }
      if (!resynced) {
        for (const n of cluster.hosts) await ownerOf(n.hostId)!.hosts.resyncHost({ id: n.hostId });
        resynced = true;
        continue;
      }
      const list = (await servers.listServers({ showDeleted: true, pageSize: 1000 })).servers;
      const open = await cluster.probe.openCommands();
      const truth = await dockerTruth(cluster);
      unsettled = [
        ...list.filter((s) => !SETTLED.has(s.status!.phase)).map((s) => `${s.id} ${Phase[s.status!.phase]}/${s.status!.reason}`),
        ...open.map((c) => `${c.serverId} command ${c.kind} in flight`),
      ];
      const fp = JSON.stringify([
        list.map((s) => [s.id, s.status!.phase, s.status!.reason, s.status!.containerId, s.status!.containerState, s.status!.dataExists]),
        truth.map((c) => [c.id, c.state]),
      ]);
      if (unsettled.length || fp !== last) {
        last = fp;
        stableSince = 0;
        continue;
      }
      stableSince ||= Date.now();
      if (Date.now() - stableSince >= 3_000) return { ms: Date.now() - t0, settled: true };
    } catch (err) {
      unsettled = [`manager or database not answering: ${firstLine(err)}`];
      stableSince = 0;
    }
  }
  log(`did not quiesce within ${timeoutMs / 1000}s: ${unsettled.slice(0, 10).join("; ")}`);
  tracker.violation("quiesces after the faults stop", `still moving after ${timeoutMs / 1000}s: ${unsettled.slice(0, 10).join("; ")}`);
  return { ms: Date.now() - t0, settled: false };
}

/**
 * Follows WatchEvents through every restart, checking ids strictly increase and
 * nothing is lost. With several managers there is one watcher per manager: it
 * watches through that one and, when its stream breaks, resumes from its last id
 * on any live manager (a resume point from one manager must hold on another).
 */
export class EventWatcher {
  readonly delivered = new Set<number>();
  first = 0;
  last = 0;
  private readonly abort = new AbortController();
  private done: Promise<void> | undefined;
  private readonly rng: Rng;

  constructor(
    private readonly cluster: Cluster,
    private readonly tracker: Tracker,
    /** The manager watched first (index in cluster.managers). */
    private readonly home = 0,
  ) {
    this.rng = new Rng(`watcher-${home}`);
  }

  /** "" with one manager, " (watcher of manager N)" with several: where a violation was seen. */
  get label(): string {
    return this.cluster.managers.length > 1 ? ` (watcher starting on manager ${this.home})` : "";
  }

  start(): void {
    this.done = (async () => {
      let api = this.cluster.api(this.home);
      while (!this.abort.signal.aborted) {
        try {
          for await (const res of api.events.watchEvents({ afterId: BigInt(this.last) }, { signal: this.abort.signal })) {
            const id = Number(res.event!.id);
            if (id <= this.last || this.delivered.has(id)) {
              this.tracker.violation("ledger ids strictly increase", `WatchEvents on manager ${api.index} delivered id ${id} after ${this.last}${this.label}`);
            }
            this.delivered.add(id);
            this.first ||= id;
            this.last = Math.max(this.last, id);
          }
        } catch {
          // Manager restarting or the database down: resume from the last id, on any live manager.
        }
        if (!this.abort.signal.aborted) {
          await sleep(500);
          api = this.cluster.pickApi(this.rng);
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}

/** Records every data directory that appears under a host's data root. */
export function sampleDataDirs(cluster: Cluster, tracker: Tracker): void {
  for (const node of cluster.hosts) {
    let names: string[] = [];
    try {
      names = readdirSync(node.dataRoot);
    } catch {
      continue;
    }
    for (const name of names) if (/^srv_/.test(name) && !tracker.seenData.has(name)) tracker.seenData.set(name, node.index);
  }
}

export interface EndState {
  phases: Record<string, number>;
  servers: number;
  containers: number;
  events: number;
}

/** How long berth must stay silent at rest (no command at all) before the checks. */
export const REST_CHECK_MS = 5_000;
/** Commands one accepted operation or one fault may explain for a server, plus a fixed allowance per server. */
const COMMANDS_PER_OPERATION = 6;
const COMMANDS_PER_FAULT = 3;
const COMMANDS_ALLOWANCE = 10;

/**
 * Commands are justified by changes: none while everything rests, and per
 * server no more than the operations accepted on it and the faults of the
 * campaign can explain (a storm of re-issued commands, 1,000–3,000 for one
 * soft delete, once hid behind a quiet end state).
 */
async function checkCommandBudget(cluster: Cluster, tracker: Tracker, v: (inv: string, detail: string) => void): Promise<void> {
  const before = await cluster.probe.commandsIssued();
  await sleep(REST_CHECK_MS);
  const after = await cluster.probe.commandsIssued();
  for (const [id, n] of after) {
    const extra = n - (before.get(id) ?? 0);
    if (extra > 0) v("no command at rest", `${id}: ${extra} command(s) issued in ${REST_CHECK_MS / 1000}s after berth quiesced`);
  }
  const ops = new Map<string, number>();
  for (const a of tracker.accepted) ops.set(a.serverId, (ops.get(a.serverId) ?? 0) + 1);
  const faults = [...tracker.faults.values()].reduce((a, b) => a + b, 0);
  for (const [id, n] of after) {
    const budget = COMMANDS_PER_OPERATION * (ops.get(id) ?? 0) + COMMANDS_PER_FAULT * faults + COMMANDS_ALLOWANCE;
    if (n > budget) {
      v("commands per server bounded by the operations and faults that explain them", `${id}: ${n} commands issued for ${ops.get(id) ?? 0} accepted operations and ${faults} faults (budget ${budget})`);
    }
  }
}

/** Checks every invariant; adds violations to the tracker and returns a summary of the end state. */
export async function checkInvariants(cluster: Cluster, tracker: Tracker, watchers: EventWatcher[]): Promise<EndState> {
  const v = (inv: string, detail: string) => tracker.violation(inv, detail);
  const { servers } = clients(cluster);
  await checkCommandBudget(cluster, tracker, v);
  await checkHostViews(cluster, v);
  // The truth, then berth's account, then the truth again: compare only a stable picture.
  let truth: TruthContainer[] = [];
  let list: Server[] = [];
  for (let i = 0; ; i++) {
    const before = await dockerTruth(cluster);
    list = (await servers.listServers({ showDeleted: true, pageSize: 1000 })).servers;
    truth = await dockerTruth(cluster);
    if (JSON.stringify(before) === JSON.stringify(truth) || i >= 5) break;
    await sleep(1_000);
  }
  const mine = truth.filter((c) => c.managerId === cluster.managerId);
  const byServer = new Map<string, TruthContainer[]>();
  for (const c of mine) byServer.set(c.serverId, [...(byServer.get(c.serverId) ?? []), c]);
  const records = new Map(list.map((s) => [s.id, s]));

  // 1. At most one container per server, on any host.
  for (const [id, cs] of byServer) {
    if (cs.length > 1) v("at most one container per server", `${id} has ${cs.length}: ${cs.map((c) => `${c.id.slice(0, 12)}@${cluster.hosts[c.hostIndex]!.label}/${c.state}`).join(", ")}`);
    if (!records.has(id)) v("no container outlives its server", `${id} has no record but its container ${cs[0]!.id.slice(0, 12)} (${cs[0]!.state}) is on host ${cluster.hosts[cs[0]!.hostIndex]!.label}`);
  }

  const now = Date.now();
  for (const s of list) {
    const st = s.status!;
    const hostIndex = cluster.hosts.findIndex((h) => h.hostId === s.spec!.hostId);
    const node = cluster.hosts[hostIndex];
    if (!node) {
      v("servers live on known hosts", `${s.id} is on unknown host ${s.spec!.hostId}`);
      continue;
    }
    const onHost = (byServer.get(s.id) ?? []).filter((c) => c.hostIndex === hostIndex);
    const elsewhere = (byServer.get(s.id) ?? []).filter((c) => c.hostIndex !== hostIndex);
    if (elsewhere.length) v("at most one container per server", `${s.id} (host ${node.label}) has a container on host ${cluster.hosts[elsewhere[0]!.hostIndex]!.label}`);
    const c = onHost[0];
    const phase = Phase[st.phase];
    const what = `${s.id} (${s.spec!.name} on ${node.label}, ${phase}/${st.reason}, desired ${DesiredState[s.spec!.desiredState]})`;
    const dataOnDisk = existsSync(join(node.dataRoot, s.id));

    if (!SETTLED.has(st.phase)) v("no server in a transitional phase past its deadline", `${what} at the end`);

    if (s.deleteTime) {
      if (st.phase !== Phase.DELETED) v("observed state equals the host", `${what}: deleted but not shown Deleted`);
      if (c) v("observed state equals the host", `${what}: deleted but its container ${c.id.slice(0, 12)} (${c.state}) is still there`);
      continue;
    }

    // 2. What berth shows is what the host has.
    if (st.containerId !== (c?.id ?? "")) v("observed state equals the host", `${what}: container ${st.containerId.slice(0, 12) || "none"} shown, ${c ? c.id.slice(0, 12) : "none"} on the host`);
    else if (st.containerState !== (c?.state ?? "")) v("observed state equals the host", `${what}: container state "${st.containerState}" shown, "${c?.state ?? ""}" on the host`);
    if (st.dataExists !== dataOnDisk) v("observed state equals the host", `${what}: data_exists=${st.dataExists} shown, ${dataOnDisk ? "present" : "absent"} on disk`);
    const consistent =
      st.phase === Phase.RUNNING ? c?.state === "running" :
      st.phase === Phase.PAUSED ? c?.state === "paused" :
      st.phase === Phase.STOPPED ? c !== undefined && c.state !== "running" && c.state !== "paused" :
      st.phase === Phase.MISSING ? c === undefined :
      st.phase === Phase.DATA_LOST ? !dataOnDisk :
      true;
    if (!consistent) v("observed state equals the host", `${what}: the host has ${c ? `container ${c.id.slice(0, 12)} ${c.state}` : "no container"}, data ${dataOnDisk ? "present" : "absent"}`);

    // 3. Desired state honoured, or Failed with a reason.
    const failed = st.phase === Phase.FAILED || st.phase === Phase.DATA_LOST;
    if (failed && !st.reason) v("desired state honoured or Failed with a reason", `${what}: no reason`);
    const want = s.spec!.desiredState;
    const honoured =
      want === DesiredState.RUNNING ? st.phase === Phase.RUNNING :
      want === DesiredState.PAUSED ? st.phase === Phase.PAUSED :
      st.phase === Phase.STOPPED || st.phase === Phase.MISSING;
    // Missing while it should run: only after a `docker rm` behind berth's back (berth keeps the data and waits for a start).
    const missingExplained = st.phase === Phase.MISSING && tracker.containerRemoved.has(s.id);
    if (!honoured && !failed && !missingExplained) v("desired state honoured or Failed with a reason", what);
  }

  // 4. No data directory removed except by a purge with remove_data (or the data-delete fault).
  // A purge whose answer was lost counts when the ledger holds its request.
  const purgeRequested = await cluster.probe.purgeRequested();
  for (const [id, hostIndex] of tracker.seenData) {
    const node = cluster.hosts[hostIndex]!;
    if (existsSync(join(node.dataRoot, id))) continue;
    if (tracker.purgedWithData.has(id) || tracker.faultDeletedData.has(id)) continue;
    if (tracker.maybePurgedWithData.has(id) && purgeRequested.has(id)) continue;
    const s = records.get(id);
    v("no data directory removed except by a purge with remove_data", `${join(node.dataRoot, id)} is gone (server ${s ? `${Phase[s.status!.phase]}` : "purged without remove_data"})`);
  }
  for (const [id, at] of tracker.faultDeletedData) {
    const s = records.get(id);
    if (!s || s.deleteTime || s.status!.phase === Phase.DATA_LOST) continue;
    if ((tracker.emptyDataStarts.get(id) ?? 0) > at) continue;
    const node = cluster.hosts.find((h) => h.hostId === s.spec!.hostId)!;
    if (existsSync(join(node.dataRoot, id))) continue;
    v("deleted data shows as DataLost", `${id} lost its data directory but is ${Phase[s.status!.phase]}/${s.status!.reason}: ${s.status!.message}`);
  }

  // 5. Nothing in flight past its deadline.
  for (const c of await cluster.probe.openCommands()) {
    if (c.deadlineAt < now) v("no server in a transitional phase past its deadline", `${c.serverId}: command ${c.id} (${c.kind}) still open ${Math.round((now - c.deadlineAt) / 1000)}s past its deadline`);
  }

  // 6-8. The database itself.
  const { probe } = cluster;
  const integrity = await probe.integrity();
  if (integrity !== undefined && integrity !== "ok") v("PRAGMA integrity_check ok", integrity);
  // The relations the schema does not declare (SQLite cannot add REFERENCES to existing
  // tables without rebuilding them), checked here row by row.
  for (const [what, broken] of await probe.brokenRelations()) {
    if (broken.length) v("every row refers to records that exist", `${what}: ${broken.slice(0, 5).join(", ")}`);
  }
  const ids = await probe.eventIds();
  const events = ids.length;
  for (let i = 1; i < ids.length; i++) if (ids[i]! <= ids[i - 1]!) v("ledger ids strictly increase", `id ${ids[i]} follows ${ids[i - 1]}`);
  // Lossless watch: every event from the first one a watcher saw was delivered to it.
  for (const watcher of watchers) {
    const missed = ids.filter((id) => id >= watcher.first && id <= watcher.last && !watcher.delivered.has(id));
    if (watcher.first && missed.length) v("WatchEvents loses nothing across restarts", `${missed.length} events never delivered${watcher.label}, e.g. ${missed.slice(0, 5).join(", ")}`);
  }
  const counts = await probe.serverEventCounts();
  const wanted = new Map<string, number>();
  for (const a of tracker.accepted) wanted.set(`${a.serverId} ${a.event}`, (wanted.get(`${a.serverId} ${a.event}`) ?? 0) + 1);
  for (const [key, n] of wanted) {
    const have = counts.get(key) ?? 0;
    if (have < n) v("every accepted operation has its events", `${key}: ${n} accepted, ${have} in the ledger`);
  }

  const phases: Record<string, number> = {};
  for (const s of list) phases[Phase[s.status!.phase]] = (phases[Phase[s.status!.phase]] ?? 0) + 1;
  return { phases, servers: list.length, containers: mine.length, events };
}
