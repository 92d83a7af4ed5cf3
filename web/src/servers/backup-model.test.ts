import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BackupSchema, BackupState } from "@berth/proto/berth/v1/backup_pb.js";
import { BackupPolicySchema, OperationSchema } from "@berth/proto/berth/v1/server_pb.js";
import { backupStateName, backupStateTone, formOfPolicy, isBackupActive, operationProgress, parseIgnore, percentOf, policyOf, policySummary } from "./backup-model.js";

describe("operation progress", () => {
  it("says what, which stage, how far and how many bytes", () => {
    const op = create(OperationSchema, { kind: "backup", stage: "Copying", bytesDone: 450n * 1024n * 1024n, bytesTotal: 1024n * 1024n * 1024n });
    expect(operationProgress(op)).toEqual({ text: "Backing up · Copying 43%", bytes: "450 MiB of 1.0 GiB", percent: 43 });
    const restore = create(OperationSchema, { kind: "restore", stage: "Verifying", bytesDone: 12n, bytesTotal: 100n });
    expect(operationProgress(restore).text).toBe("Restoring · Verifying 12%");
  });
  it("a transfer names the host it moves to, by name when known", () => {
    const op = create(OperationSchema, { kind: "transfer", stage: "Copying", bytesDone: 1n, bytesTotal: 4n, sourceHost: "h-a", targetHost: "h-b" });
    expect(operationProgress(op, (id) => (id === "h-b" ? "host-b" : id)).text).toBe("Moving to host-b · Copying 25%");
    expect(operationProgress(op).text).toBe("Moving to h-b · Copying 25%");
    expect(operationProgress(create(OperationSchema, { kind: "transfer", stage: "Stopping" })).text).toBe("Moving · Stopping");
  });
  it("hides the percentage and the bytes while the total is not known", () => {
    const op = create(OperationSchema, { kind: "backup", stage: "Stopping", bytesDone: 0n, bytesTotal: 0n });
    expect(operationProgress(op)).toEqual({ text: "Backing up · Stopping", bytes: "", percent: undefined });
  });
  it("never shows more than 100% or less than 0%", () => {
    expect(percentOf(150n, 100n)).toBe(100);
    expect(percentOf(-5n, 100n)).toBe(0);
    expect(percentOf(1n, 3n)).toBe(33);
    expect(percentOf(5n, 0n)).toBeUndefined();
  });
});

describe("backup states", () => {
  it("names and colours each state; failed in the error colour", () => {
    expect(backupStateName(BackupState.SUCCEEDED)).toBe("Succeeded");
    expect(backupStateTone(BackupState.SUCCEEDED)).toBe("ok");
    expect(backupStateName(BackupState.FAILED)).toBe("Failed");
    expect(backupStateTone(BackupState.FAILED)).toBe("bad");
    expect(backupStateTone(BackupState.RUNNING)).toBe("busy");
  });
  it("keeps refreshing only while a backup can still change by itself", () => {
    const active = [BackupState.PENDING, BackupState.RUNNING, BackupState.DELETING];
    for (const state of [...active, BackupState.SUCCEEDED, BackupState.FAILED]) {
      expect(isBackupActive(create(BackupSchema, { state }))).toBe(active.includes(state));
    }
  });
});

describe("ignore patterns", () => {
  it("takes one pattern a line and drops blank lines", () => {
    expect(parseIgnore("cache/\r\n\n  *.tmp  \n!keep.tmp\n")).toEqual(["cache/", "*.tmp", "!keep.tmp"]);
    expect(parseIgnore("   \n")).toEqual([]);
  });
});

describe("backup policy form", () => {
  it("reads whole numbers within the contract's bounds, empty as 0, and names the first field that is not", () => {
    expect(policyOf({ keepLast: "5", keepDays: "", alertAfterHours: " 24 ", ignore: " *.log \n\ncache/" })).toEqual({ policy: { keepLast: 5, keepDays: 0, alertAfterHours: 24, ignore: ["*.log", "cache/"] } });
    expect(policyOf({ keepLast: "1001", keepDays: "0", alertAfterHours: "0", ignore: "" })).toMatchObject({ field: "keepLast", message: expect.stringContaining("from 0 to 1000") });
    for (const bad of ["-1", "1.5", "1e2", "0x10", "two"]) expect(policyOf({ keepLast: "0", keepDays: bad, alertAfterHours: "0", ignore: "" })).toMatchObject({ field: "keepDays" });
    expect(policyOf({ keepLast: "1000", keepDays: "3650", alertAfterHours: "87600", ignore: "" })).toEqual({ policy: { keepLast: 1000, keepDays: 3650, alertAfterHours: 87600, ignore: [] } });
    expect(policyOf({ keepLast: "0", keepDays: "0", alertAfterHours: "0", ignore: Array.from({ length: 101 }, (_, i) => `p${i}`).join("\n") })).toMatchObject({ field: "ignore" });
  });
  it("shows a server without a policy as zeros, and sums a policy up in words", () => {
    expect(formOfPolicy(undefined)).toEqual({ keepLast: "0", keepDays: "0", alertAfterHours: "0", ignore: "" });
    expect(formOfPolicy(create(BackupPolicySchema, { ignore: ["*.log", "cache/"] })).ignore).toBe("*.log\ncache/");
    expect(policySummary(undefined)).toBe("no retention · no alert");
    expect(policySummary(create(BackupPolicySchema, { keepLast: 5, keepDays: 1, alertAfterHours: 24 }))).toBe("keep the newest 5, 1 day · alert after 24 h");
    expect(policySummary(create(BackupPolicySchema, { keepDays: 30 }))).toBe("keep 30 days · no alert");
    expect(policySummary(create(BackupPolicySchema, { ignore: ["*.log"] }))).toBe("no retention · no alert · leaves out 1 pattern");
  });
});
