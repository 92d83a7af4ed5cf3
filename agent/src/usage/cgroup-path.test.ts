import { describe, expect, it } from "vitest";
import { cgroupDirs, parseProcCgroup } from "./cgroup-path.js";

const ID = "3d80c192be059182944dbe37efe9a1781a41ee04221c3d14f676c5b827964d36";

/** Docker's cgroupfs driver on a cgroup v1 host (cpu and cpuacct mounted together, as most distributions do). */
const V1_DOCKER = `12:pids:/docker/${ID}
11:hugetlb:/docker/${ID}
10:net_cls,net_prio:/docker/${ID}
9:perf_event:/docker/${ID}
8:blkio:/docker/${ID}
7:cpuset:/docker/${ID}
6:memory:/docker/${ID}
5:freezer:/docker/${ID}
4:devices:/docker/${ID}
3:cpu,cpuacct:/docker/${ID}
2:rdma:/
1:name=systemd:/docker/${ID}
0::/system.slice/containerd.service
`;

/** Docker's systemd driver on a cgroup v2 host. */
const V2_SYSTEMD = `0::/system.slice/docker-${ID}.scope\n`;

describe("parseProcCgroup and cgroupDirs", () => {
  it("maps a v1 container's controllers to their hierarchies' directories, co-mounted ones by the line's list", () => {
    expect(cgroupDirs(parseProcCgroup(V1_DOCKER))).toEqual({
      cpu: { version: 1, dir: `/sys/fs/cgroup/cpu,cpuacct/docker/${ID}` },
      memory: { version: 1, dir: `/sys/fs/cgroup/memory/docker/${ID}` },
      pids: { version: 1, dir: `/sys/fs/cgroup/pids/docker/${ID}` },
      io: { version: 1, dir: `/sys/fs/cgroup/blkio/docker/${ID}` },
    });
  });

  it("uses the v1 lines on a hybrid host even though a 0:: line is present", () => {
    const parsed = parseProcCgroup(V1_DOCKER);
    expect(parsed.unified).toBe("/system.slice/containerd.service");
    expect(cgroupDirs(parsed).memory?.version).toBe(1);
  });

  it("puts every controller of a v2 container in its unified directory (systemd and cgroupfs drivers)", () => {
    const dir = `/sys/fs/cgroup/system.slice/docker-${ID}.scope`;
    expect(cgroupDirs(parseProcCgroup(V2_SYSTEMD))).toEqual({
      cpu: { version: 2, dir },
      memory: { version: 2, dir },
      pids: { version: 2, dir },
      io: { version: 2, dir },
    });
    expect(cgroupDirs(parseProcCgroup(`0::/docker/${ID}\n`), "/host/sys/fs/cgroup/").cpu).toEqual({ version: 2, dir: `/host/sys/fs/cgroup/docker/${ID}` });
  });

  it("resolves the root cgroup (a process not in any container, or a cgroup namespace's view) to the mount itself", () => {
    expect(cgroupDirs(parseProcCgroup("0::/\n")).memory).toEqual({ version: 2, dir: "/sys/fs/cgroup" });
    expect(cgroupDirs(parseProcCgroup("4:memory:/\n2:cpuacct:/\n")).cpu).toEqual({ version: 1, dir: "/sys/fs/cgroup/cpuacct" });
  });

  it("takes cpuacct for CPU time when cpu and cpuacct are separate hierarchies, and leaves out controllers the process is not in", () => {
    const dirs = cgroupDirs(parseProcCgroup("4:memory:/a\n2:cpuacct:/b\n1:cpu:/c\n"));
    expect(dirs.cpu).toEqual({ version: 1, dir: "/sys/fs/cgroup/cpuacct/b" });
    expect(dirs.pids).toBeUndefined();
    expect(dirs.io).toBeUndefined();
  });

  it("ignores garbage lines, and refuses a path that climbs out of the tree", () => {
    expect(cgroupDirs(parseProcCgroup("garbage\n\x00\x01\nx:memory:/a\n::\n"))).toEqual({});
    expect(cgroupDirs(parseProcCgroup(""))).toEqual({});
    expect(cgroupDirs(parseProcCgroup("0::/../../etc\n"))).toEqual({});
    expect(cgroupDirs(parseProcCgroup("6:memory:/docker/../../x\n8:blkio:/docker/a\n"))).toEqual({ io: { version: 1, dir: "/sys/fs/cgroup/blkio/docker/a" } });
  });
});
