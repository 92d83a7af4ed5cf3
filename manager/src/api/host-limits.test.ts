import { create, toJsonString } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ContainerInfoSchema, DataDirSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { TokenBucket } from "../auth/limits.js";
import { admitContainer, boundInventory, isPlainDirName, slimContainer, type HostLimits } from "./host-limits.js";

const LIMITS: HostLimits = { maxContainers: 5, maxOtherLabelled: 2, maxUnmanaged: 3, maxDataRootEntries: 4, messagesPerSecond: 10, messageBurst: 20 };
const OWN = new Set(["srv_ownaaaa", "srv_ownbbbb"]);

const c = (id: string, server?: string, extra: Partial<{ env: Record<string, string>; labels: Record<string, string>; networks: string[] }> = {}) =>
  create(ContainerInfoSchema, { id, labels: { ...(server ? { "berth.server": server } : {}), ...extra.labels }, env: extra.env ?? {}, networks: extra.networks ?? [] });
const dir = (serverId: string) => create(DataDirSchema, { serverId, exists: true });

describe("isPlainDirName", () => {
  it.each([
    ["ok-dir", true],
    ["srv_abcd", true],
    [".hidden", true],
    ["", false],
    [".", false],
    ["..", false],
    ["a/b", false],
    ["a\\b", false],
    ["a\0b", false],
    ["line\nbreak", false],
    ["x".repeat(256), false],
  ])("%j → %s", (name, ok) => expect(isPlainDirName(name)).toBe(ok));
});

describe("boundInventory", () => {
  it("keeps the host's own servers' containers first, caps the others, refuses bad ids", () => {
    const out = boundInventory(
      {
        containers: [c("o1", "srv_othera"), c("o2", "srv_otherb"), c("o3", "srv_otherc"), c("m1", "srv_ownaaaa"), c("bad", "../etc"), c("has space", "srv_ownbbbb")],
        unmanaged: [c("u1"), c("u2"), c("u3"), c("u4")],
        dataDirs: [dir("srv_ownaaaa"), dir("srv_unknowna"), dir("../x")],
        otherDataDirs: ["a", "..", "b/c", "d", "e"],
      },
      OWN,
      LIMITS,
    );
    expect(out.containers.map((x) => x.id)).toEqual(["m1", "o1", "o2"]);
    // 5 stored at most: 3 labelled leave room for 2 unmanaged.
    expect(out.unmanaged.map((x) => x.id)).toEqual(["u1", "u2"]);
    expect(out.dataDirs.map((d) => d.serverId)).toEqual(["srv_ownaaaa"]);
    expect(out.foreignDataDirs?.map((d) => d.serverId)).toEqual(["srv_unknowna"]);
    // 4 entries: 1 own + 1 foreign + 2 names.
    expect(out.otherDataDirs).toEqual(["a", "d"]);
    expect(out.refused).toEqual({ TooManyOtherContainers: 1, BadServerId: 2, BadContainerId: 1, TooManyUnmanaged: 2, BadDataDirName: 2, TooManyDataDirs: 1 });
  });

  it("drops env and command; a container too heavy even then keeps berth's labels only, or is refused", () => {
    expect(slimContainer(c("a", "srv_ownaaaa", { env: { BIG: "x".repeat(100_000) } }))?.env).toEqual({});
    expect(slimContainer(c("a", "srv_ownaaaa", { labels: { junk: "y".repeat(20_000) } }))?.labels).toEqual({ "berth.server": "srv_ownaaaa" });
    expect(slimContainer(c("a", "srv_ownaaaa", { labels: { "berth.junk": "y".repeat(20_000) } }))).toBeUndefined();
    // Network names count too: a host cannot pad a container past the cap with them.
    expect(slimContainer(c("a", "srv_ownaaaa", { networks: Array.from({ length: 2_000 }, (_, i) => `berth-net-padding-${i}`) }))).toBeUndefined();
  });
});

describe("slimContainer and times", () => {
  it.each([
    ["year 10000", { seconds: 253_402_300_800n, nanos: 0 }, false],
    ["before year 1", { seconds: -62_135_596_801n, nanos: 0 }, false],
    ["negative nanos", { seconds: 1n, nanos: -1 }, false],
    ["nanos of more than a second", { seconds: 1n, nanos: 1_000_000_000 }, false],
    ["9999-12-31T23:59:59.999999999Z", { seconds: 253_402_300_799n, nanos: 999_999_999 }, true],
    ["1970", { seconds: 0n, nanos: 0 }, true],
  ])("%s: kept %s, and the container is storable either way", (_name, t, kept) => {
    const slim = slimContainer(create(ContainerInfoSchema, { id: "a", createdTime: t, startedTime: t, finishedTime: t }))!;
    for (const field of [slim.createdTime, slim.startedTime, slim.finishedTime]) expect(field === undefined ? undefined : { seconds: field.seconds, nanos: field.nanos }).toEqual(kept ? t : undefined);
    expect(() => toJsonString(ContainerInfoSchema, slim)).not.toThrow();
  });
});

describe("admitContainer", () => {
  const counts = (total: number, other: number) => () => ({ total, other });
  it.each([
    ["own server, host full", undefined, c("a", "srv_ownaaaa"), true, false, counts(5, 2)],
    ["already stored, host full", undefined, c("a", "srv_othera"), false, true, counts(5, 2)],
    ["new, host full", "TooManyContainers", c("a", "srv_othera"), false, false, counts(5, 0)],
    ["new other, others full", "TooManyOtherContainers", c("a", "srv_othera"), false, false, counts(3, 2)],
    ["new other, room", undefined, c("a", "srv_othera"), false, false, counts(3, 1)],
    ["bad server id", "BadServerId", c("a", "srv_../x"), false, false, counts(0, 0)],
    ["bad container id", "BadContainerId", c("-x", "srv_ownaaaa"), true, false, counts(0, 0)],
  ] as const)("%s → %s", (_what, want, container, own, stored, cts) => {
    expect(admitContainer(container, { own, alreadyStored: () => stored, counts: cts }, LIMITS)).toBe(want);
  });
});

describe("TokenBucket as a host's message budget", () => {
  it("allows a burst, then the sustained rate, by cost", () => {
    const b = new TokenBucket(10, 20, 0);
    let ok = 0;
    for (let i = 0; i < 30; i++) if (b.take(0, 1)) ok++;
    expect(ok).toBe(20);
    expect(b.take(50, 1)).toBe(false);
    expect(b.take(100, 1)).toBe(true);
    expect(b.take(200, 5)).toBe(false);
    expect(b.take(1_000, 5)).toBe(true);
  });
});
