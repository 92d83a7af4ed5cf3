import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BackupTargetSchema } from "@berth/proto/berth/v1/backup_pb.js";
import { HostSchema, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { carriesBetweenHosts, schedulingBadge, transferChoices } from "./move-model.js";

const host = (id: string, extra: Partial<{ state: HostState; unschedulable: boolean; draining: boolean; drainMessage: string }> = {}) =>
  create(HostSchema, { id, name: id, state: HostState.ONLINE, ...extra });

describe("transfer choices", () => {
  it("leaves out the server's own host and puts the hosts that can take it first", () => {
    const hosts = [host("c", { unschedulable: true }), host("a"), host("d", { state: HostState.OFFLINE }), host("b"), host("e", { unschedulable: true, draining: true })];
    const choices = transferChoices(hosts, "a");
    expect(choices.map((c) => [c.host.id, c.blocked])).toEqual([
      ["b", undefined],
      ["c", "cordoned"],
      ["d", "offline"],
      ["e", "draining"],
    ]);
  });
});

describe("targets that carry a server between hosts", () => {
  it("S3 and shared directories do; a directory on one host does not", () => {
    const dir = (shared: boolean) => create(BackupTargetSchema, { name: "d", kind: { case: "directory", value: { path: "/b", shared } } });
    expect(carriesBetweenHosts(dir(true))).toBe(true);
    expect(carriesBetweenHosts(dir(false))).toBe(false);
    expect(carriesBetweenHosts(create(BackupTargetSchema, { name: "s", kind: { case: "s3", value: { bucket: "bkt" } } }))).toBe(true);
  });
});

describe("scheduling badge", () => {
  it("says Draining with the drain's progress, Cordoned, or nothing", () => {
    expect(schedulingBadge(host("a", { unschedulable: true, draining: true, drainMessage: "3 of 12 moved; 2 under way" }))).toEqual({
      label: "Draining · 3 of 12 moved",
      tone: "busy",
      title: "3 of 12 moved; 2 under way",
      detail: "3 of 12 moved; 2 under way",
    });
    expect(schedulingBadge(host("a", { unschedulable: true, draining: true, drainMessage: "3 of 12 moved" }))?.detail).toBeUndefined();
    expect(schedulingBadge(host("a", { unschedulable: true, draining: true }))?.label).toBe("Draining");
    expect(schedulingBadge(host("a", { unschedulable: true, drainMessage: "stopped: no target reaches every host" }))).toEqual({
      label: "Cordoned",
      tone: "warn",
      title: "stopped: no target reaches every host",
      detail: "stopped: no target reaches every host",
    });
    expect(schedulingBadge(host("a"))).toBeUndefined();
  });
});
