import { randomBytes } from "node:crypto";
import { lstat, rm } from "node:fs/promises";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import type { FileRequest, FileResultSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { ArchiveFormat, FileType, type FileInfoSchema, type WriteFileRequest } from "@berth/proto/berth/v1/file_pb.js";
import type { DataRoot } from "../data/data-root.js";
import { createArchiveFile } from "./archive-create.js";
import { FileOpError } from "./errors.js";
import { extractFile } from "./file-archives.js";
import { ServerFiles, type FileEntry } from "./server-files.js";

export type FileResultInit = MessageInitShape<typeof FileResultSchema>;

/** The agent's work directory for copies and extractions: under the data root, never mounted, swept at start. */
export const FILES_WORK_DIR = ".berth-files";
/** An upload not continued for this long is dropped with its temporary file. */
export const UPLOAD_IDLE_MS = 5 * 60_000;
/** Uploads open at once on one agent: each holds a file and a directory open. */
export const MAX_UPLOADS = 32;

const TYPES: Record<FileEntry["type"], FileType> = { file: FileType.FILE, dir: FileType.DIRECTORY, symlink: FileType.SYMLINK, other: FileType.OTHER };

/** An entry as FileService reports it (mtime to the millisecond: what WriteFile's check compares). */
export function fileInfoOf(e: FileEntry): MessageInitShape<typeof FileInfoSchema> {
  return { name: e.name, type: TYPES[e.type], size: BigInt(e.size), mode: e.mode, modifyTime: timestampFromMs(Math.floor(e.mtimeMs)) };
}

/** The wire form of a failure: a FileOpError's code, or "internal" for the agent's own errors (EACCES, EIO, ...). */
export function fileErrorOf(err: unknown): { code: string; message: string } {
  if (err instanceof FileOpError) return { code: err.code, message: err.message };
  return { code: "internal", message: err instanceof Error ? err.message : String(err) };
}

export interface FileRequestsOptions {
  dataRoot: DataRoot;
  log: Logger;
  /** Free bytes never handed to uploads, copies and extractions (ServerFiles' default when unset). */
  reserveBytes?: number;
  uploadIdleMs?: number;
  maxUploads?: number;
}

/**
 * One upload in progress: ServerFiles.write reads `source`, which yields the
 * chunks WriteFile requests bring, one at a time. A chunk's request is
 * answered once write asked for the next one (the chunk is on disk) or the
 * write failed; the last one once the file was renamed into place.
 */
class Upload {
  /** Bytes received: where the next chunk must start. */
  received = 0;
  /** A chunk being written: its request waits for `taken`. */
  busy = false;
  idle: NodeJS.Timeout | undefined;
  readonly written: Promise<FileEntry>;
  private next: ((v: { data: Uint8Array; taken: () => void } | null | Error) => void) | undefined;
  private queued: { data: Uint8Array; taken: () => void } | null | Error | undefined;

  constructor(
    readonly id: string,
    readonly serverId: string,
    readonly path: string,
    write: (source: AsyncIterable<Uint8Array>) => Promise<FileEntry>,
  ) {
    this.written = write(this.source());
    // Failures reach the chunk waiting on them; none is left unhandled.
    this.written.catch(() => {});
  }

  private async *source(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const item = await new Promise<{ data: Uint8Array; taken: () => void } | null | Error>((resolve) => {
        if (this.queued !== undefined) {
          const q = this.queued;
          this.queued = undefined;
          resolve(q);
        } else this.next = resolve;
      });
      if (item === null) return;
      if (item instanceof Error) throw item;
      yield item.data;
      // Resumed: write() wrote that chunk and asks for the next.
      item.taken();
    }
  }

  private put(item: { data: Uint8Array; taken: () => void } | null | Error): void {
    const next = this.next;
    this.next = undefined;
    if (next) next(item);
    else this.queued = item;
  }

  /** Resolves once `data` is written, rejects with the write's failure. */
  async push(data: Uint8Array): Promise<void> {
    const taken = new Promise<void>((resolve) => this.put({ data, taken: resolve }));
    await Promise.race([taken, this.written.then(() => Promise.reject(new Error("the upload ended before its last chunk")))]);
  }

  /** No more data: resolves with the file once it replaced the target. */
  async finish(): Promise<FileEntry> {
    this.put(null);
    return this.written;
  }

  /** Ends the upload with `err` (its temporary file is removed by write). */
  abort(err: Error): void {
    this.put(err);
  }
}

/**
 * Serves the manager's FileRequests (FileService) on servers' data
 * directories through ServerFiles, confined as docs/console-and-files.md
 * says. Uploads are sessions (WriteFile chunks); reads are log streams
 * (LogStreams.fileRead).
 */
export class FileRequests {
  private readonly uploads = new Map<string, Upload>();
  private readonly idleMs: number;
  private readonly maxUploads: number;

  constructor(private readonly opts: FileRequestsOptions) {
    this.idleMs = opts.uploadIdleMs ?? UPLOAD_IDLE_MS;
    this.maxUploads = opts.maxUploads ?? MAX_UPLOADS;
  }

  /** Removes what copies and extractions of an earlier agent process left (none runs at start). */
  async sweep(): Promise<void> {
    await rm(join(this.opts.dataRoot.root, FILES_WORK_DIR), { recursive: true, force: true });
  }

  /** The ServerFiles of `serverId`'s data directory; not_found when it does not exist on this host. */
  async filesFor(serverId: string): Promise<ServerFiles> {
    const root = await this.opts.dataRoot.safePathFor(serverId);
    const st = await lstat(root).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new FileOpError("not_found", `the server's data directory does not exist on this host (${root}); it is made when the server is first started`);
    }
    return new ServerFiles({
      root,
      workDir: join(this.opts.dataRoot.root, FILES_WORK_DIR),
      ...(this.opts.reserveBytes !== undefined ? { reserveBytes: this.opts.reserveBytes } : {}),
    });
  }

  get openUploads(): number {
    return this.uploads.size;
  }

  /** Answers one request; never throws (failures are FileResult errors). */
  async handle(req: FileRequest): Promise<FileResultInit> {
    const requestId = req.requestId;
    try {
      const op = req.op;
      if (op.case === "write") return { requestId, result: { case: "write", value: await this.write(req.serverId, op.value, Number(req.maxBytes)) } };
      const files = await this.filesFor(req.serverId);
      switch (op.case) {
        case "list": {
          const page = await files.list(op.value.path, { pageSize: op.value.pageSize, ...(op.value.pageToken ? { pageToken: op.value.pageToken } : {}) });
          return { requestId, result: { case: "list", value: { entries: page.entries.map(fileInfoOf), nextPageToken: page.nextPageToken ?? "" } } };
        }
        case "stat":
          return { requestId, result: { case: "stat", value: { entry: fileInfoOf(await files.stat(op.value.path)) } } };
        case "mkdir":
          return { requestId, result: { case: "mkdir", value: { entry: fileInfoOf(await files.mkdir(op.value.path, { parents: op.value.parents })) } } };
        case "move":
          return { requestId, result: { case: "move", value: { entry: fileInfoOf(await files.rename(op.value.fromPath, op.value.toPath, { overwrite: op.value.overwrite })) } } };
        case "copy": {
          const c = await files.copy(op.value.fromPath, op.value.toPath);
          return { requestId, result: { case: "copy", value: { entry: fileInfoOf(c.entry), entries: BigInt(c.entries), bytes: BigInt(c.bytes) } } };
        }
        case "delete":
          await files.delete(op.value.path, { recursive: op.value.recursive });
          return { requestId, result: { case: "delete", value: {} } };
        case "chmod":
          return { requestId, result: { case: "chmod", value: { entry: fileInfoOf(await files.chmod(op.value.path, op.value.mode)) } } };
        case "createArchive": {
          const format = op.value.format === ArchiveFormat.ZIP ? "zip" : op.value.format === ArchiveFormat.TAR_GZ ? "tar.gz" : undefined;
          if (!format) throw new FileOpError("invalid_argument", "format must be ARCHIVE_FORMAT_TAR_GZ or ARCHIVE_FORMAT_ZIP");
          const r = await createArchiveFile(files, op.value.paths, op.value.archivePath, { format, maxBytes: Number(req.maxBytes) });
          return { requestId, result: { case: "createArchive", value: { entry: fileInfoOf(r.entry), entries: BigInt(r.entries), skipped: r.skipped, skippedCount: BigInt(r.skippedCount) } } };
        }
        case "extractArchive": {
          const r = await extractFile(files, op.value.archivePath, op.value.destinationPath, { maxBytes: Number(req.maxBytes) });
          return { requestId, result: { case: "extractArchive", value: { entries: BigInt(r.entries), bytes: BigInt(r.bytes), placed: r.placed } } };
        }
        default:
          throw new FileOpError("invalid_argument", "this agent does not know that file operation; is it older than its manager?");
      }
    } catch (err) {
      const e = fileErrorOf(err);
      if (e.code === "internal") this.opts.log.warn({ server: req.serverId, op: req.op.case, err: e.message }, "file operation failed");
      return { requestId, result: { case: "error", value: e } };
    }
  }

  /**
   * One chunk of an upload: the first (offset 0, no upload id) opens it,
   * each next one must start where the last ended, `last` replaces the file.
   * Any failure ends the upload (its temporary file is removed).
   */
  private async write(serverId: string, req: WriteFileRequest, maxBytes: number) {
    let up: Upload;
    if (!req.uploadId) {
      if (req.offset !== 0n) throw new FileOpError("offset_mismatch", `an upload starts at offset 0 (got ${req.offset}); continuing one needs its upload_id`);
      if (this.uploads.size >= this.maxUploads) throw new FileOpError("too_many_uploads", `this host already has ${this.maxUploads} uploads open; finish one or try again later`);
      if (req.size > BigInt(maxBytes)) throw new FileOpError("too_large", `${req.path}: ${req.size} bytes is more than the ${maxBytes} bytes a file may have here`);
      const files = await this.filesFor(serverId);
      const id = `upl_${randomBytes(12).toString("hex")}`;
      up = new Upload(id, serverId, req.path, (source) =>
        files.write(req.path, source, {
          maxBytes,
          ...(req.expectedModifyTime ? { expectedMtimeMs: timestampMs(req.expectedModifyTime) } : {}),
          ...(req.mode !== undefined ? { mode: req.mode } : {}),
          ...(req.size > 0n ? { sizeHint: Number(req.size) } : {}),
        }),
      );
      this.uploads.set(id, up);
      // A failure before any chunk (a conflict, no space): the upload is over.
      up.written.catch(() => this.drop(up));
    } else {
      const found = this.uploads.get(req.uploadId);
      if (!found || found.serverId !== serverId || found.path !== req.path) {
        throw new FileOpError("upload_unknown", `upload ${req.uploadId} of ${req.path} is not open on this host (finished, failed, idle for more than ${Math.round(this.idleMs / 1000)} s, or the agent restarted); start again at offset 0 without an upload_id`);
      }
      up = found;
      if (up.busy || req.offset !== BigInt(up.received)) {
        throw new FileOpError("offset_mismatch", `upload ${up.id} of ${req.path} expects offset ${up.received}${up.busy ? " once the chunk being written is done" : ""}, not ${req.offset}; send the chunk that starts at ${up.received}`);
      }
    }
    clearTimeout(up.idle);
    up.busy = true;
    up.received += req.data.length;
    try {
      if (req.data.length > 0) await up.push(req.data);
      if (req.last) {
        const entry = await up.finish();
        this.drop(up);
        return { uploadId: up.id, nextOffset: BigInt(up.received), entry: fileInfoOf(entry) };
      }
    } catch (err) {
      this.drop(up);
      up.abort(err instanceof Error ? err : new Error(String(err)));
      await up.written.catch(() => {});
      throw err;
    } finally {
      up.busy = false;
    }
    up.idle = setTimeout(() => {
      this.opts.log.info({ server: serverId, upload: up.id, received: up.received }, "upload abandoned; its temporary file is removed");
      this.drop(up);
      up.abort(new FileOpError("upload_unknown", `upload ${up.id} was idle for more than ${Math.round(this.idleMs / 1000)} s`));
    }, this.idleMs);
    up.idle.unref();
    return { uploadId: up.id, nextOffset: BigInt(up.received) };
  }

  private drop(up: Upload): void {
    clearTimeout(up.idle);
    if (this.uploads.get(up.id) === up) this.uploads.delete(up.id);
  }

  /** The agent stops: every upload ends (their temporary files are removed). Uploads outlive a dropped link: the idle timeout ends those nobody continues. */
  closeAll(): void {
    for (const up of [...this.uploads.values()]) {
      this.drop(up);
      up.abort(new FileOpError("upload_unknown", `upload ${up.id} ended: the agent stopped`));
    }
  }
}
