/**
 * Saved queries end to end against real Docker (issue 22, docs/explore.md
 * "Saved queries"): a shared saved query over servers with an alert
 * (fire_after 2 s) for stopped servers; stopping a real server makes the
 * leader's saved-query runner see a row and the `saved_query` alert fire
 * (ListAlerts, subject query:<id>, in the query's project, naming the
 * server); RunSavedQuery returns the server; starting it again resolves the
 * alert; the query shows alert_firing and rows_since meanwhile.
 */
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlertService, AlertState, Severity, type Alert } from "@berth/proto/berth/v1/alert_pb.js";
import { Phase, ServerService, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { QuerySource, SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

describe("saved queries", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  const ids: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("saved-queries");
    // The runner and the rules every second; no not-converged alert in the way.
    manager = await startManager({ dir, args: ["--saved-query-interval", "1", "--alert-interval", "1", "--alert-not-converged", "3600"] });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  it("a saved query for stopped servers with an alert: stopping a server fires saved_query, RunSavedQuery returns it, starting it resolves the alert", async () => {
    const token = manager.adminToken;
    const queries = createClient(SavedQueryService, manager.transport(token));
    const alerts = createClient(AlertService, manager.transport(token));
    const servers = createClient(ServerService, manager.transport(token));
    const { server } = await servers.createServer({ spec: { name: "sq-web", image: TEST_IMAGE, command: ["sleep", "3600"] } as ServerSpec });
    ids.push(server!.id);
    await waitForPhase(manager, server!.id, Phase.RUNNING, 60_000);

    const { savedQuery } = await queries.createSavedQuery({
      spec: {
        name: "stopped-servers",
        shared: true,
        query: { source: QuerySource.SERVERS, filter: "server.status.phase == PHASE_STOPPED" },
        alert: { enabled: true, fireAfter: { seconds: 2n }, severity: Severity.CRITICAL },
      },
    });
    const subject = `query:${savedQuery!.id}`;
    const mine = async (includeResolved: boolean): Promise<Alert | undefined> => (await alerts.listAlerts({ includeResolved })).alerts.find((a) => a.rule === "saved_query" && a.subject === subject);

    // Running: the query returns nothing, no alert (the runner has run a few times meanwhile).
    expect((await queries.runSavedQuery({ id: "stopped-servers" })).result).toEqual({ case: "servers", value: expect.objectContaining({ servers: [] }) });
    await new Promise((r) => setTimeout(r, 3000));
    expect(await mine(true)).toBeUndefined();

    await servers.stopServer({ id: server!.id });
    await waitForPhase(manager, server!.id, Phase.STOPPED, 60_000);
    const run = await queries.runSavedQuery({ id: savedQuery!.id });
    expect(run.result.case === "servers" && run.result.value.servers.map((s) => s.id)).toEqual([server!.id]);

    const fired = await waitFor("the saved_query alert to fire", async () => {
      const a = await mine(false);
      return a?.state === AlertState.FIRING ? a : undefined;
    }, 30_000);
    expect(fired.project).toBe("default");
    expect(fired.message).toMatch(/^saved query "stopped-servers" returned 1 row for \d+(\.\d)? s \(first: server sq-web\)$/);
    const got = (await queries.getSavedQuery({ id: "stopped-servers" })).savedQuery!;
    expect(got.alertFiring).toBe(true);
    expect(got.rowsSince).toBeDefined();

    await servers.startServer({ id: server!.id });
    await waitForPhase(manager, server!.id, Phase.RUNNING, 60_000);
    await waitFor("the saved_query alert to resolve", async () => (await mine(true))?.state === AlertState.RESOLVED, 30_000);
    const after = (await queries.getSavedQuery({ id: "stopped-servers" })).savedQuery!;
    expect(after.alertFiring).toBe(false);
    expect(after.rowsSince).toBeUndefined();
  });
});
