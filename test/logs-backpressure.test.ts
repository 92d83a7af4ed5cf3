/**
 * TailLogs against a chatty container with callers that never read: the
 * manager and the agent (real processes, real Docker) must hold a bounded
 * amount per stream, whatever the container writes and however slowly the
 * callers read, and the shared agent link must stay usable for everything
 * else. Memory is each process's VmRSS from /proc.
 */
import { readFileSync, statSync } from "node:fs";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { Phase, TailLogsRequestSchema, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;

/** Resident memory of a process, in MB. */
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/**
 * A TailLogs call over raw HTTP/2 whose reader never reads: the connection
 * advertises a stream window of 0 bytes, so the manager cannot send it a
 * single byte of data (a stalled viewer, e.g. a suspended terminal).
 */
function stalledTail(m: ManagerProc, id: string, follow: boolean): { session: http2.ClientHttp2Session; status: Promise<string> } {
  const session = http2.connect(m.url, { settings: { initialWindowSize: 0 } });
  session.on("error", () => {});
  const msg = toBinary(TailLogsRequestSchema, create(TailLogsRequestSchema, { id, follow }));
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(frame, 5);
  const req = session.request({
    ":method": "POST",
    ":path": "/berth.v1.ServerService/TailLogs",
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${m.adminToken}`,
  });
  req.on("error", () => {});
  const status = new Promise<string>((resolve) => {
    req.on("response", (h) => resolve(String(h[":status"])));
    req.on("close", () => resolve("closed"));
  });
  req.end(frame);
  return { session, status };
}

describe("TailLogs backpressure", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let serverId = "";

  beforeAll(async () => {
    dir = await tempDir("logs-bp");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    if (serverId) await removeBerthContainers(docker, { serverIds: [serverId] });
    await removeTestDir(dir);
  });

  it("callers that never read cost the manager and the agent a bounded amount; readers, other calls and commands are not held up", async () => {
    const { hosts } = await manager.hosts.listHosts({});
    // 50 lines of 1 KB every ~10 ms: a few MB/s, more than the agent link relays for four streams.
    const script = 'L=$(printf "%01000d" 0); B=$(for i in $(seq 50); do echo "$L"; done); while :; do echo "$B"; usleep 10000; done';
    const { server } = await manager.servers.createServer({
      spec: { name: `chatty-${uid()}`, hostId: hosts[0]!.id, image: TEST_IMAGE, command: ["sh", "-c", script] } as ServerSpec,
    });
    serverId = server!.id;
    await waitForPhase(manager, serverId, Phase.RUNNING, 60_000);
    const [container] = await docker.listContainers({ filters: { label: [`berth.server=${serverId}`] } });
    const logPath = (await docker.getContainer(container!.Id).inspect()).LogPath;

    await sleep(1_000);
    const base = { manager: rssMb(manager.pid), agent: rssMb(agent.pid) };
    // Four stalled viewers following the log from its start.
    const stalled = [0, 1, 2, 3].map(() => stalledTail(manager, serverId, true));
    expect(await Promise.all(stalled.map((s) => s.status))).toEqual(["200", "200", "200", "200"]);

    const peak = { ...base };
    let slowestGetMs = 0;
    let slowestLinkMs = 0;
    let logMbAtWholeRead = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(1_000);
      if (i === 10) {
        // And one asking for the whole log (tens of MB by now) without follow.
        logMbAtWholeRead = statSync(logPath).size / 1e6;
        const whole = stalledTail(manager, serverId, false);
        stalled.push(whole);
        expect(await whole.status).toBe("200");
      }
      peak.manager = Math.max(peak.manager, rssMb(manager.pid));
      peak.agent = Math.max(peak.agent, rssMb(agent.pid));
      // The API keeps answering meanwhile...
      const c0 = Date.now();
      await manager.servers.getServer({ id: serverId });
      slowestGetMs = Math.max(slowestGetMs, Date.now() - c0);
      // ... and so does the agent link: a short log read is a round trip through it.
      if (i % 5 === 4) {
        const l0 = Date.now();
        let lines = "";
        for await (const r of manager.servers.tailLogs({ id: serverId, tailLines: 2 })) lines += Buffer.from(r.data).toString();
        expect(lines.split("\n").filter(Boolean)).toHaveLength(2);
        slowestLinkMs = Math.max(slowestLinkMs, Date.now() - l0);
      }
    }
    const growth = { manager: Math.round(peak.manager - base.manager), agent: Math.round(peak.agent - base.agent) };
    console.log(
      `[logs-backpressure] RSS before ${JSON.stringify(base)} MB; peak growth over 20 s with 4 stalled followers and a stalled whole-log read (${logMbAtWholeRead.toFixed(0)} MB log) ${JSON.stringify(growth)} MB; slowest GetServer ${slowestGetMs} ms, slowest short TailLogs ${slowestLinkMs} ms`,
    );
    expect(growth.manager).toBeLessThan(100);
    expect(growth.agent).toBeLessThan(100);
    expect(slowestGetMs).toBeLessThan(2_000);
    expect(slowestLinkMs).toBeLessThan(5_000);

    // A caller that reads gets the live output promptly, complete (nothing dropped).
    let got = 0;
    let dropped = 0n;
    const r0 = Date.now();
    for await (const r of manager.servers.tailLogs({ id: serverId, follow: true, tailLines: 10 })) {
      got += r.data.length;
      dropped += r.droppedBytes;
      if (got > 1_000_000) break;
    }
    const readMs = Date.now() - r0;
    console.log(`[logs-backpressure] a reading caller got ${got} bytes in ${readMs} ms`);
    expect(readMs).toBeLessThan(10_000);
    expect(dropped).toBe(0n);

    // A whole-log read (flow-controlled, never one buffer) comes through complete and at a useful pace.
    const logBytes = statSync(logPath).size;
    let whole = 0;
    const w0 = Date.now();
    for await (const r of manager.servers.tailLogs({ id: serverId })) whole += r.data.length;
    const wholeMs = Date.now() - w0;
    console.log(`[logs-backpressure] whole log: ${(whole / 1e6).toFixed(1)} MB of output (json-file ${(logBytes / 1e6).toFixed(1)} MB) in ${wholeMs} ms, ${(whole / 1e3 / wholeMs).toFixed(1)} MB/s`);
    // The json-file holds each 1 KB line with ~40 bytes of JSON around it.
    expect(whole).toBeGreaterThan(0.9 * logBytes);

    // Commands still travel the link: the server stops promptly.
    const s0 = Date.now();
    await manager.servers.stopServer({ id: serverId, timeoutSeconds: 2 });
    await waitForPhase(manager, serverId, Phase.STOPPED, 20_000);
    console.log(`[logs-backpressure] StopServer to STOPPED in ${Date.now() - s0} ms`);

    // The stalled callers go away: the agent stops every stream it was holding for them.
    for (const s of stalled) s.session.destroy();
    await waitFor("the agent to end the 5 stalled streams", async () => (agent.log().match(/"cancelled":true[^\n]*"log stream ended"|log stream ended[^\n]*"cancelled":true/g) ?? []).length >= 5, 15_000);
  }, 120_000);
});
