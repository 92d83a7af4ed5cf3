/**
 * plan()'s decisions about a server's install script (spec.install,
 * Lifecycle.install; plan step 5b): it runs before the container is made or
 * started, stops a running container first, shows a failure (pointing at
 * GetInstallLog) without running it again, waits while it runs, and a
 * deletion during it asks for its container's removal.
 */
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { InstallRecord } from "../domain/records.js";
import { plan, type PlanInput } from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";

function ctr(state: string): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: "c0ffee",
    state,
    createdTime: timestampFromMs(NOW - 600_000),
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "1", "berth.spec-hash": HASH },
  });
}

function input(o: Partial<PlanInput> & { install?: InstallRecord; withScript?: boolean; desired?: DesiredState } = {}): PlanInput {
  const { install, withScript = true, desired = DesiredState.RUNNING, ...rest } = o;
  return {
    now: NOW,
    spec: create(ServerSpecSchema, {
      name: "mc",
      hostId: "host_a",
      image: "busybox:latest",
      desiredState: desired,
      ...(withScript ? { install: { image: "alpine:3", script: "echo hi" } } : {}),
    }),
    generation: 1,
    specHash: HASH,
    deleted: false,
    deletedAt: null,
    retentionMs: 24 * 3600_000,
    lifecycle: install ? { install } : {},
    dataInitialized: false,
    lastActionAt: NOW - 60_000,
    hostConnected: true,
    containers: [],
    data: undefined,
    observedAt: NOW,
    inflight: undefined,
    lastFinished: undefined,
    ...rest,
  };
}

const pending: InstallRecord = { state: "pending", attempt: 0, requestedAt: NOW - 60_000 };

describe("plan: install scripts", () => {
  it("runs a pending install before the container is made, whatever the desired state", () => {
    for (const desired of [DesiredState.RUNNING, DesiredState.STOPPED, DesiredState.PAUSED]) {
      const p = plan(input({ install: pending, desired }));
      expect([p.phase, p.reason, p.command?.kind]).toEqual([Phase.CREATING, "Installing", CommandKind.RUN_INSTALL]);
      expect(p.message).toMatch(/attempt 1/);
    }
  });

  it("runs it again (ReinstallServer) on a stopped server with its container, before the start", () => {
    const p = plan(input({ install: { ...pending, attempt: 1 }, containers: [ctr("exited")], dataInitialized: true, data: { present: true } }));
    expect([p.reason, p.command?.kind]).toEqual(["Installing", CommandKind.RUN_INSTALL]);
    expect(p.message).toMatch(/attempt 2/);
  });

  it("stops a running container before the install runs", () => {
    const p = plan(input({ install: pending, containers: [ctr("running")] }));
    expect([p.phase, p.reason, p.command?.kind]).toEqual([Phase.STOPPING, "StoppingForInstall", CommandKind.ENSURE_STOPPED]);
  });

  it("waits while RUN_INSTALL is in flight, showing Installing", () => {
    const p = plan(input({ install: { ...pending, state: "running", attempt: 1 }, inflight: { id: "cmd_i", kind: CommandKind.RUN_INSTALL, createdAt: NOW - 1000, deadlineAt: NOW + 60_000 } }));
    expect([p.phase, p.reason, p.command]).toEqual([Phase.CREATING, "Installing", undefined]);
    expect(p.cancelInstall).toBeUndefined();
  });

  it("a failed install stays Failed/InstallFailed without running again, even after a start; the message names the exit and GetInstallLog", () => {
    const failed: InstallRecord = { state: "failed", attempt: 1, requestedAt: NOW - 60_000, exitCode: 3, timedOut: false };
    const p = plan(input({ install: failed, lastActionAt: NOW - 1, lastFinished: { kind: CommandKind.RUN_INSTALL, state: "failed", reason: "InstallFailed", message: "the install script exited with code 3", createdAt: NOW - 30_000, finishedAt: NOW - 20_000 } }));
    expect([p.phase, p.reason, p.command]).toEqual([Phase.FAILED, "InstallFailed", undefined]);
    expect(p.message).toMatch(/exited with code 3.*GetInstallLog.*ReinstallServer/);
    const timedOut = plan(input({ install: { ...failed, exitCode: 137, timedOut: true } }));
    expect(timedOut.message).toMatch(/timed out/);
  });

  it("starts the server normally once the install succeeded", () => {
    const p = plan(input({ install: { ...pending, state: "succeeded", attempt: 1 } }));
    expect([p.reason, p.command?.kind]).toEqual(["Creating", CommandKind.ENSURE_RUNNING]);
  });

  it("a server without an install script (or without a record of one) is made at once", () => {
    expect(plan(input({ withScript: false, install: pending })).command?.kind).toBe(CommandKind.ENSURE_RUNNING);
    expect(plan(input({})).command?.kind).toBe(CommandKind.ENSURE_RUNNING);
  });

  it("a deleted server does not install, and one deleted during its install asks for the install container's removal", () => {
    const del = { deleted: true, deletedAt: NOW - 1000, lastActionAt: NOW - 1000 };
    expect(plan(input({ install: pending, ...del })).command).toBeUndefined();
    const p = plan(input({ install: { ...pending, state: "running", attempt: 1 }, ...del, inflight: { id: "cmd_i", kind: CommandKind.RUN_INSTALL, createdAt: NOW - 5000, deadlineAt: NOW + 60_000 } }));
    expect(p.cancelInstall).toBe(true);
    expect(p.requeueAfterMs).toBeLessThanOrEqual(10_000);
  });

  it("an install past its deadline fails as InstallFailed", () => {
    const p = plan(input({ install: { ...pending, state: "running", attempt: 1 }, inflight: { id: "cmd_i", kind: CommandKind.RUN_INSTALL, createdAt: NOW - 700_000, deadlineAt: NOW - 1 } }));
    expect([p.phase, p.reason, p.expireInflight]).toEqual([Phase.FAILED, "InstallFailed", true]);
  });
});
