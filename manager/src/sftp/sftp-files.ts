/**
 * What an SFTP login may do, as the SFTP endpoint sees it: one server's data
 * directory, acting as one berth token. The endpoint (sftp-server.ts) speaks
 * the protocol; an SftpFiles does the work through berth's file API, so the
 * confinement, the roles, the project scoping and the ledger events are the
 * API's own. Errors are ConnectErrors: their codes become SFTP statuses.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { posix } from "node:path";
import { DEFAULT_PROJECT } from "../auth/caller.js";

export type SftpEntryType = "file" | "dir" | "symlink" | "other";

export interface SftpEntry {
  name: string;
  type: SftpEntryType;
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  mtimeMs: number;
}

export interface SftpFiles {
  /** Who logged in to what, for the manager's log: e.g. `token:tok_1:ci → mc.prod`. */
  readonly label: string;
  /** May this login change files (operator or above)? A viewer's login reads only. */
  readonly writable: boolean;
  stat(path: string): Promise<SftpEntry>;
  /** One page of a directory; `nextPageToken` "" on the last. */
  list(path: string, pageToken: string): Promise<{ entries: SftpEntry[]; nextPageToken: string }>;
  /** The file's bytes from `offset` to its end, paced by the consumer; the signal cancels the read. */
  read(path: string, offset: number, signal: AbortSignal): AsyncIterable<Uint8Array>;
  /** Replaces (or creates) the file with `data` once `data` ends; nothing changes if it fails or the signal aborts. */
  write(path: string, data: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<void>;
  mkdir(path: string): Promise<void>;
  /** A file (or a link), never a directory. */
  remove(path: string): Promise<void>;
  /** An empty directory. */
  rmdir(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
}

/**
 * Resolves a login (`user`: `<server name or id>.<project>`, `password`: a
 * berth token) to what it may do; throws Unauthenticated for a bad token,
 * NotFound for a server the token cannot see.
 */
export type SftpLogin = (user: string, password: string) => Promise<SftpFiles>;

/**
 * An SFTP path as berth's file API takes it: relative to the data directory,
 * "" for the directory itself. A client sees the data directory as "/";
 * `..` stops there, as in a chroot, so every path names something inside.
 * (Links that lead out are the file API's to refuse.)
 */
export function dataPath(sftpPath: string): string {
  if (sftpPath.includes("\0")) throw new ConnectError("a path may not contain a NUL byte", Code.InvalidArgument);
  return posix.resolve("/", sftpPath).slice(1);
}

/** `user` split as `<server>.<project>` at its last dot; project "default" when there is no dot. */
export function parseSftpUser(user: string): { server: string; project: string } {
  const dot = user.lastIndexOf(".");
  if (dot < 0) return { server: user, project: DEFAULT_PROJECT };
  return { server: user.slice(0, dot), project: user.slice(dot + 1) };
}
