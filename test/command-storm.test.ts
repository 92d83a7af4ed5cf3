/**
 * Commands are justified by changes, on a real engine: soft deletes racing the
 * agent's inventories (an operator's ResyncHost loop keeps one being built at
 * all times) issue one ensure-removed each, and nothing is issued at rest.
 * Before observations were ordered, a stale inventory made the reconciler
 * re-issue ensure-removed every millisecond (1,000–3,000 per delete).
 */
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Phase } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SERVERS = 6;

describe("command storms", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  const created: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("storm");
    // The resync loop below is a change every few milliseconds from one token: lift the per-token
    // rate limit so the deletes under test are never refused by it (this test is not about limits).
    manager = await startManager({ dir, args: ["--delete-retention", "3600", "--rate-limit", "100000", "--rate-burst", "100000"] });
    agent = await startAgent({ manager, dir, extraArgs: ["--inventory-interval", "1"] });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: created });
    await removeTestDir(dir);
  });

  /** command.issued events per server and command name, read from the database. */
  function issued(): Map<string, number> {
    const db = new Database(manager.dbPath, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare("SELECT server_id AS s, message AS m, count(*) AS n FROM events WHERE type = 'command.issued' GROUP BY server_id, message").all() as { s: string; m: string; n: number }[];
      return new Map(rows.map((r) => [`${r.s} ${r.m}`, r.n]));
    } finally {
      db.close();
    }
  }

  it("soft deletes racing inventories issue one ensure-removed each; none at rest", async () => {
    const hostId = (await manager.hosts.listHosts({})).hosts[0]!.id;
    const ids: string[] = [];
    for (let i = 0; i < SERVERS; i++) {
      const { server } = await manager.servers.createServer({ spec: { name: `storm-${Date.now().toString(36)}-${i}`, image: TEST_IMAGE, command: ["sleep", "100000"] } });
      created.push(server!.id);
      ids.push(server!.id);
    }
    for (const id of ids) await waitForPhase(manager, id, Phase.RUNNING);

    // Keep an inventory in the making the whole time the deletes run.
    let resyncing = true;
    const resyncs = (async () => {
      while (resyncing) {
        await manager.hosts.resyncHost({ id: hostId }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    for (const id of ids) {
      await manager.servers.deleteServer({ id });
      await new Promise((r) => setTimeout(r, 150));
    }
    for (const id of ids) await waitForPhase(manager, id, Phase.DELETED);
    await new Promise((r) => setTimeout(r, 1_500));
    resyncing = false;
    await resyncs;

    const counts = issued();
    for (const id of ids) {
      expect(counts.get(`${id} ensure-removed`) ?? 0, `${id} ensure-removed`).toBe(1);
      expect(await docker.listContainers({ all: true, filters: { label: [`berth.server=${id}`] } })).toHaveLength(0);
    }

    // At rest (inventories every second keep arriving): no command at all.
    const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    const before = total(counts);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(total(issued())).toBe(before);
  });
});
