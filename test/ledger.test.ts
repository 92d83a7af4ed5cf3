/**
 * The event ledger, live watches and alerts against real processes and a real
 * Docker engine: what an operator sees when something changes on a host.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "@connectrpc/connect";
import { AlertService, AlertState, Severity, type Alert } from "@berth/proto/berth/v1/alert_pb.js";
import { EventService, type Event } from "@berth/proto/berth/v1/event_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { Phase, WatchChange, type Server, type WatchServersResponse } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, runAgent, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "exec sleep 100000"];
const WEBHOOK_SECRET = "ledger-test-secret";

interface Received {
  at: number;
  body: string;
  signature: string;
  event: string;
  status: number;
}

describe("event ledger, watches and alerts", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  let events: Client<typeof EventService>;
  let alerts: Client<typeof AlertService>;
  let hostId: string;
  let receiver: HttpServer;
  const received: Received[] = [];
  const created: string[] = [];
  let n = 0;

  beforeAll(async () => {
    // The webhook receiver refuses the very first delivery (HTTP 500) to exercise the retry.
    receiver = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const status = received.length === 0 ? 500 : 200;
        received.push({
          at: Date.now(),
          body: Buffer.concat(chunks).toString(),
          signature: String(req.headers["x-berth-signature"] ?? ""),
          event: String(req.headers["x-berth-event"] ?? ""),
          status,
        });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const port = (receiver.address() as AddressInfo).port;

    dir = await tempDir("ledger");
    manager = await startManager({
      dir,
      args: [
        // Well above a start's time with three test files at a time on two cores (4 s timed out starts there).
        "--start-timeout", "15",
        "--crash-backoff", "1",
        "--alert-host-offline", "2",
        "--alert-not-converged", "3",
        "--alert-interval", "1",
        "--orphan-grace", "1",
        "--webhook", `http://127.0.0.1:${port}/berth-hook?token=not-for-logs`,
        "--webhook-secret", WEBHOOK_SECRET,
      ],
    });
    const t = manager.transport(manager.adminToken);
    events = createClient(EventService, t);
    alerts = createClient(AlertService, t);
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: created });
    await new Promise((r) => receiver?.close(r));
    await removeTestDir(dir);
  });

  async function createServer(command = SLEEPER, phase: Phase | null = Phase.RUNNING): Promise<Server> {
    const { server } = await manager.servers.createServer({ spec: { name: `ldg-${Date.now().toString(36)}-${n++}`, image: TEST_IMAGE, command } });
    created.push(server!.id);
    return phase === null ? server! : waitForPhase(manager, server!.id, phase);
  }

  /** Waits for an alert of `rule` on `subject` in `state`, optionally one not in `except`. */
  async function waitAlert(rule: string, subject: string, state: AlertState, except: string[] = [], timeoutMs = 20_000): Promise<Alert> {
    return waitFor(
      `${rule} on ${subject} to be ${AlertState[state]}`,
      async () => (await alerts.listAlerts({ includeResolved: true })).alerts.find((a) => a.rule === rule && a.subject === subject && a.state === state && !except.includes(a.id)),
      timeoutMs,
      200,
    );
  }

  it("WatchServers: a snapshot, then a docker stop made outside berth arrives within a second", async () => {
    const s = await createServer();
    const ctl = new AbortController();
    const stream = manager.servers.watchServers({ hostId }, { signal: ctl.signal })[Symbol.asyncIterator]();
    const snapshot: WatchServersResponse[] = [];
    for (;;) {
      const m = (await stream.next()).value as WatchServersResponse;
      snapshot.push(m);
      if (m.change === WatchChange.SNAPSHOT_END) break;
    }
    expect(snapshot.filter((m) => m.change === WatchChange.SNAPSHOT).map((m) => m.server!.id)).toContain(s.id);
    expect(snapshot[snapshot.length - 1]!.resumeToken).not.toBe("");

    await docker.getContainer(s.status!.containerId).stop({ t: 1 });
    const stoppedAt = Date.now();
    let seen: WatchServersResponse | undefined;
    while (!seen) {
      const m = (await stream.next()).value as WatchServersResponse;
      if (m.change === WatchChange.UPSERT && m.server!.id === s.id && m.server!.status!.phase === Phase.STOPPED) seen = m;
    }
    const latency = Date.now() - stoppedAt;
    ctl.abort();
    expect(latency).toBeLessThan(1000);
    // From the container's exit as Docker recorded it, through agent and manager, to the watch.
    const finishedAt = Date.parse((await docker.getContainer(s.status!.containerId).inspect()).State.FinishedAt);
    expect(stoppedAt + latency - finishedAt).toBeLessThan(1000);
    expect(seen.resumeToken).not.toBe("");
  });

  it("WatchEvents: a client that reconnects with its last id misses nothing", async () => {
    const s = await createServer();
    const start = (await events.listEvents({ pageSize: 1 })).events[0]!.id;

    const got: Event[] = [];
    const ctl = new AbortController();
    const first = (async () => {
      for await (const m of events.watchEvents({ afterId: start }, { signal: ctl.signal })) {
        got.push(m.event!);
        if (got.some((e) => e.type === "phase.changed" && e.serverId === s.id)) break;
      }
    })();
    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await first;
    ctl.abort();

    // Disconnected: more happens meanwhile.
    await waitForPhase(manager, s.id, Phase.STOPPED);
    await manager.servers.startServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.RUNNING);
    const target = (await events.listEvents({ pageSize: 1 })).events[0]!.id;

    const last = got[got.length - 1]!.id;
    const ctl2 = new AbortController();
    for await (const m of events.watchEvents({ afterId: last }, { signal: ctl2.signal })) {
      got.push(m.event!);
      if (m.event!.id >= target) break;
    }
    ctl2.abort();

    const ledger: bigint[] = [];
    let pageToken = "";
    do {
      const page = await events.listEvents({ pageSize: 1000, pageToken });
      ledger.push(...page.events.map((e) => e.id).filter((id) => id > start && id <= target));
      pageToken = page.events.some((e) => e.id <= start) ? "" : page.nextPageToken;
    } while (pageToken);
    expect(got.map((e) => e.id).filter((id) => id <= target)).toEqual(ledger.reverse());
    expect(got.filter((e) => e.serverId === s.id).map((e) => e.type)).toEqual(
      expect.arrayContaining(["server.stop_requested", "server.start_requested", "command.issued", "command.succeeded", "phase.changed"]),
    );
  });

  it("crash loop: crash_loop warns from the second crash while berth restarts it, the same alert turns critical at CrashLoop, and resolves", async () => {
    const s = await createServer(["sh", "-c", "exit 1"], null);
    const subject = `server:${s.id}`;
    // Restarting with backoff (1, 2, 4, 8 s): the second crash comes within seconds, the fifth (CrashLoop) after about 15 s.
    const warning = await waitAlert("crash_loop", subject, AlertState.FIRING);
    expect(warning.severity).toBe(Severity.WARNING);
    expect(warning.project).toBe("default");
    const critical = await waitFor(
      "the same alert, critical",
      async () => (await alerts.listAlerts({})).alerts.find((a) => a.id === warning.id && a.severity === Severity.CRITICAL),
      // Three more crashes with backoffs of 2, 4 and 8 s, each restart a start on a loaded engine.
      90_000,
    ).catch(async (err: unknown) => {
      const st = (await manager.servers.getServer({ id: s.id })).server!.status!;
      console.log("[ledger test] the crash-loop alert did not turn critical; server:", Phase[st.phase], st.reason, st.message, "alerts:", JSON.stringify((await alerts.listAlerts({ includeResolved: true })).alerts.filter((a) => a.subject === subject).map((a) => [a.id, a.state, a.severity, a.message])));
      throw err;
    });
    expect(critical.message).toContain("crash-looping");
    expect((await manager.servers.getServer({ id: s.id })).server!.status!.reason).toBe("CrashLoop");

    await manager.servers.deleteServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.DELETED);
    await waitAlert("crash_loop", subject, AlertState.RESOLVED);
    // One alert through both stages (a not-converged alert may come and go before the second crash on a slow machine).
    const types = (await events.listEvents({ serverId: s.id, typePrefix: "alert." })).events.filter((e) => e.reason === "CrashLoop").map((e) => e.type).reverse();
    expect(types).toEqual(["alert.fired", "alert.severity_changed", "alert.resolved"]);
  }, 180_000);

  it("data lost: fires when the data directory is deleted, resolves when it is back", async () => {
    const s = await createServer();
    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await waitForPhase(manager, s.id, Phase.STOPPED);
    const dataDir = join(agent.dataRoot, s.id);
    rmSync(dataDir, { recursive: true, force: true });
    await manager.hosts.resyncHost({ id: hostId });
    await waitForPhase(manager, s.id, Phase.DATA_LOST, 10_000);
    const a = await waitAlert("data_lost", `server:${s.id}`, AlertState.FIRING);
    expect(a.message).toMatch(/allow_empty_data/);

    // The operator puts the data back (say, from a backup): the condition clears.
    mkdirSync(dataDir);
    await manager.hosts.resyncHost({ id: hostId });
    await waitForPhase(manager, s.id, Phase.STOPPED, 10_000);
    await waitAlert("data_lost", `server:${s.id}`, AlertState.RESOLVED);
  });

  it("host offline: fires after the threshold when the agent dies, can be acknowledged and muted, resolves on reconnect", async () => {
    const subject = `host:${hostId}`;
    const earlier = (await alerts.listAlerts({ includeResolved: true })).alerts.filter((a) => a.subject === subject).map((a) => a.id);
    const killedAt = Date.now();
    await agent.kill();
    const a = await waitAlert("host_offline", subject, AlertState.FIRING, earlier);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(2000);
    expect(a.firstSeen!.seconds).toBeGreaterThanOrEqual(BigInt(Math.floor(killedAt / 1000)));

    const { alert: acked } = await alerts.acknowledgeAlert({ id: a.id });
    expect(acked!.acknowledgedBy).toMatch(/^token:/);
    const { alert: muted } = await alerts.muteAlert({ id: a.id, durationSeconds: 60 });
    expect(Number(muted!.mutedUntil!.seconds) * 1000).toBeGreaterThan(Date.now() + 50_000);
    await manager.servers.listServers({}); // (the API stays usable meanwhile)
    // Unmute so the resolution is notified (checked below).
    await alerts.muteAlert({ id: a.id, durationSeconds: 0 });

    const next = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot });
    agent = Object.assign(next, { dataRoot: agent.dataRoot, stateDir: agent.stateDir });
    await waitFor("resolved", async () => (await alerts.listAlerts({ includeResolved: true })).alerts.find((x) => x.id === a.id && x.state === AlertState.RESOLVED));
    expect((await alerts.listAlerts({})).alerts.some((x) => x.id === a.id)).toBe(false);
    const types = (await events.listEvents({ typePrefix: "alert.", hostId })).events.filter((e) => e.correlationId === a.id).map((e) => e.type);
    expect(types.reverse()).toEqual(["alert.fired", "alert.acknowledged", "alert.muted", "alert.muted", "alert.resolved"]);
  });

  it("webhooks: signed JSON on fire and resolve; a refused delivery is retried; every attempt is an event", async () => {
    const valid = (r: Received) => {
      const want = Buffer.from(`sha256=${createHmac("sha256", WEBHOOK_SECRET).update(r.body).digest("hex")}`);
      const got = Buffer.from(r.signature);
      return want.length === got.length && timingSafeEqual(want, got);
    };
    const hostNotes = await waitFor("host_offline fired and resolved notifications", async () => {
      const mine = received.filter((r) => r.status === 200 && (JSON.parse(r.body) as { alert: { rule: string } }).alert.rule === "host_offline");
      return mine.some((r) => r.event === "alert.fired") && mine.some((r) => r.event === "alert.resolved") ? mine : undefined;
    });
    expect(received.every(valid)).toBe(true);
    const body = JSON.parse(hostNotes.find((r) => r.event === "alert.resolved")!.body) as { type: string; alert: { subject: string; state: string; resolvedAt: string } };
    expect(body).toMatchObject({ type: "alert.resolved", alert: { subject: `host:${hostId}`, state: "resolved" } });
    expect(body.alert.resolvedAt).toBeTruthy();

    // The first request got HTTP 500: a webhook.failed, then the same delivery succeeded.
    const first = JSON.parse(received[0]!.body) as { delivery: string };
    expect(received[0]!.status).toBe(500);
    expect(received.find((r, i) => i > 0 && (JSON.parse(r.body) as { delivery: string }).delivery === first.delivery)?.status).toBe(200);
    const hooks = (await events.listEvents({ typePrefix: "webhook.", pageSize: 1000 })).events.reverse();
    const forFirst = hooks.filter((e) => (JSON.parse(e.payloadJson) as { delivery: string }).delivery === first.delivery);
    expect(forFirst.map((e) => e.type)).toEqual(["webhook.failed", "webhook.delivered"]);
    expect(JSON.parse(forFirst[0]!.payloadJson)).toMatchObject({ attempt: 1, status: 500, willRetry: true, url: expect.stringMatching(/berth-hook$/) });
  });

  it("orphan_found fires for an untracked container and resolves when it is adopted", async () => {
    const { managerId } = manager;
    // A container with this manager's labels for a server it has no record of, made by hand.
    const sid = "srv_ledgerorphan" + Date.now().toString(36).replace(/[^a-z]/g, "a").slice(-6);
    const c = await docker.createContainer({ Image: TEST_IMAGE, Cmd: SLEEPER, Labels: { "berth.manager": managerId, "berth.server": sid }, HostConfig: { Init: true } });
    created.push(sid);
    await c.start();
    const fired = await waitAlert("orphan_found", `orphan:${hostId}/container`, AlertState.FIRING);
    expect(fired.message).toMatch(/untracked container/);
    const orphans = createClient(OrphanService, manager.transport(manager.adminToken));
    const o = (await orphans.listOrphans({})).orphans.find((x) => x.containerId === c.id)!;
    await orphans.adoptOrphan({ id: o.id, project: "default", name: `ldg-adopted-${n++}` });
    const resolved = await waitAlert("orphan_found", fired.subject, AlertState.RESOLVED);
    expect(resolved.id).toBe(fired.id);
  });
});
