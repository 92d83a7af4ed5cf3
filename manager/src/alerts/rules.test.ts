import { describe, expect, it } from "vitest";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { DEFAULT_THRESHOLDS, evaluateRules, notConverged, type BackupPolicyView, type FleetSnapshot, type HostView, type ServerView } from "./rules.js";

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
    ["install failed", { phase: Phase.FAILED, reason: "InstallFailed" }, ["install_failed server:srv_1 critical 0"]],
    ["installing (its own timeout bounds it)", { phase: Phase.CREATING, reason: "Installing" }, []],
    ["data lost", { phase: Phase.DATA_LOST, reason: "DataDirectoryMissing" }, ["data_lost server:srv_1 critical 0"]],
    ["failed otherwise", { phase: Phase.FAILED, reason: "ImagePullFailed" }, ["server_not_converged server:srv_1 warning 120000"]],
    ["starting", { phase: Phase.STARTING, reason: "CrashBackoff" }, ["server_not_converged server:srv_1 warning 120000"]],
    ["running an old generation", { observedGeneration: 2 }, ["server_not_converged server:srv_1 warning 120000"]],
    ["unknown (the host rule covers it)", { phase: Phase.UNKNOWN }, []],
    ["deleted", { phase: Phase.DELETED, retired: true }, []],
    ["stopped but desired running", { phase: Phase.STOPPED }, ["server_not_converged server:srv_1 warning 120000"]],
    ["stopped for a backup (desired running)", { phase: Phase.STOPPED, reason: "BackingUp" }, []],
    ["stopping for a restore", { phase: Phase.STOPPING, reason: "StoppingForRestore" }, []],
    ["stopped outside berth (adopted: desired stopped)", { phase: Phase.STOPPED, reason: "StoppedOutsideBerth", desired: DesiredState.STOPPED }, ["stopped_outside server:srv_1 warning 0"]],
    ["stopped as asked", { phase: Phase.STOPPED, reason: "Stopped", desired: DesiredState.STOPPED }, []],
    ["running, waiting for its ready pattern (its own 10-minute deadline)", { phase: Phase.STARTING, reason: "WaitingForReady" }, []],
    ["running, no line matched its ready pattern in 10 minutes", { phase: Phase.STARTING, reason: "ReadyTimeout" }, ["server_not_converged server:srv_1 warning 120000"]],
    ["crashed once, restarting", { phase: Phase.STARTING, reason: "CrashBackoff", recentCrashes: 1 }, ["server_not_converged server:srv_1 warning 120000"]],
    ["crashed twice, restarting: crash_loop's warning stage", { phase: Phase.STARTING, reason: "CrashBackoff", recentCrashes: 2 }, ["crash_loop server:srv_1 warning 0"]],
    ["crashed twice, running again: still the warning", { phase: Phase.RUNNING, reason: "Running", recentCrashes: 2 }, ["crash_loop server:srv_1 warning 0"]],
    ["unknown, last seen crash-looping: its alert goes on", { phase: Phase.UNKNOWN, reason: "HostOffline", lastKnownPhase: Phase.FAILED, lastKnownReason: "CrashLoop" }, ["crash_loop server:srv_1 critical 0"]],
    ["unknown, last seen with its data gone", { phase: Phase.UNKNOWN, lastKnownPhase: Phase.DATA_LOST, lastKnownReason: "DataDirectoryMissing" }, ["data_lost server:srv_1 critical 0"]],
    ["unknown, last seen starting (the host rule covers it)", { phase: Phase.UNKNOWN, lastKnownPhase: Phase.STARTING, lastKnownReason: "Starting" }, []],
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

  describe("backup_overdue", () => {
    const H = 3600_000;
    const NOW = Date.UTC(2026, 0, 10, 12);
    const policy = (o: Partial<BackupPolicyView> = {}): BackupPolicyView => ({
      serverId: "srv_1",
      serverName: "world",
      project: "a",
      hostId: "host_1",
      createdAt: NOW - 1000 * H,
      alertAfterHours: 24,
      newestSuccessAt: NOW - 10 * H,
      ...o,
    });
    const overdue = (...p: BackupPolicyView[]) => evaluateRules(fleet({ backupPolicies: p, now: NOW }), DEFAULT_THRESHOLDS).filter((c) => c.rule === "backup_overdue");

    it("fires for a server whose newest success is older than its policy, naming the age and the policy", () => {
      const [c, ...rest] = overdue(policy({ newestSuccessAt: NOW - 30 * H - 60_000 }));
      expect(rest).toEqual([]);
      expect(c).toMatchObject({ rule: "backup_overdue", subject: "server:srv_1", severity: "warning", forMs: 0, project: "a", hostId: "host_1", serverId: "srv_1" });
      expect(c!.message).toBe("server world: its newest successful backup finished 30 h ago (2026-01-09T05:59:00.000Z); its backup policy alerts after 24 h; back it up (BackupService.CreateBackup)");
    });

    it.each([
      ["a recent success", { newestSuccessAt: NOW - 23 * H }, []],
      ["exactly at the limit", { newestSuccessAt: NOW - 24 * H }, []],
      ["just past it", { newestSuccessAt: NOW - 24 * H - 1 }, ["srv_1"]],
      ["no policy alert (0)", { alertAfterHours: 0, newestSuccessAt: NOW - 999 * H }, []],
      ["never backed up, created long ago", { newestSuccessAt: null }, ["srv_1"]],
      ["never backed up, created within the policy", { newestSuccessAt: null, createdAt: NOW - 2 * H }, []],
    ])("%s", (_name, o, want) => {
      expect(overdue(policy(o)).map((c) => c.serverId)).toEqual(want);
    });

    it("a server never backed up says so, in days past two days", () => {
      expect(overdue(policy({ newestSuccessAt: null, createdAt: NOW - 75 * H }))[0]!.message).toBe(
        "server world: no successful backup since it was created 3 d 3 h ago; its backup policy alerts after 24 h; back it up (BackupService.CreateBackup)",
      );
    });

    it("its key differs from backup_failed's for the same server: both can fire", () => {
      const c = evaluateRules(
        fleet({
          now: NOW,
          backupPolicies: [policy({ newestSuccessAt: NOW - 48 * H })],
          backupFailures: [{ serverId: "srv_1", serverName: "world", project: "a", hostId: "host_1", backupId: "bkp_1", reason: "TargetFull", message: "disk full" }],
        }),
        DEFAULT_THRESHOLDS,
      );
      expect(c.map((x) => `${x.rule} ${x.subject}`)).toEqual(["backup_failed server:srv_1", "backup_overdue server:srv_1"]);
    });
  });
});

describe("the disk quota rule", () => {
  it("fires for a server over its quota, beside its other alerts, and not at or under it; a quota stop is not 'not converged'", () => {
    const MiB = 1024 * 1024;
    expect(fired(fleet({ servers: [srv({ diskQuotaBytes: 10 * MiB, dataSizeBytes: 11 * MiB })] }))).toEqual(["disk_quota server:srv_1 warning 0"]);
    expect(evaluateRules(fleet({ servers: [srv({ diskQuotaBytes: 10 * MiB, dataSizeBytes: 11 * MiB })] }), DEFAULT_THRESHOLDS)[0]!.message).toBe(
      "server web uses 11 MiB of its 10 MiB disk quota; uploads through the file manager are refused until it is under it again",
    );
    expect(fired(fleet({ servers: [srv({ diskQuotaBytes: 10 * MiB, dataSizeBytes: 10 * MiB }), srv({ id: "srv_2", dataSizeBytes: 99 * MiB })] }))).toEqual([]);
    const stopped = srv({ phase: Phase.STOPPED, reason: "DiskQuotaExceeded", diskQuotaBytes: 10 * MiB, dataSizeBytes: 11 * MiB });
    expect(notConverged(stopped)).toBe(false);
    expect(fired(fleet({ servers: [srv({ phase: Phase.FAILED, reason: "CrashLoop", diskQuotaBytes: 1, dataSizeBytes: 2 })] }))).toEqual(["disk_quota server:srv_1 warning 0", "crash_loop server:srv_1 critical 0"]);
  });
});
