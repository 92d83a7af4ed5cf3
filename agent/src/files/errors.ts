/**
 * What a file operation inside a server's data directory refuses or fails
 * with. Domain code throws FileOpError; the manager converts it once, at the
 * edge (FILE_OP_GRPC_CODE says to which gRPC code).
 */
export type FileOpErrorCode =
  /** The path is not one the file service accepts: NUL, "..", too long. */
  | "invalid_path"
  /** Another argument is out of range: a mode with setuid/setgid, a negative offset, a page token it never issued. */
  | "invalid_argument"
  | "not_found"
  | "exists"
  /** A path component (or a directory operation's target) is a regular file. */
  | "not_a_directory"
  /** A file operation's target is a directory. */
  | "is_a_directory"
  /** A symlink was met where it would have to be followed (or replaced): never. */
  | "symlink_refused"
  /** A device, socket or FIFO was met where it would have to be opened, copied or traversed. */
  | "special_file_refused"
  /** More bytes or entries arrived than the request allows. */
  | "too_large"
  /** The host's free space, less the reserve the agent keeps, would not hold it. */
  | "no_space"
  /** The data directory itself: deleting or renaming it is PurgeServer's job. */
  | "root_refused"
  | "not_empty"
  /** The file changed since the client read it (expectedMtimeMs), or while the upload ran. */
  | "conflict"
  /** An archive holds an entry that would land outside its destination, a link, a device, or is not an archive. */
  | "unsafe_archive"
  /** An upload chunk does not start where the upload's previous chunk ended (the message names the expected offset). */
  | "offset_mismatch"
  /** An upload id that is not open here: finished, failed, abandoned (idle) or of an agent process that restarted. */
  | "upload_unknown"
  /** The agent has as many uploads open as it allows. */
  | "too_many_uploads";

export class FileOpError extends Error {
  override readonly name = "FileOpError";
  constructor(
    readonly code: FileOpErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The gRPC code the manager answers for each FileOpError code. */
export const FILE_OP_GRPC_CODE = {
  invalid_path: "InvalidArgument",
  invalid_argument: "InvalidArgument",
  not_found: "NotFound",
  exists: "AlreadyExists",
  not_a_directory: "FailedPrecondition",
  is_a_directory: "FailedPrecondition",
  symlink_refused: "PermissionDenied",
  special_file_refused: "PermissionDenied",
  too_large: "ResourceExhausted",
  no_space: "ResourceExhausted",
  root_refused: "PermissionDenied",
  not_empty: "FailedPrecondition",
  conflict: "Aborted",
  unsafe_archive: "InvalidArgument",
  offset_mismatch: "FailedPrecondition",
  upload_unknown: "FailedPrecondition",
  too_many_uploads: "ResourceExhausted",
} as const satisfies Record<FileOpErrorCode, string>;

/**
 * The FileOpError for a failed system call on `path` (the user's path, as
 * shown to them), or undefined for errors that are the agent's own
 * (EACCES, EIO, ...): those stay as they are and become Internal.
 */
export function fromErrno(err: unknown, path: string): FileOpError | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case "ENOENT":
      return new FileOpError("not_found", `${path} does not exist`);
    case "EEXIST":
      return new FileOpError("exists", `${path} already exists; delete or rename it first, or choose another name`);
    case "ENOTDIR":
      return new FileOpError("not_a_directory", `${path}: a component of the path is not a directory`);
    case "EISDIR":
      return new FileOpError("is_a_directory", `${path} is a directory`);
    case "ELOOP":
      return new FileOpError("symlink_refused", `${path} is a symlink; the file service never follows symlinks (delete the link, or use the path it points to)`);
    case "ENOTEMPTY":
      return new FileOpError("not_empty", `${path} is a directory that is not empty; delete it recursively, or empty it first`);
    case "ENOSPC":
    case "EDQUOT":
      return new FileOpError("no_space", `no space left on the host's disk for ${path}; free some space and try again`);
    case "ENAMETOOLONG":
      return new FileOpError("invalid_path", `${path} is too long`);
    case "EINVAL":
      return new FileOpError("invalid_argument", `${path}: invalid operation (a directory cannot be moved into itself)`);
    default:
      return undefined;
  }
}

/** `err` as a FileOpError about `path` where it maps to one; otherwise `err` itself. */
export function asFileOpError(err: unknown, path: string): unknown {
  if (err instanceof FileOpError) return err;
  return fromErrno(err, path) ?? err;
}
