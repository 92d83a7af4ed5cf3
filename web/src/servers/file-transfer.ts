/**
 * Moving bytes between the browser and a server's data directory.
 * Uploads are WriteFile sessions of ≤ 1 MiB unary chunks (browsers cannot
 * stream a request): one chunk in flight, each starting at the previous
 * answer's next_offset. Downloads gather ReadFile's stream into a Blob.
 * Both report progress and stop when their signal aborts. No DOM here
 * (the unit tests run in Node).
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { FileInfo, ReadFileRequestSchema, ReadFileResponse, WriteFileRequestSchema, WriteFileResponse } from "@berth/proto/berth/v1/file_pb.js";
import { CHUNK_BYTES, chunksOf } from "./files-model.js";

/** What an upload needs of the FileService client (a fake in tests). */
export interface FileWriter {
  writeFile(req: MessageInitShape<typeof WriteFileRequestSchema>, opts?: { signal?: AbortSignal }): Promise<WriteFileResponse>;
}

/** What a download needs of the FileService client. */
export interface FileReader {
  readFile(req: MessageInitShape<typeof ReadFileRequestSchema>, opts?: { signal?: AbortSignal }): AsyncIterable<ReadFileResponse>;
}

export interface UploadOptions {
  signal?: AbortSignal;
  /** Bytes the manager has taken so far (after each chunk). */
  onProgress?: (sent: number) => void;
  /** The modify_time the writer saw: the manager refuses (Aborted) if the file changed since. */
  expectedModifyTime?: Timestamp | undefined;
  chunkBytes?: number;
}

/**
 * Uploads `data` to `path` (its directory must exist), replacing the file
 * when the last chunk is written. A canceled upload sends no more chunks;
 * the host drops its hidden temporary file after 5 minutes, and the target
 * is never touched. Returns the file as written.
 */
export async function uploadBlob(client: FileWriter, server: string, path: string, data: Blob, opts: UploadOptions = {}): Promise<FileInfo | undefined> {
  let uploadId = "";
  for (const c of chunksOf(data.size, opts.chunkBytes ?? CHUNK_BYTES)) {
    opts.signal?.throwIfAborted();
    const bytes = new Uint8Array(await data.slice(c.offset, c.end).arrayBuffer());
    const req: MessageInitShape<typeof WriteFileRequestSchema> = { server, path, uploadId, offset: BigInt(c.offset), data: bytes, last: c.last };
    if (c.offset === 0) {
      req.size = BigInt(data.size);
      if (opts.expectedModifyTime) req.expectedModifyTime = opts.expectedModifyTime;
    }
    const res = await client.writeFile(req, opts.signal ? { signal: opts.signal } : {});
    // One chunk in flight, answered once written: the manager's next offset is where this chunk ended.
    if (Number(res.nextOffset) !== c.end) throw new Error(`the upload is out of step: the manager expects offset ${res.nextOffset}, this chunk ended at ${c.end}; upload the file again`);
    uploadId = res.uploadId;
    opts.onProgress?.(c.end);
    if (c.last) return res.entry;
  }
  return undefined;
}

export interface Download {
  entry: FileInfo | undefined;
  blob: Blob;
}

/** Reads the whole file into a Blob; `onProgress(received, total)` after each chunk (total from the entry as opened). */
export async function downloadBlob(client: FileReader, server: string, path: string, opts: { signal?: AbortSignal; onProgress?: (received: number, total: number) => void; type?: string } = {}): Promise<Download> {
  const parts: Uint8Array[] = [];
  let entry: FileInfo | undefined;
  let received = 0;
  for await (const m of client.readFile({ server, path }, opts.signal ? { signal: opts.signal } : {})) {
    if (m.entry) entry = m.entry;
    if (m.data.length > 0) {
      parts.push(m.data);
      received += m.data.length;
    }
    opts.onProgress?.(received, Number(entry?.size ?? 0n));
  }
  // Protobuf's bytes are typed over ArrayBufferLike; they are never shared buffers.
  return { entry, blob: new Blob(parts as unknown as ConstructorParameters<typeof Blob>[0], opts.type ? { type: opts.type } : {}) };
}
