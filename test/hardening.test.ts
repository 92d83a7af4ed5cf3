/**
 * A container must not be a way to the host (issue 15), on real Docker:
 * - capabilities: Docker's defaults minus the dropped ones; cap_add gives back
 *   an allowed one; a device node cannot be made in the data directory;
 * - the setuid attack: a container plants a setuid-root binary in its data
 *   directory; `nobody` on the host cannot run it (the data root is 0700),
 *   and could when the root was 0755 (the attack is real);
 * - logs rotate: the files on the host stay under max-size x max-file while a
 *   container writes many times that, and a following TailLogs keeps going;
 * - userns-remap: a server runs and writes its data under a remapping engine,
 *   and a setuid binary it plants belongs to an unprivileged host uid.
 */
import { execFile } from "node:child_process";
import { chmod, copyFile, readdir, rename, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, ensureTestImage, removeBerthContainers, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const run = promisify(execFile);

/** Linux capability numbers (linux/capability.h) of those in Docker's default set. */
const CAP_BITS: Record<string, number> = {
  CHOWN: 0, DAC_OVERRIDE: 1, FOWNER: 3, FSETID: 4, KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8, NET_BIND_SERVICE: 10,
  NET_RAW: 13, SYS_CHROOT: 18, MKNOD: 27, AUDIT_WRITE: 29, SETFCAP: 31,
};

/** Names of the capabilities set in a /proc/<pid>/status hex mask. */
function capNames(hex: string): string[] {
  const mask = BigInt(`0x${hex}`);
  const names = Object.entries(CAP_BITS).filter(([, bit]) => (mask >> BigInt(bit)) & 1n).map(([n]) => n);
  const known = Object.values(CAP_BITS).reduce((m, bit) => m | (1n << BigInt(bit)), 0n);
  if (mask & ~known) names.push(`other:${(mask & ~known).toString(16)}`);
  return names.sort();
}

/**
 * A payload that keeps the identity a setuid bit gives it. Debian's busybox
 * drops setuid privileges in its shell applets (`sh -c id` run setuid stays
 * uid 65534), so the attacker's binary is perl here: setuid, it runs as its
 * file's owner and can take that uid for real (`$< = $>`).
 */
const PAYLOAD = "/usr/bin/perl";

/**
 * Puts the attacker's binary at `dir`/payload in one step: the container copies it as soon
 * as the name exists, so a copy still being written would plant a truncated binary.
 */
async function dropPayload(dir: string): Promise<void> {
  await copyFile(PAYLOAD, join(dir, ".payload.part"));
  await rename(join(dir, ".payload.part"), join(dir, "payload"));
}

/** Runs the planted binary as `nobody`; answers the effective uid it got, or the error. */
async function runAsNobody(binary: string): Promise<{ euid?: string; error?: string }> {
  try {
    const { stdout } = await run("runuser", ["-u", "nobody", "--", binary, "-e", "print $>"]);
    return { euid: stdout.trim() };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { error: (e.stderr || e.message).trim() };
  }
}

/** The whole (non-follow) log of a server, as text. */
async function logText(m: ManagerProc, id: string): Promise<string> {
  let out = "";
  for await (const r of m.servers.tailLogs({ id })) out += Buffer.from(r.data).toString();
  return out;
}

describe("hardening on the default engine", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let hostId = "";
  const created: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("hardening");
    // Only the data root stands between a local user and the data: every
    // directory above it is open, as /var/lib is on a real host.
    await chmod(dir, 0o755);
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: created });
    await removeTestDir(dir);
  });

  async function createServer(spec: Partial<ServerSpec>): Promise<string> {
    const { server } = await manager.servers.createServer({ spec: { name: `hard-${uid()}`, hostId, image: TEST_IMAGE, ...spec } as ServerSpec });
    created.push(server!.id);
    return server!.id;
  }

  it("a server has Docker's default capabilities minus the dropped ones, cap_add gives one back, and no device node can be made", async () => {
    const script = "grep CapEff /proc/self/status; mknod /data/disk b 8 0 && echo MKNOD-ALLOWED || echo MKNOD-REFUSED; exec sleep 3600";
    const plain = await createServer({ command: ["sh", "-c", script] });
    const raw = await createServer({ command: ["sh", "-c", script], capAdd: ["NET_RAW"] });
    const caps = async (id: string) => {
      await waitForPhase(manager, id, Phase.RUNNING, 60_000);
      const text = await waitFor(`log of ${id}`, async () => {
        const t = await logText(manager, id);
        return /MKNOD-/.test(t) && t;
      });
      return { caps: capNames(/CapEff:\s+([0-9a-f]+)/.exec(text)![1]!), mknod: /MKNOD-\w+/.exec(text)![0] };
    };
    const kept = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"];
    expect(await caps(plain)).toEqual({ caps: kept, mknod: "MKNOD-REFUSED" });
    expect(await caps(raw)).toEqual({ caps: [...kept, "NET_RAW"].sort(), mknod: "MKNOD-REFUSED" });
    const server = (await manager.servers.getServer({ id: plain })).server!;
    await expect(stat(join(agent.dataRoot, plain, "disk"))).rejects.toThrow(/ENOENT/);
    expect(server.spec?.capAdd).toEqual([]);

    // The manager refuses what the agent would refuse anyway.
    await expect(createServer({ command: ["true"], capAdd: ["MKNOD"] })).rejects.toThrow(/cap_add\[0\]: must be in list \[AUDIT_WRITE, FSETID, NET_RAW, SETPCAP, SYS_CHROOT\]/);
    await expect(createServer({ command: ["true"], capAdd: ["SYS_ADMIN"] })).rejects.toThrow(/cap_add\[0\]/);
  });

  it("a setuid-root binary a container plants in its data directory cannot be run by a local user (data root 0700)", async () => {
    // The container waits for the attacker's binary, copies it and sets the bit: what any image can do.
    const id = await createServer({
      command: ["sh", "-c", "while [ ! -f /data/payload ]; do sleep 0.1; done; cp /data/payload /data/sh && chmod u+s /data/sh && echo PLANTED; exec sleep 3600"],
    });
    await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    const dataDir = join(agent.dataRoot, id);
    await dropPayload(dataDir);
    await waitFor("the setuid binary", async () => /PLANTED/.test(await logText(manager, id)));
    const planted = await stat(join(dataDir, "sh"));
    // Dropping FSETID does not stop this: an owner may always set the setuid bit of its own file.
    expect({ uid: planted.uid, setuid: (planted.mode & 0o4000) !== 0 }).toEqual({ uid: 0, setuid: true });

    expect((await stat(agent.dataRoot)).mode & 0o777).toBe(0o700);
    const blocked = await runAsNobody(join(dataDir, "sh"));
    expect(blocked.error).toMatch(/Permission denied/);

    // The attack is real: with the data root 0755 (as before issue 15), nobody gets euid 0.
    await chmod(agent.dataRoot, 0o755);
    try {
      expect(await runAsNobody(join(dataDir, "sh"))).toEqual({ euid: "0" });
    } finally {
      await chmod(agent.dataRoot, 0o700);
    }
    console.log(`[hardening] setuid-root binary planted by a container: nobody got "${blocked.error}" through the 0700 data root, euid 0 through a 0755 one`);
  });

  it("logs rotate: files stay under max-size x max-file, and a following TailLogs keeps delivering across rotations", async () => {
    const maxSize = 65_536;
    const maxFiles = 3;
    const lines = 4_000;
    // ~160-byte lines (about 230 bytes in json-file), 100 per batch every 20 ms: ~14 rotations in about a second.
    const script =
      `echo READY; while [ ! -f /data/go ]; do sleep 0.1; done; i=0; P=$(printf "%0140d" 0); ` +
      `while [ $i -lt ${lines} ]; do j=0; while [ $j -lt 100 ]; do i=$((i+1)); j=$((j+1)); echo "line $i $P"; done; usleep 20000; done; ` +
      `echo LAST-LINE; exec sleep 3600`;
    const id = await createServer({ command: ["sh", "-c", script], logMaxSizeBytes: maxSize, logMaxFiles: maxFiles });
    await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    const [container] = await docker.listContainers({ filters: { label: [`berth.server=${id}`] } });
    const info = await docker.getContainer(container!.Id).inspect();
    expect(info.HostConfig.LogConfig).toEqual({ Type: "json-file", Config: { "max-size": String(maxSize), "max-file": String(maxFiles) } });

    const ac = new AbortController();
    let text = "";
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const tail = (async () => {
      try {
        for await (const r of manager.servers.tailLogs({ id, follow: true }, { signal: ac.signal })) {
          text += Buffer.from(r.data).toString();
          if (text.includes("READY")) ready();
          if (text.includes("LAST-LINE")) return;
        }
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      }
    })();
    await isReady;
    await writeFile(join(agent.dataRoot, id, "go"), "");
    await Promise.race([tail, new Promise((_, reject) => setTimeout(() => reject(new Error(`no LAST-LINE after 60 s; got ${text.length} bytes`)), 60_000))]);
    ac.abort();

    const seen = [...text.matchAll(/^line (\d+) /gm)].map((m) => Number(m[1]));
    const missing = lines - new Set(seen).size;
    // Runs of consecutive line numbers, e.g. "1-900,897-1800": where a line came twice or out of order.
    const runs: string[] = [];
    seen.forEach((n, i) => {
      if (i === 0 || n !== seen[i - 1]! + 1) runs.push(`${n}-${n}`);
      else runs[runs.length - 1] = `${runs.at(-1)!.split("-")[0]}-${n}`;
    });
    // Files on the host: the current log and its rotated copies.
    const logDir = dirname(info.LogPath);
    const files = (await readdir(logDir)).filter((f) => f.startsWith(basename(info.LogPath)));
    const sizes = await Promise.all(files.map(async (f) => (await stat(join(logDir, f))).size));
    const written = lines * 230;
    console.log(
      `[hardening] ~${Math.round(written / 1024)} KiB written with max-size ${maxSize} x ${maxFiles}: files on the host ${JSON.stringify(sizes)} (${sizes.reduce((a, b) => a + b, 0)} bytes); ` +
        `following TailLogs got ${new Set(seen).size}/${lines} lines (${missing} missing), last ${Math.max(...seen)}, in runs ${runs.join(",")}`,
    );
    expect(written).toBeGreaterThan(maxSize * maxFiles * 4);
    expect(files.length).toBeLessThanOrEqual(maxFiles);
    // json-file checks the size before a write, so a file may pass max-size by one line.
    for (const s of sizes) expect(s).toBeLessThanOrEqual(maxSize + 512);
    // The follower got to the end, through every rotation, in order and without a gap.
    expect(seen.at(-1)).toBe(lines);
    expect(missing).toBe(0);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));

    // A plain tail after the rotations still reads the newest lines.
    let last = "";
    for await (const r of manager.servers.tailLogs({ id, tailLines: 2 })) last += Buffer.from(r.data).toString();
    expect(last.trim().split("\n")).toEqual([expect.stringMatching(new RegExp(`^line ${lines} `)), "LAST-LINE"]);
  });
});

describe("hardening under userns-remap", () => {
  let engine: DockerEngine;
  let docker: Docker;
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let hostId = "";
  const created: string[] = [];

  beforeAll(async () => {
    engine = await startPrivateDockerd("userns", { usernsRemap: true });
    docker = dockerClient(engine.dockerHost);
    await ensureTestImage(docker);
    dir = await tempDir("hardening-userns");
    await chmod(dir, 0o755);
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir, dockerHost: engine.dockerHost });
    hostId = (await waitForHostOnline(manager)).id;
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    if (docker) await removeBerthContainers(docker, { serverIds: created });
    await engine?.stop();
    await removeTestDir(dir);
  });

  it("a server runs and writes its data; what it plants belongs to an unprivileged host uid", async () => {
    const info = (await docker.info()) as { SecurityOptions: string[]; DockerRootDir: string };
    expect(info.SecurityOptions).toContain("name=userns");
    const [remapUid] = basename(info.DockerRootDir).split(".").map(Number);

    const { server } = await manager.servers.createServer({
      spec: {
        name: `userns-${uid()}`,
        hostId,
        image: TEST_IMAGE,
        command: ["sh", "-c", "echo kept > /data/world.dat && while [ ! -f /data/payload ]; do sleep 0.1; done; cp /data/payload /data/sh && chmod u+s /data/sh && echo PLANTED; exec sleep 3600"],
      } as ServerSpec,
    });
    const id = server!.id;
    created.push(id);
    await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    const dataDir = join(agent.dataRoot, id);
    const world = await waitFor("the server's data", async () => stat(join(dataDir, "world.dat")).catch(() => undefined));
    expect((await stat(dataDir)).uid).toBe(remapUid);
    expect(world.uid).toBe(remapUid);

    await dropPayload(dataDir);
    await waitFor("the setuid binary", async () => /PLANTED/.test(await logText(manager, id)));
    // Even with the data root opened up, the planted binary gives nobody the remapped uid, not root.
    await chmod(agent.dataRoot, 0o755);
    try {
      const got = await runAsNobody(join(dataDir, "sh"));
      expect(got).toEqual({ euid: String(remapUid) });
      console.log(`[hardening] userns-remap: data dir owned by ${remapUid}; a planted setuid binary run by nobody has euid ${got.euid}`);
    } finally {
      await chmod(agent.dataRoot, 0o700);
    }
  });
});
