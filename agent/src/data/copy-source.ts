import { chmod, lstat, readdir } from "node:fs/promises";
import { join, sep } from "node:path";

/** A container mount AdoptOrphan(move_data) wants copied into the data root. */
export interface CopySource {
  /** bind, volume, tmpfs, ... */
  type: string;
  /** The mount's source with every symlink resolved (realpath). */
  realSource: string;
  readOnly: boolean;
}

/** Never one container's data, whatever mounts it: the system, and homes of many. */
const REFUSED_EXACT = new Set(["/", "/home", "/root", "/var", "/var/lib", "/var/log", "/var/tmp", "/opt", "/srv", "/mnt", "/media", "/tmp"]);
/** The system, its kernel interfaces, engines' own state, credentials: nothing under them is copied. */
const REFUSED_TREES = ["/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/root", "/var/lib/containerd", "/var/lib/berth-agent"];
const DOCKER_ROOT = "/var/lib/docker";
/** A named volume's data, which is fine to copy: /var/lib/docker/volumes/<name>/_data[/...]. */
const DOCKER_VOLUME_DATA = /^\/var\/lib\/docker\/volumes\/[^/]+\/_data(\/|$)/;

function under(path: string, tree: string): boolean {
  return path === tree || path.startsWith(tree + sep);
}

/**
 * Why the agent refuses to copy a mount's source into its data root, or
 * undefined when it may. The agent otherwise never reads outside its data
 * root: a manager (or whoever controls it) must not be able to turn
 * "adopt this container's data" into "copy the host's secrets somewhere a
 * container can mount them". So only a read-write bind mount or volume of a
 * container that already exists, never a system directory, a directory many
 * things live in, or the data root itself or one of its parents.
 */
export function copySourceRefusal(m: CopySource, dataRoot: string): string | undefined {
  const p = m.realSource;
  if (m.type !== "bind" && m.type !== "volume") return `a ${m.type || "unknown"} mount holds no data on the host to copy`;
  if (m.readOnly) return `${p} is mounted read-only, so it is not the container's data (a data mount is read-write)`;
  if (!p.startsWith("/")) return `the mount source "${p}" is not an absolute host path`;
  if (REFUSED_EXACT.has(p)) return `${p} is a system or shared directory, never one container's data`;
  for (const t of REFUSED_TREES) {
    if (under(p, t)) return `${p} is under ${t}, which berth never copies (system files, engine state or credentials)`;
  }
  if (under(p, DOCKER_ROOT) && !DOCKER_VOLUME_DATA.test(p)) return `${p} is Docker's own state (only a volume's _data directory can be copied)`;
  if (under(dataRoot, p)) return `${p} is the data root or one of its parents`;
  return undefined;
}

/** A copied tree holds something berth never hands out (a device node, a FIFO, a socket). */
export class CopyRefusedError extends Error {
  override readonly name = "CopyRefusedError";
}

/** Setuid and setgid: on a file, a way to someone else's identity for whoever runs it. */
const PRIVILEGE_BITS = 0o6000;

/**
 * Makes a freshly copied tree safe to hand to a server (the rule of
 * docs/security.md, "Data that leaves a container"): clears setuid and setgid
 * on every file (a directory keeps setgid, which only picks new files'
 * group), and refuses device nodes, FIFOs and sockets anywhere in it — a
 * device node opens a host device to whoever can reach the file, whatever the
 * container's device rules said. Walks every entry (no cap: a limit would be
 * a place to hide one), never follows symlinks. Run it on a copy that no
 * container can reach yet (the agent's hidden work directory). Answers the
 * files whose bits it cleared, relative to `dir`.
 */
export async function sanitizeCopiedTree(dir: string): Promise<string[]> {
  const stripped: string[] = [];
  const stack = [""];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? join(rel, e.name) : e.name;
      const p = join(dir, r);
      if (e.isSymbolicLink()) continue;
      if (e.isBlockDevice() || e.isCharacterDevice() || e.isFIFO() || e.isSocket()) {
        const kind = e.isBlockDevice() ? "a block device" : e.isCharacterDevice() ? "a character device" : e.isFIFO() ? "a FIFO" : "a socket";
        throw new CopyRefusedError(`${r} is ${kind}: berth never copies device nodes, FIFOs or sockets into a data directory; remove it from the source and try again`);
      }
      if (e.isDirectory()) {
        stack.push(r);
        continue;
      }
      const st = await lstat(p);
      if (st.isFile() && st.mode & PRIVILEGE_BITS) {
        await chmod(p, st.mode & 0o777 & ~PRIVILEGE_BITS);
        stripped.push(r);
      }
    }
  }
  return stripped;
}
