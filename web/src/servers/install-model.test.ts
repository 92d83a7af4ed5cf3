import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { DesiredState, InstallAttemptSchema, InstallState, Phase, ServerSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { formatTime } from "../ui/format.js";
import { attemptViews, installStateName, installStateText, pollsLog, reinstallBlocked } from "./install-model.js";

const T0 = Date.UTC(2026, 11, 7, 0, 0, 0);

function server(o: { state?: InstallState; attempt?: number; exitCode?: number; timedOut?: boolean; desired?: DesiredState; container?: string; install?: boolean; timeout?: number; deleted?: boolean } = {}): Server {
  return create(ServerSchema, {
    id: "srv_1",
    spec: {
      name: "a",
      desiredState: o.desired ?? DesiredState.RUNNING,
      ...(o.install === false ? {} : { install: { image: "busybox:1.36", script: "echo hi", timeoutSeconds: o.timeout ?? 0 } }),
    },
    status: {
      phase: o.state === InstallState.FAILED ? Phase.FAILED : Phase.STOPPED,
      containerState: o.container ?? "",
      ...(o.state === undefined
        ? {}
        : { install: { state: o.state, attempt: o.attempt ?? 1, startedTime: timestampFromMs(T0), finishedTime: timestampFromMs(T0 + 5000), exitCode: o.exitCode ?? 0, timedOut: o.timedOut ?? false } }),
    },
    ...(o.deleted ? { deleteTime: timestampFromMs(T0) } : {}),
  });
}

describe("installStateText", () => {
  it("says where the script is, with the exit code or the timeout of a failure", () => {
    expect(installStateText(server({ state: InstallState.PENDING }), T0).text).toBe("pending");
    expect(installStateText(server({ state: InstallState.RUNNING }), T0 + 12_400).text).toBe("running for 12 s");
    expect(installStateText(server({ state: InstallState.SUCCEEDED }), T0).text).toBe(`succeeded at ${formatTime(T0 + 5000)}`);
    expect(installStateText(server({ state: InstallState.FAILED, exitCode: 3 }), T0)).toEqual({ text: "failed: exit code 3", tone: "bad" });
    expect(installStateText(server({ state: InstallState.FAILED, timedOut: true, exitCode: 137 }), T0).text).toBe("failed: timed out after 600 s");
    expect(installStateText(server({ state: InstallState.FAILED, timedOut: true, timeout: 30 }), T0).text).toBe("failed: timed out after 30 s");
    expect(installStateText(server(), T0).text).toBe("not run yet");
  });

  it("polls the log only while the script runs", () => {
    expect(pollsLog(server({ state: InstallState.RUNNING }))).toBe(true);
    for (const st of [InstallState.PENDING, InstallState.SUCCEEDED, InstallState.FAILED]) expect(pollsLog(server({ state: st }))).toBe(false);
    expect(installStateName(server({ state: InstallState.SUCCEEDED }).status?.install)).toBe("succeeded");
  });
});

describe("reinstallBlocked", () => {
  it("allows a reinstall after a failure in any desired state", () => {
    expect(reinstallBlocked(server({ state: InstallState.FAILED, desired: DesiredState.RUNNING }))).toBeUndefined();
  });

  it("asks for the server stopped after a success, as the manager does", () => {
    expect(reinstallBlocked(server({ state: InstallState.SUCCEEDED, desired: DesiredState.RUNNING, container: "running" }))).toMatch(/must be stopped \(it is running\)/);
    expect(reinstallBlocked(server({ state: InstallState.SUCCEEDED, desired: DesiredState.RUNNING }))).toMatch(/meant to be running/);
    expect(reinstallBlocked(server({ state: InstallState.SUCCEEDED, desired: DesiredState.STOPPED, container: "paused" }))).toMatch(/it is paused/);
    expect(reinstallBlocked(server({ state: InstallState.SUCCEEDED, desired: DesiredState.STOPPED, container: "exited" }))).toBeUndefined();
    // No status (a clone): like a success.
    expect(reinstallBlocked(server({ desired: DesiredState.STOPPED }))).toBeUndefined();
    expect(reinstallBlocked(server({ desired: DesiredState.RUNNING }))).toMatch(/must be stopped/);
  });

  it("refuses while pending or running, without an install, and for a deleted server", () => {
    expect(reinstallBlocked(server({ state: InstallState.RUNNING, attempt: 2 }))).toMatch(/running \(attempt 2\)/);
    expect(reinstallBlocked(server({ state: InstallState.PENDING }))).toMatch(/already waiting/);
    expect(reinstallBlocked(server({ install: false }))).toMatch(/no install script/);
    expect(reinstallBlocked(server({ state: InstallState.FAILED, deleted: true }))).toMatch(/deleted/);
  });
});

describe("attemptViews", () => {
  it("shows the attempts newest first with their outcome and text", () => {
    const a = (attempt: number, exitCode: number, log: string, more: { timedOut?: boolean; truncated?: boolean } = {}) =>
      create(InstallAttemptSchema, { attempt, exitCode, log: new TextEncoder().encode(log), startedTime: timestampFromMs(T0), finishedTime: timestampFromMs(T0 + 1000), ...more });
    const v = attemptViews([a(1, 3, "fetching server.jar\n"), a(3, 137, "", { timedOut: true }), a(2, 0, "done\n", { truncated: true })], 60);
    expect(v.map((x) => x.attempt)).toEqual([3, 2, 1]);
    expect(v.map((x) => x.outcome)).toEqual(["timed out after 60 s", "exit code 0", "exit code 3"]);
    expect(v.map((x) => x.ok)).toEqual([false, true, false]);
    expect(v[0]!.text).toBe("(no output)");
    expect(v[1]!.truncated).toBe(true);
    expect(v[2]!.text).toBe("fetching server.jar\n");
    expect(v[2]!.started).toBe(formatTime(T0));
  });

  it("decodes bad UTF-8 without throwing", () => {
    const v = attemptViews([create(InstallAttemptSchema, { attempt: 1, log: new Uint8Array([0x66, 0xff, 0x6f]) })], 600);
    expect(v[0]!.text).toBe("f\uFFFDo");
  });
});
