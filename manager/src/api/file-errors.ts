import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The gRPC code of each file error code an agent answers (FileError.code,
 * LogChunk.file_error_code): the agent's FileOpError codes, whose mapping
 * is FILE_OP_GRPC_CODE in agent/src/files/errors.ts (a unit test keeps the
 * two equal). A code not listed (an agent newer than this manager, or
 * "internal": the agent's own failure) is Internal.
 */
export const FILE_ERROR_CODE: Readonly<Record<string, Code>> = {
  invalid_path: Code.InvalidArgument,
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  exists: Code.AlreadyExists,
  not_a_directory: Code.FailedPrecondition,
  is_a_directory: Code.FailedPrecondition,
  symlink_refused: Code.PermissionDenied,
  special_file_refused: Code.PermissionDenied,
  too_large: Code.ResourceExhausted,
  no_space: Code.ResourceExhausted,
  root_refused: Code.PermissionDenied,
  not_empty: Code.FailedPrecondition,
  conflict: Code.Aborted,
  unsafe_archive: Code.InvalidArgument,
  offset_mismatch: Code.FailedPrecondition,
  upload_unknown: Code.FailedPrecondition,
  too_many_uploads: Code.ResourceExhausted,
};

/** A file operation's refusal on server `serverName`'s host, as the caller gets it. */
export function fileOpError(e: { code: string; message: string }, serverName: string): ConnectError {
  const code = FILE_ERROR_CODE[e.code];
  if (code === undefined) return new ConnectError(`a file operation on server "${serverName}" failed on its host: ${e.message}`, Code.Internal);
  return new ConnectError(e.message, code);
}
