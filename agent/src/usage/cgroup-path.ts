/**
 * Where a process's cgroup lives, from the text of `/proc/<pid>/cgroup`.
 *
 * cgroup v2 (one unified hierarchy): a single line `0::/system.slice/docker-<id>.scope`
 * (systemd driver) or `0::/docker/<id>` (cgroupfs driver); every controller's
 * files are in `/sys/fs/cgroup/<path>`.
 *
 * cgroup v1: one line per hierarchy, `<id>:<controllers>:<path>`, e.g.
 * `4:memory:/docker/<id>` → `/sys/fs/cgroup/memory/docker/<id>`. Controllers
 * mounted together share a line and a directory (`3:cpu,cpuacct:/docker/<id>` →
 * `/sys/fs/cgroup/cpu,cpuacct/docker/<id>`). A hybrid host has both kinds of line,
 * its `0::` hierarchy carrying no controllers: the v1 lines are the ones to read,
 * so v2 is used only when no v1 controller line is present.
 */

/** The controllers whose files the usage sampler reads. */
export type UsageController = "cpu" | "memory" | "pids" | "io";

/** One controller's directory and the file layout to expect in it. */
export interface CgroupDir {
  version: 1 | 2;
  dir: string;
}

/** The directories to read, per controller; a controller the process is not in is absent. */
export type CgroupDirs = Partial<Record<UsageController, CgroupDir>>;

/** The parsed file: the v2 path (the `0::` line) and each v1 controller's line. */
export interface ProcCgroup {
  unified?: string;
  /** Controller name → { the line's controller list, as the hierarchy's directory name; the path }. */
  v1: Map<string, { mount: string; path: string }>;
}

/** Parses `/proc/<pid>/cgroup`; lines that do not have the `id:controllers:path` shape are skipped. */
export function parseProcCgroup(text: string): ProcCgroup {
  const v1 = new Map<string, { mount: string; path: string }>();
  let unified: string | undefined;
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = first < 0 ? -1 : line.indexOf(":", first + 1);
    if (second < 0) continue;
    const id = line.slice(0, first);
    const controllers = line.slice(first + 1, second);
    // A path may itself contain ":" (rare, but legal in a directory name).
    const path = line.slice(second + 1).trim();
    if (!/^\d+$/.test(id) || !path.startsWith("/")) continue;
    if (id === "0" && controllers === "") {
      unified = path;
      continue;
    }
    for (const c of controllers.split(",")) {
      // Named hierarchies (name=systemd) carry no resource files.
      if (c === "" || c.startsWith("name=")) continue;
      v1.set(c, { mount: controllers, path });
    }
  }
  return { ...(unified !== undefined ? { unified } : {}), v1 };
}

/** v1 controller names that hold each usage's files, the first present wins. */
const V1_CONTROLLERS: Record<UsageController, readonly string[]> = {
  cpu: ["cpuacct", "cpu"],
  memory: ["memory"],
  pids: ["pids"],
  io: ["blkio"],
};

/**
 * The directory of each controller under `root` (default `/sys/fs/cgroup`).
 * Paths are joined textually; a path with `..` in it is refused (the file is
 * the kernel's, but a reader should not be walked out of the cgroup tree).
 */
export function cgroupDirs(parsed: ProcCgroup, root = "/sys/fs/cgroup"): CgroupDirs {
  const base = root.replace(/\/+$/, "");
  const join = (...parts: string[]) => [base, ...parts.map((p) => p.replace(/^\/+|\/+$/g, "")).filter((p) => p !== "")].join("/");
  const safe = (path: string) => !path.split("/").includes("..");
  const dirs: CgroupDirs = {};
  if (parsed.v1.size > 0) {
    for (const usage of Object.keys(V1_CONTROLLERS) as UsageController[]) {
      for (const name of V1_CONTROLLERS[usage]) {
        const line = parsed.v1.get(name);
        if (!line || !safe(line.path)) continue;
        dirs[usage] = { version: 1, dir: join(line.mount, line.path) };
        break;
      }
    }
    return dirs;
  }
  if (parsed.unified !== undefined && safe(parsed.unified)) {
    const dir = join(parsed.unified);
    for (const usage of Object.keys(V1_CONTROLLERS) as UsageController[]) dirs[usage] = { version: 2, dir };
  }
  return dirs;
}
