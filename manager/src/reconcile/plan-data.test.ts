/**
 * plan() with a backup or restore under way (Lifecycle.dataOp): the
 * container stops first unless the backup is live, then the data command is
 * issued; a failure ends the operation, never the server; a restore's safety
 * copy is discarded once the server runs.
 */
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { DataOp } from "../domain/records.js";
import { plan, type FinishedCommand, type PlanInput } from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";

function ctr(state: string): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: "c0ffee",
    state,
    startedTime: timestampFromMs(NOW - 300_000),
    ...(state === "exited" ? { finishedTime: timestampFromMs(NOW - 100_000) } : {}),
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "1", "berth.spec-hash": HASH },
  });
}

function op(o: Partial<DataOp> = {}): DataOp {
  return { kind: "backup", backupId: "bk_x", requestedAt: NOW - 1_000, deadlineAt: NOW + 3_600_000, live: false, location: { directory: "/b" }, key: "srv_test/bk_x.tar.gz", actor: "token:t", ...o };
}

function input(o: Partial<PlanInput> = {}): PlanInput {
  return {
    now: NOW,
    spec: create(ServerSpecSchema, { name: "mc", image: "busybox", desiredState: DesiredState.RUNNING, restartPolicy: RestartPolicy.ON_FAILURE }),
    generation: 1,
    specHash: HASH,
    deleted: false,
    deletedAt: null,
    retentionMs: 86_400_000,
    lifecycle: {},
    dataInitialized: true,
    lastActionAt: NOW - 60_000,
    hostConnected: true,
    containers: [ctr("running")],
    data: { present: true },
    observedAt: NOW,
    inflight: undefined,
    lastFinished: undefined,
    ...o,
  };
}

const stopped = (at: number): FinishedCommand => ({ kind: CommandKind.ENSURE_STOPPED, state: "succeeded", reason: "", message: "", createdAt: at, finishedAt: at });

describe("plan() with a backup or restore under way", () => {
  it("a backup stops a running container first, then archives; the desired state is not touched", () => {
    const first = plan(input({ lifecycle: { dataOp: op() } }));
    expect(first.command?.kind).toBe(CommandKind.ENSURE_STOPPED);
    expect(first.reason).toBe("StoppingForBackup");
    expect(first.dataStage).toBe("Stopping");
    const then = plan(input({ lifecycle: { dataOp: op() }, containers: [ctr("exited")], lastFinished: stopped(NOW - 500) }));
    expect(then.command?.kind).toBe(CommandKind.BACKUP_DATA);
    expect(then.phase).toBe(Phase.STOPPED);
    expect(then.reason).toBe("BackingUp");
    expect(then.dataStage).toBe("Copying");
  });

  it("a backup asked for right after another one succeeded is issued at once (not held as a repeat)", () => {
    const previous: FinishedCommand = { kind: CommandKind.BACKUP_DATA, state: "succeeded", reason: "", message: "", createdAt: NOW - 2_000, finishedAt: NOW - 1_500 };
    const p = plan(input({ lifecycle: { dataOp: op({ live: true, backupId: "bk_next", requestedAt: NOW - 1_000 }) }, lastFinished: previous, observedAt: NOW - 3_000 }));
    expect(p.command?.kind).toBe(CommandKind.BACKUP_DATA);
  });

  it("a live backup archives the running container without stopping it", () => {
    const p = plan(input({ lifecycle: { dataOp: op({ live: true }) } }));
    expect(p.command?.kind).toBe(CommandKind.BACKUP_DATA);
    expect(p.phase).toBe(Phase.RUNNING);
  });

  it("a restore always stops the container, and runs even when the data directory is gone (it is the remedy)", () => {
    expect(plan(input({ lifecycle: { dataOp: op({ kind: "restore", live: true, sha256: "a".repeat(64) }) } })).command?.kind).toBe(CommandKind.ENSURE_STOPPED);
    const lost = plan(input({ lifecycle: { dataOp: op({ kind: "restore", sha256: "a".repeat(64) }) }, containers: [ctr("exited")], data: { present: false } }));
    expect(lost.command?.kind).toBe(CommandKind.RESTORE_DATA);
    expect(lost.reason).toBe("Restoring");
  });

  it("waits for the data command in flight, showing its stage, and never fails the server at its deadline", () => {
    const inflight = { id: "cmd_b", kind: CommandKind.BACKUP_DATA, createdAt: NOW - 10_000, deadlineAt: NOW + 50_000 };
    const waiting = plan(input({ lifecycle: { dataOp: op({ progress: { stage: "Copying", bytesDone: 5, bytesTotal: 10, files: 1, at: NOW } }) }, containers: [ctr("exited")], inflight }));
    expect(waiting.command).toBeUndefined();
    expect(waiting.reason).toBe("BackingUp");
    expect(waiting.dataStage).toBe("Copying");
    const late = plan(input({ lifecycle: { dataOp: op() }, containers: [ctr("exited")], inflight: { ...inflight, deadlineAt: NOW - 1 } }));
    expect(late.expireInflight).toBe(true);
    expect(late.phase).not.toBe(Phase.FAILED);
  });

  it("ends the operation (never the server) past its deadline, when the server was deleted, when the stop failed, or when there is no data", () => {
    expect(plan(input({ lifecycle: { dataOp: op({ deadlineAt: NOW - 1 }) } })).failDataOp?.reason).toBe("DeadlineExceeded");
    expect(plan(input({ deleted: true, deletedAt: NOW - 1, lifecycle: { dataOp: op() } })).failDataOp?.reason).toBe("ServerDeleted");
    const stopFailed = plan(input({ lifecycle: { dataOp: op() }, lastFinished: { ...stopped(NOW - 500), state: "failed", reason: "StopTimeout", message: "did not stop" } }));
    expect(stopFailed.failDataOp?.reason).toBe("StopFailed");
    expect(stopFailed.command).toBeUndefined();
    const noData = plan(input({ lifecycle: { dataOp: op() }, containers: [ctr("exited")], data: { present: false } }));
    expect(noData.failDataOp?.reason).toBe("NoData");
  });

  it("a failed backup or restore command does not leave the server Failed: it goes back to its desired state", () => {
    const failedBackup: FinishedCommand = { kind: CommandKind.BACKUP_DATA, state: "failed", reason: "TargetFull", message: "no space", createdAt: NOW - 1_000, finishedAt: NOW - 900 };
    const lastExit = { cause: "stopped_by_berth" as const, at: NOW - 100_000, exitCode: 0, finishedAt: NOW - 100_000 };
    const p = plan(input({ containers: [ctr("exited")], lifecycle: { lastExit }, lastFinished: failedBackup, lastActionAt: NOW - 60_000 }));
    expect(p.phase).not.toBe(Phase.FAILED);
    expect(p.command?.kind).toBe(CommandKind.ENSURE_RUNNING);
  });

  it("discards a restore's safety copy once the server runs, not before, and never one kept on purpose", () => {
    const prev = (keep: boolean) => ({ previousData: [{ name: "srv_test.cmd_r", backupId: "bk_x", keep, at: NOW - 5_000 }] });
    expect(plan(input({ lifecycle: prev(false) })).command?.kind).toBe(CommandKind.DISCARD_PREVIOUS_DATA);
    expect(plan(input({ lifecycle: prev(true) })).command).toBeUndefined();
    const stoppedServer = plan(input({ lifecycle: prev(false), containers: [ctr("exited")], spec: create(ServerSpecSchema, { name: "mc", image: "busybox", desiredState: DesiredState.STOPPED }) }));
    expect(stoppedServer.command).toBeUndefined();
  });
});
