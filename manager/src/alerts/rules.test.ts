import { describe, expect, it } from "vitest";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { DEFAULT_THRESHOLDS, evaluateRules, notConverged, type FleetSnapshot, type HostView, type ServerView } from "./rules.js";

const host = (o: Partial<HostView> = {}): HostView => ({ id: "host_1", name: "h1", connected: true, dataRootFreeBytes: 50, dataRootTotalBytes: 100, ...o });
const srv = (o: Partial<ServerView> = {}): ServerView => ({
  id: "srv_1",
  name: "web",
  project: "a",
  hostId: "host_1",
  desired: DesiredState.RUNNING,
  phase: Phase.RUNNING,
  reason: "Running",
  generation: 3,
  observedGeneration: 3,
  retired: false,
  ...o,
});
const fleet = (o: Partial<FleetSnapshot>): FleetSnapshot => ({ hosts: [host()], servers: [], orphans: [], ...o });
const fired = (f: FleetSnapshot) => evaluateRules(f, DEFAULT_THRESHOLDS).map((c) => `${c.rule} ${c.subject} ${c.severity} ${c.forMs}`);

describe("alert rules", () => {
  it("a healthy fleet raises nothing", () => {
    expect(fired(fleet({ servers: [srv(), srv({ id: "srv_2", desired: DesiredState.STOPPED, phase: Phase.STOPPED })] }))).toEqual([]);
  });

  it("host offline waits 30 s; disk is only judged on connected hosts", () => {
    expect(fired(fleet({ hosts: [host({ connected: false, dataRootFreeBytes: 1 })] }))).toEqual(["host_offline host:host_1 critical 30000"]);
  });

  it.each([
    [9, 100, ["disk_low host:host_1 warning 0"]],
    [10, 100, []],
    [0, 0, []], // no facts yet
  ])("disk: %i free of %i", (free, total, want) => {
    expect(fired(fleet({ hosts: [host({ dataRootFreeBytes: free, dataRootTotalBytes: total })] }))).toEqual(want);
  });

  it.each([
    ["crash loop", { phase: Phase.FAILED, reason: "CrashLoop" }, ["crash_loop server:srv_1 critical 0"]],
    ["data lost", { phase: Phase.DATA_LOST, reason: "DataDirectoryMissing" }, ["data_lost server:srv_1 critical 0"]],
    ["failed otherwise", { phase: Phase.FAILED, reason: "ImagePullFailed" }, ["server_not_converged server:srv_1 warning 120000"]],
    ["starting", { phase: Phase.STARTING, reason: "CrashBackoff" }, ["server_not_converged server:srv_1 warning 120000"]],
    ["running an old generation", { observedGeneration: 2 }, ["server_not_converged server:srv_1 warning 120000"]],
    ["unknown (the host rule covers it)", { phase: Phase.UNKNOWN }, []],
    ["deleted", { phase: Phase.DELETED, retired: true }, []],
    ["stopped but desired running", { phase: Phase.STOPPED }, ["server_not_converged server:srv_1 warning 120000"]],
    ["stopped for a backup (desired running)", { phase: Phase.STOPPED, reason: "BackingUp" }, []],
    ["stopping for a restore", { phase: Phase.STOPPING, reason: "StoppingForRestore" }, []],
  ] as const)("server %s", (_what, o, want) => {
    expect(fired(fleet({ servers: [srv(o as Partial<ServerView>)] }))).toEqual(want);
  });

  it("backup_failed: one warning per server whose newest finished backup failed, naming the backup and why", () => {
    const f = { serverId: "srv_1", serverName: "web", project: "p", hostId: "host_1", backupId: "bk_1", reason: "TargetFull", message: "no space left" };
    expect(fired(fleet({ backupFailures: [f] }))).toEqual(["backup_failed server:srv_1 warning 0"]);
    const [c] = evaluateRules(fleet({ backupFailures: [f] }), DEFAULT_THRESHOLDS);
    expect(c?.message).toContain("bk_1");
    expect(c?.message).toContain("TargetFull");
    expect(c?.project).toBe("p");
  });

  it("desired stopped is converged as Stopped or Missing; paused only as Paused", () => {
    expect(notConverged(srv({ desired: DesiredState.STOPPED, phase: Phase.MISSING }))).toBe(false);
    expect(notConverged(srv({ desired: DesiredState.STOPPED, phase: Phase.STOPPED }))).toBe(false);
    expect(notConverged(srv({ desired: DesiredState.PAUSED, phase: Phase.RUNNING }))).toBe(true);
    expect(notConverged(srv({ desired: DesiredState.RUNNING, phase: Phase.MISSING }))).toBe(true);
  });

  it("orphans: one alert per host and kind, however many orphans (a host with 30,000 made 30,001 alerts)", () => {
    const many = Array.from({ length: 30_000 }, (_, i) => ({ hostId: "host_1", kind: "container" as const, id: `c${i}`, reason: "untracked" as const }));
    const conditions = evaluateRules(
      fleet({
        orphans: [
          ...many,
          { hostId: "host_1", kind: "server", id: "srv_x", reason: "stranded" },
          { hostId: "host_2", kind: "container", id: "abc", reason: "untracked" },
        ],
      }),
      DEFAULT_THRESHOLDS,
    );
    expect(conditions.map((c) => `${c.rule} ${c.subject} ${c.severity} ${c.forMs}`)).toEqual([
      "orphan_found orphan:host_1/container warning 0",
      "orphan_found orphan:host_1/server warning 0",
      "orphan_found orphan:host_2/container warning 0",
    ]);
    expect(conditions[0]!.message).toMatch(/^30000 untracked containers on host .*: c0, c1, c2, c3, c4 and 29995 more; adopt or destroy them/);
    expect(conditions[2]!.message).toMatch(/^1 untracked container on host .*: abc; adopt or destroy it/);
  });

  it("thresholds are configurable", () => {
    const c = evaluateRules(fleet({ hosts: [host({ connected: false })], servers: [srv({ phase: Phase.STARTING })] }), {
      hostOfflineMs: 2000,
      notConvergedMs: 3000,
      diskFreeFraction: 0.5,
    });
    expect(c.map((x) => x.forMs)).toEqual([2000, 3000]);
  });
});
