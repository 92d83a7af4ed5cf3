/**
 * Confinement of file operations to one server's data directory.
 *
 * A user path ("world/level.dat", "/world/level.dat", "", "/", ".") is
 * parsed lexically first (parseUserPath): NUL bytes, ".." components and
 * over-long paths or names are refused; "." and empty components are
 * dropped; a leading "/" means the data directory, not the host's root.
 *
 * It is then walked one component at a time from an open descriptor of the
 * data directory, each directory opened with O_DIRECTORY | O_NOFOLLOW
 * through the previous one's descriptor (`/proc/self/fd/<fd>/<name>`: Node
 * has no openat, and that path resolves relative to the open directory, not
 * to whatever its path names now). So a symlink component is never followed
 * (O_NOFOLLOW refuses it: ELOOP or ENOTDIR, then an lstat says which), and a
 * container that swaps a directory for a symlink between our check and our
 * use (it runs beside us and can write its data directory) gains nothing:
 * the descriptor we hold is the directory we checked. The final component is
 * lstat'ed and used through the same descriptor by each operation, which
 * opens files with O_NOFOLLOW and checks the opened descriptor's fstat.
 *
 * Without /proc (not Linux, or /proc not mounted) the walk falls back to
 * absolute paths checked with the same lstat/O_NOFOLLOW rules: still never
 * following a symlink that exists when checked, but open to that swap race.
 */
import { constants, existsSync, type Stats } from "node:fs";
import { lstat, open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { FileOpError } from "./errors.js";

/** Linux's limits: a whole path (bytes), and one component. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const PROC_FD = "/proc/self/fd";
const HAVE_PROC_FD = existsSync(PROC_FD);

/** What an entry is, as the file service reports it. */
export type FileType = "file" | "dir" | "symlink" | "other";

export function fileTypeOf(st: Stats): FileType {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  return "other";
}

/**
 * The components of a user path, relative to the data directory; [] is the
 * data directory itself. Throws FileOpError "invalid_path".
 */
export function parseUserPath(userPath: string): string[] {
  if (typeof userPath !== "string") throw new FileOpError("invalid_path", "a path must be a string");
  const shown = JSON.stringify(userPath.length > 200 ? `${userPath.slice(0, 200)}…` : userPath);
  if (userPath.includes("\0")) throw new FileOpError("invalid_path", `path ${shown} holds a NUL byte`);
  if (Buffer.byteLength(userPath) > PATH_MAX) {
    throw new FileOpError("invalid_path", `path ${shown} is longer than ${PATH_MAX} bytes`);
  }
  const parts = userPath.split("/").filter((p) => p !== "" && p !== ".");
  for (const p of parts) {
    if (p === "..") {
      throw new FileOpError("invalid_path", `path ${shown} has a ".." component; paths are relative to the server's data directory and cannot leave it`);
    }
    if (Buffer.byteLength(p) > NAME_MAX) throw new FileOpError("invalid_path", `path ${shown} has a component longer than ${NAME_MAX} bytes`);
  }
  return parts;
}

/** How a path is shown in messages: "/" + its components, relative to the data directory. */
export function showPath(parts: readonly string[]): string {
  return `/${parts.join("/")}`;
}

/**
 * An open directory inside the data directory, and how to name its entries
 * so that they resolve relative to it (see the module comment).
 */
export class ConfinedDir {
  constructor(
    readonly fh: FileHandle,
    /** Its components relative to the data directory ([] for the data directory). */
    readonly parts: readonly string[],
    /** Its absolute path when it was opened (messages, and the fallback without /proc). */
    readonly abs: string,
  ) {}

  /** A path for the directory itself that resolves to the open descriptor. */
  get path(): string {
    return HAVE_PROC_FD ? `${PROC_FD}/${this.fh.fd}` : this.abs;
  }

  /** A path for the entry `name` (one component) of this directory. */
  at(name: string): string {
    return `${this.path}/${name}`;
  }

  /** The user path of the entry `name`, for messages. */
  show(name?: string): string {
    return showPath(name === undefined ? this.parts : [...this.parts, name]);
  }

  /** lstat of the entry `name`, or undefined when it does not exist. */
  async lstat(name: string): Promise<Stats | undefined> {
    try {
      return await lstat(this.at(name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /**
   * Opens the subdirectory `name` without following a symlink; refuses a
   * missing one (not_found), a file (not_a_directory), a symlink and a
   * device, socket or FIFO, each with its own code.
   */
  async openDir(name: string): Promise<ConfinedDir> {
    const parts = [...this.parts, name];
    try {
      return new ConfinedDir(await open(this.at(name), DIR_FLAGS), parts, join(this.abs, name));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
      if (code !== "ENOTDIR" && code !== "ELOOP") throw err;
      const st = await this.lstat(name);
      if (!st) throw new FileOpError("not_found", `${showPath(parts)} does not exist`);
      throw refuseNonDir(st, parts);
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** The FileOpError for an entry that had to be a directory and is `st`. */
export function refuseNonDir(st: Stats, parts: readonly string[]): FileOpError {
  if (st.isSymbolicLink()) return symlinkRefused(parts);
  if (st.isFile()) return new FileOpError("not_a_directory", `${showPath(parts)} is a file, not a directory`);
  if (st.isDirectory()) return new FileOpError("not_found", `${showPath(parts)} changed while it was opened; try again`);
  return specialRefused(parts);
}

export function symlinkRefused(parts: readonly string[]): FileOpError {
  return new FileOpError(
    "symlink_refused",
    `${showPath(parts)} is a symlink; the file service never follows symlinks (it may point outside the server's data directory): delete the link, or use the path it points to`,
  );
}

export function specialRefused(parts: readonly string[]): FileOpError {
  return new FileOpError("special_file_refused", `${showPath(parts)} is a device, socket or FIFO; the file service only opens regular files and directories`);
}

/**
 * One server's data directory, the only tree its file operations touch.
 * `root` is its absolute path as the agent's DataRoot.safePathFor gives it
 * (the data root above it is the agent's own and trusted).
 */
export class ConfinedRoot {
  constructor(readonly root: string) {}

  /** Opens the data directory itself (refusing a symlink or a non-directory). */
  async openRoot(): Promise<ConfinedDir> {
    try {
      return new ConfinedDir(await open(this.root, DIR_FLAGS), [], this.root);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new FileOpError("not_found", `the server's data directory does not exist yet (it is made when the server is first created or started)`);
      if (code === "ENOTDIR" || code === "ELOOP") throw new FileOpError("symlink_refused", `the server's data directory ${this.root} is not a real directory`);
      throw err;
    }
  }

  /** Opens the directory `parts` (relative to the data directory), component by component; the caller closes it. */
  async openDir(parts: readonly string[]): Promise<ConfinedDir> {
    let dir = await this.openRoot();
    try {
      for (const name of parts) {
        const next = await dir.openDir(name);
        await dir.close();
        dir = next;
      }
      return dir;
    } catch (err) {
      await dir.close();
      throw err;
    }
  }

  /**
   * Runs `fn` with the parent directory of `userPath` open and the last
   * component's name (undefined for the data directory itself, with the
   * data directory as `dir`).
   */
  async withParent<T>(userPath: string, fn: (dir: ConfinedDir, name: string | undefined, parts: string[]) => Promise<T>): Promise<T> {
    const parts = parseUserPath(userPath);
    const dir = await this.openDir(parts.slice(0, -1));
    try {
      return await fn(dir, parts.at(-1), parts);
    } finally {
      await dir.close();
    }
  }

  /**
   * The absolute path of `userPath` after checking every component that
   * exists: none is a symlink or a special file, every one but the last a
   * directory. For callers that must hand a path on (prefer the operations,
   * which keep the directory open while they work).
   */
  async resolve(userPath: string): Promise<string> {
    return this.withParent(userPath, async (dir, name, parts) => {
      if (name === undefined) return this.root;
      const st = await dir.lstat(name);
      if (st?.isSymbolicLink()) throw symlinkRefused(parts);
      if (st && !st.isFile() && !st.isDirectory()) throw specialRefused(parts);
      return join(this.root, ...parts);
    });
  }
}
