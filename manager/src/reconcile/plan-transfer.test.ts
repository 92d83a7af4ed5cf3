/**
 * plan() and the reconciler's bookkeeping during a transfer (DataOp kind
 * "transfer") and a clone's first restore: the source stops and archives,
 * the target restores and creates the server whatever its desired state, a
 * failure after the move asks for the way back, an absent target fails it
 * only after a grace.
 */
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandKind, CommandSchema, ContainerInfoSchema, DataPolicy, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { DataOp, TransferState } from "../domain/records.js";
import { plan, TRANSFER_OFFLINE_GRACE_MS, type FinishedCommand, type PlanInput } from "./plan.js";
import { noteCommandFinished, noteDataCommandFinished } from "./reconciler.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";

function ctr(state: string): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: "c0ffee",
    state,
    startedTime: timestampFromMs(NOW - 300_000),
    ...(state === "exited" ? { finishedTime: timestampFromMs(NOW - 100_000) } : {}),
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "2", "berth.spec-hash": HASH },
  });
}

function transfer(stage: TransferState["stage"], o: Partial<DataOp> = {}): DataOp {
  return {
    kind: "transfer",
    backupId: "bk_x",
    requestedAt: NOW - 60_000,
    deadlineAt: NOW + 3_600_000,
    live: false,
    location: { directory: "/shared" },
    key: "srv_test/bk_x.tar.gz",
    actor: "token:t",
    transfer: { sourceHost: "host_a", targetHost: "host_b", targetId: "bkt_1", targetLocation: { directory: "/shared" }, stage, keepSourceHours: 0, ...(stage !== "backup" ? { movedAt: NOW - 30_000 } : {}) },
    ...o,
  };
}

function input(o: Partial<PlanInput> = {}): PlanInput {
  return {
    now: NOW,
    spec: create(ServerSpecSchema, { name: "mc", image: "busybox", desiredState: DesiredState.RUNNING, restartPolicy: RestartPolicy.ON_FAILURE }),
    generation: 2,
    specHash: HASH,
    deleted: false,
    deletedAt: null,
    retentionMs: 86_400_000,
    lifecycle: {},
    dataInitialized: true,
    lastActionAt: NOW - 30_000,
    hostConnected: true,
    containers: [ctr("running")],
    data: { present: true },
    observedAt: NOW,
    inflight: undefined,
    lastFinished: undefined,
    ...o,
  };
}

const finished = (kind: CommandKind, state: FinishedCommand["state"], at: number, reason = ""): FinishedCommand => ({ kind, state, reason, message: reason, createdAt: at, finishedAt: at });

describe("plan() during a transfer", () => {
  it("on the source: stops a running server (even one that should run), then archives it", () => {
    const first = plan(input({ lifecycle: { dataOp: transfer("backup") } }));
    expect(first.command?.kind).toBe(CommandKind.ENSURE_STOPPED);
    expect(first.reason).toBe("StoppingForTransfer");
    const second = plan(input({ lifecycle: { dataOp: transfer("backup") }, containers: [ctr("exited")], lastFinished: finished(CommandKind.ENSURE_STOPPED, "succeeded", NOW - 500) }));
    expect(second.command?.kind).toBe(CommandKind.BACKUP_DATA);
    expect(second.reason).toBe("Transferring");
    expect(second.dataStage).toBe("Copying");
  });

  it("on the target: restores first (no container there yet), and never calls the missing data lost", () => {
    const p = plan(input({ lifecycle: { dataOp: transfer("restore"), createPending: true }, containers: [], data: undefined }));
    expect(p.command?.kind).toBe(CommandKind.RESTORE_DATA);
    expect(p.phase).toBe(Phase.PENDING);
    const absent = plan(input({ lifecycle: { dataOp: transfer("restore"), createPending: true }, containers: [], data: { present: false } }));
    expect(absent.command?.kind).toBe(CommandKind.RESTORE_DATA);
    expect(absent.phase).not.toBe(Phase.DATA_LOST);
  });

  it("after the restore: creates the server even when it should stay stopped (not Missing), then the transfer is done", () => {
    const spec = create(ServerSpecSchema, { name: "mc", image: "busybox", desiredState: DesiredState.STOPPED });
    const create1 = plan(input({ spec, lifecycle: { dataOp: transfer("start"), createPending: true }, containers: [], lastFinished: finished(CommandKind.RESTORE_DATA, "succeeded", NOW - 1_000) }));
    expect(create1.command?.kind).toBe(CommandKind.ENSURE_CONTAINER);
    expect(create1.command?.dataPolicy).toBe(DataPolicy.REQUIRE);
    expect(create1.dataStage).toBeUndefined();
    const done = plan(input({ spec, lifecycle: { dataOp: transfer("start") }, containers: [ctr("created")] }));
    expect(done.finishDataOp).toBe(true);
    // Without createPending, a stopped server without a container is Missing: the flag is what makes the create.
    const without = plan(input({ spec, lifecycle: { dataOp: transfer("start") }, containers: [] }));
    expect(without.command).toBeUndefined();
    expect(without.phase).toBe(Phase.MISSING);
  });

  it("a server that should run is done only once it runs on the target", () => {
    const starting = plan(input({ lifecycle: { dataOp: transfer("start") }, containers: [ctr("created")] }));
    expect(starting.finishDataOp).toBeUndefined();
    expect(starting.command?.kind).toBe(CommandKind.ENSURE_RUNNING);
    expect(plan(input({ lifecycle: { dataOp: transfer("start") }, containers: [ctr("running")] })).finishDataOp).toBe(true);
  });

  it("a start that fails on the target fails the transfer (the reconciler moves it back)", () => {
    const p = plan(input({ lifecycle: { dataOp: transfer("start") }, containers: [], lastFinished: finished(CommandKind.ENSURE_RUNNING, "failed", NOW - 1_000, "PortInUse") }));
    expect(p.failDataOp?.reason).toBe("StartFailed");
    expect(p.failDataOp?.message).toContain("PortInUse");
    // A failure from before the move is not this transfer's.
    const old = plan(input({ lifecycle: { dataOp: transfer("start") }, containers: [], lastFinished: finished(CommandKind.ENSURE_RUNNING, "failed", NOW - 40_000, "Old") }));
    expect(old.failDataOp).toBeUndefined();
  });

  it("the target away: waits out a grace (a blip is no failure), then fails the transfer and gives up its command", () => {
    const inflight = { id: "cmd_r", kind: CommandKind.RESTORE_DATA, createdAt: NOW - 20_000, deadlineAt: NOW + 3_000_000 };
    const blip = plan(input({ hostConnected: false, hostOfflineSince: NOW - 5_000, lifecycle: { dataOp: transfer("restore") }, inflight }));
    expect(blip.failDataOp).toBeUndefined();
    expect(blip.phase).toBe(Phase.UNKNOWN);
    expect(blip.requeueAfterMs).toBe(TRANSFER_OFFLINE_GRACE_MS - 5_000);
    const gone = plan(input({ hostConnected: false, hostOfflineSince: NOW - TRANSFER_OFFLINE_GRACE_MS, lifecycle: { dataOp: transfer("restore") }, inflight }));
    expect(gone.failDataOp?.reason).toBe("TargetHostOffline");
    expect(gone.expireInflight).toBe(true);
    // The source away while it archives: Unknown as for any server (its agent fails the job when it returns).
    const source = plan(input({ hostConnected: false, hostOfflineSince: NOW - 600_000, lifecycle: { dataOp: transfer("backup") } }));
    expect(source.failDataOp).toBeUndefined();
    expect(source.reason).toBe("HostOffline");
  });

  it("a clone waits for its source's backup, and a clone whose copy failed stays Failed until the operator acts", () => {
    const restore: DataOp = { kind: "restore", backupId: "bk_y", requestedAt: NOW - 1_000, deadlineAt: NOW + 60_000, live: false, location: { directory: "/b" }, key: "k", actor: "a", fresh: true, awaitBackup: true };
    const waiting = plan(input({ lifecycle: { dataOp: restore, createPending: true }, containers: [], data: undefined, dataInitialized: false }));
    expect(waiting.reason).toBe("WaitingForBackup");
    expect(waiting.command).toBeUndefined();
    const failed = plan(input({ lifecycle: { cloneFailed: { reason: "CloneFailed", message: "no copy", at: NOW - 1_000 }, createPending: true }, containers: [], data: undefined, dataInitialized: false }));
    expect(failed.phase).toBe(Phase.FAILED);
    expect(failed.command).toBeUndefined();
    const acted = plan(input({ lifecycle: { cloneFailed: { reason: "CloneFailed", message: "no copy", at: NOW - 1_000 }, createPending: true }, containers: [], data: undefined, dataInitialized: false, lastActionAt: NOW - 10 }));
    expect(acted.command?.kind).toBe(CommandKind.ENSURE_RUNNING);
  });
});

describe("the bookkeeping of a transfer's commands", () => {
  const cmd = (kind: CommandKind, backupId = "bk_x") => create(CommandSchema, { id: "cmd_1", kind, dataDir: "srv_test.cmd_1", backup: { backupId } });

  it("the archive's success is left to the move (no change here); its failure ends the transfer on the source", () => {
    expect(noteDataCommandFinished({ dataOp: transfer("backup") }, { command: cmd(CommandKind.BACKUP_DATA), state: "succeeded", createdAt: NOW - 1_000 })).toBeUndefined();
    const failed = noteDataCommandFinished({ dataOp: transfer("backup") }, { command: cmd(CommandKind.BACKUP_DATA), state: "failed", reason: "AgentRestarted", message: "lost", createdAt: NOW - 1_000 });
    expect(failed?.lifecycle.dataOp).toBeUndefined();
    expect(failed?.event?.type).toBe("server.transfer_failed");
    expect(failed?.moveBack).toBeUndefined();
  });

  it("the restore's success moves on to the start; its failure asks for the way back", () => {
    const ok = noteDataCommandFinished({ dataOp: transfer("restore") }, { command: cmd(CommandKind.RESTORE_DATA), state: "succeeded", createdAt: NOW - 1_000 });
    expect(ok?.lifecycle.dataOp?.transfer?.stage).toBe("start");
    const bad = noteDataCommandFinished({ dataOp: transfer("restore") }, { command: cmd(CommandKind.RESTORE_DATA), state: "failed", reason: "DataRootFull", message: "no space", createdAt: NOW - 1_000 });
    expect(bad?.moveBack?.reason).toBe("DataRootFull");
  });

  it("the archive's old success does not end the transfer once the target restores", () => {
    expect(noteDataCommandFinished({ dataOp: transfer("restore") }, { command: cmd(CommandKind.BACKUP_DATA), state: "succeeded", createdAt: NOW - 50_000 })).toBeUndefined();
    expect(noteDataCommandFinished({ dataOp: transfer("start") }, { command: cmd(CommandKind.RESTORE_DATA), state: "succeeded", createdAt: NOW - 10_000 })).toBeUndefined();
  });

  it("the first container made clears createPending", () => {
    expect(noteCommandFinished({ createPending: true }, { kind: CommandKind.ENSURE_CONTAINER, recreate: false }, NOW)?.createPending).toBeUndefined();
    expect(noteCommandFinished({ createPending: true }, { kind: CommandKind.ENSURE_STOPPED, recreate: false }, NOW)).toBeUndefined();
  });
});
