/**
 * The fault injector: at random intervals, one of the failures real fleets
 * see. Every kind is injected once early (in a seeded order) so that even a
 * short campaign covers them all; after that kinds are drawn at random. A
 * fault with a duration (a cut link, a full disk, a process down) runs in the
 * background, at most one per target at a time, so faults overlap.
 *
 * With several managers, manager-kill takes one at random (the others carry
 * on) and a cut link is now and then the link to one manager only (the agent
 * must fail over). On PostgreSQL, database-restart restarts the server
 * (`pg_ctl restart -m fast`) or holds it down for a while; the SQLite-only
 * db-disk-full is not injected there.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { firstLine, sleep, type Cluster, type HostNode } from "./cluster.js";
import type { Rng } from "./rng.js";
import { faultKindsFor, type FaultKind, type Tracker } from "./tracker.js";

export interface FaultOptions {
  cluster: Cluster;
  tracker: Tracker;
  rng: Rng;
  stopAt: number;
  /** Pause between two faults. */
  gapMs: [number, number];
  /** How long a cut link stays cut. */
  linkCutMs: [number, number];
  /** How long the database disk stays full. */
  diskFullMs: [number, number];
  /** How long a killed process stays down before it is started again. */
  downMs: [number, number];
  /** How long the database-restart fault's stop variant holds PostgreSQL down. */
  databaseDownMs: [number, number];
  log: (msg: string) => void;
}

const WEIGHTS: Record<FaultKind, number> = {
  "manager-kill": 3,
  "agent-kill": 3,
  "link-cut": 3,
  "dockerd-restart": 2,
  "container-stop": 2,
  "container-kill": 2,
  "container-rm": 2,
  "data-delete": 1,
  "db-disk-full": 2,
  "database-restart": 2,
};

export async function runFaults(o: FaultOptions): Promise<void> {
  const { cluster, tracker, rng, log } = o;
  const busy = new Set<string>();
  const running = new Set<Promise<void>>();
  const kinds = faultKindsFor(cluster.store);
  const weights = Object.fromEntries(kinds.map((k) => [k, WEIGHTS[k]])) as Record<FaultKind, number>;
  // Each kind its own stream: which manager dies does not shift the other decisions.
  const managerRng = rng.fork("managers");
  const firstRound = rng.shuffle(kinds);

  while (Date.now() < o.stopAt) {
    await sleep(rng.int(o.gapMs[0], o.gapMs[1]));
    if (Date.now() >= o.stopAt) break;
    const fromFirstRound = firstRound.length > 0;
    const kind = firstRound.shift() ?? rng.weighted(weights);
    const node = rng.pick(cluster.hosts);
    const target = targetOf(kind, node);
    if (target && busy.has(target)) {
      if (fromFirstRound) firstRound.push(kind);
      continue;
    }
    const before = tracker.faults.get(kind) ?? 0;
    const p = inject(kind, node)
      .catch((err: unknown) => log(`fault ${kind} on ${node.label} failed to inject: ${firstLine(err)}`))
      // Nothing to hit yet (no container, no data): a first-round kind is tried again later.
      .then(() => {
        if (fromFirstRound && (tracker.faults.get(kind) ?? 0) === before) firstRound.push(kind);
      })
      .finally(() => {
        if (target) busy.delete(target);
        running.delete(p);
      });
    if (target) busy.add(target);
    running.add(p);
  }
  await Promise.all(running);

  function targetOf(kind: FaultKind, node: HostNode): string | undefined {
    switch (kind) {
      case "manager-kill":
        return "manager";
      case "db-disk-full":
        return "disk";
      case "database-restart":
        return "database";
      case "agent-kill":
        return `agent-${node.label}`;
      case "link-cut":
        return `link-${node.label}`;
      case "dockerd-restart":
        return `dockerd-${node.label}`;
      default:
        return undefined;
    }
  }

  async function inject(kind: FaultKind, node: HostNode): Promise<void> {
    switch (kind) {
      case "manager-kill": {
        // One of several at random: the "manager" target keeps to one kill at a time, so one manager always runs.
        const live = cluster.liveManagers();
        if (live.length === 0) return;
        const slot = cluster.managers.length === 1 ? live[0]! : managerRng.pick(live);
        tracker.fault(kind);
        const close = tracker.openWindow("manager-down", slot.index);
        log(`fault: kill -9 the ${slot.label}`);
        await cluster.killManager(slot.index);
        // Several managers: "a few seconds" each time, so the agents' failover is what is tested.
        await sleep(cluster.managers.length === 1 ? rng.int(o.downMs[0], o.downMs[1]) : managerRng.int(2_000, 8_000));
        try {
          await cluster.startManagerProc(slot.index);
        } finally {
          close();
        }
        log(`${slot.label} restarted`);
        return;
      }
      case "agent-kill": {
        if (!node.agent) return;
        tracker.fault(kind);
        log(`fault: kill -9 agent ${node.label}`);
        await cluster.killAgent(node);
        await sleep(rng.int(o.downMs[0], o.downMs[1]));
        cluster.startAgentProc(node);
        return;
      }
      case "link-cut": {
        const mode = rng.chance(0.5) ? "blackhole" : "reset";
        const ms = rng.int(o.linkCutMs[0], o.linkCutMs[1]);
        // Several managers: a third of the cuts part the agent from one manager only.
        const only = cluster.managers.length > 1 && managerRng.chance(1 / 3) ? managerRng.int(0, cluster.managers.length - 1) : undefined;
        tracker.fault(kind);
        log(`fault: cut agent ${node.label}'s link${only === undefined ? "" : ` to manager ${only}`} (${mode}) for ${Math.round(ms / 1000)}s`);
        cluster.cutLink(node, mode, only);
        await sleep(ms);
        cluster.healLink(node);
        return;
      }
      case "dockerd-restart": {
        tracker.fault(kind);
        log(`fault: restart dockerd ${node.engineName}`);
        await cluster.restartDockerd(node);
        return;
      }
      case "container-stop":
      case "container-kill":
      case "container-rm": {
        const mine = await node.docker.listContainers({ all: true, filters: { label: [`berth.manager=${cluster.managerId}`] } });
        const live = kind === "container-rm" ? mine : mine.filter((c) => c.State === "running");
        if (live.length === 0) return;
        const c = rng.pick(live);
        const serverId = c.Labels["berth.server"] ?? "";
        tracker.fault(kind);
        log(`fault: ${kind.replace("container-", "docker ")} ${c.Id.slice(0, 12)} (${serverId}) on ${node.label}`);
        const handle = node.docker.getContainer(c.Id);
        if (kind === "container-stop") await handle.stop({ t: 1 }).catch(() => {});
        else if (kind === "container-kill") await handle.kill().catch(() => {});
        else {
          tracker.containerRemoved.set(serverId, Date.now());
          await handle.remove({ force: true }).catch(() => {});
        }
        return;
      }
      case "data-delete": {
        // Only data berth has seen (DataPresent): its loss must show as DataLost.
        let list;
        try {
          list = (await cluster.pickApi(managerRng).servers.listServers({ hostId: node.hostId, pageSize: 1000 }, { timeoutMs: 5_000 })).servers;
        } catch {
          return;
        }
        const candidates = list.filter((s) => s.status?.dataExists && !tracker.servers.get(s.id)?.purged);
        if (candidates.length === 0) return;
        const s = rng.pick(candidates);
        tracker.fault(kind);
        tracker.faultDeletedData.set(s.id, Date.now());
        log(`fault: rm -rf the data directory of ${s.id} on ${node.label}`);
        await rm(join(node.dataRoot, s.id), { recursive: true, force: true });
        return;
      }
      case "db-disk-full": {
        const ms = rng.int(o.diskFullMs[0], o.diskFullMs[1]);
        tracker.fault(kind);
        const close = tracker.openWindow("disk-full");
        const bytes = await cluster.fillDbDisk();
        log(`fault: the database disk is full (${Math.round(bytes / 1024)} KiB written) for ${Math.round(ms / 1000)}s`);
        await sleep(ms);
        await cluster.freeDbDisk();
        close();
        return;
      }
      case "database-restart": {
        tracker.fault(kind);
        const close = tracker.openWindow("database-down");
        try {
          if (rng.chance(0.5)) {
            log("fault: restart PostgreSQL (pg_ctl restart -m fast)");
            await cluster.restartDatabase();
          } else {
            const ms = rng.int(o.databaseDownMs[0], o.databaseDownMs[1]);
            log(`fault: stop PostgreSQL for ${Math.round(ms / 1000)}s`);
            await cluster.stopDatabase();
            await sleep(ms);
            await cluster.startDatabase();
            log("PostgreSQL started again");
          }
        } finally {
          close();
        }
        return;
      }
    }
  }
}
