import { lchown, lstat } from "node:fs/promises";
import { basename } from "node:path";

/** The host uid and gid a container's root runs as. */
export interface HostIdentity {
  uid: number;
  gid: number;
}

/**
 * Under Docker's `userns-remap`, the host identity of every container's
 * root; undefined when the engine does not remap users. Docker does not
 * report the range in `docker info`, but it keeps a remapped engine's state
 * in `<data-root>/<uid>.<gid>` (the first subuid and subgid of the remap
 * user), and that path is `DockerRootDir`. Pure; throws when the engine
 * says it remaps but its root dir does not name the identity.
 */
export function remappedRoot(info: { SecurityOptions?: string[] | null; DockerRootDir?: string }): HostIdentity | undefined {
  const remaps = (info.SecurityOptions ?? []).some((o) => o.split(",").includes("name=userns"));
  if (!remaps) return undefined;
  const m = /^(\d+)\.(\d+)$/.exec(basename(info.DockerRootDir ?? ""));
  if (!m) {
    throw new Error(
      `the Docker engine remaps users (userns-remap) but its root dir ${JSON.stringify(info.DockerRootDir ?? "")} does not end in <uid>.<gid>; ` +
        `berth cannot tell which host uid a container's root has`,
    );
  }
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

/**
 * Gives a server's data directory to the container's root when the engine
 * remaps users: the agent creates it owned by host root (0:0), which a
 * remapped root cannot write. Only a directory still owned by 0:0 changes
 * hands, and only the directory itself: what is inside belongs to whoever
 * the server made it for (an entrypoint may have chowned it to its own
 * service user). Never follows a symlink. Answers whether it changed it.
 */
export async function giveToContainerRoot(dir: string, owner: HostIdentity): Promise<boolean> {
  const st = await lstat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (st.uid !== 0 || st.gid !== 0) return false;
  await lchown(dir, owner.uid, owner.gid);
  return true;
}
