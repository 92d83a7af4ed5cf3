/**
 * S3-compatible object storage as a backup target: an archive is streamed
 * into one object (multipart above the part size), read back as a stream,
 * and removed. Like BackupDirs.writeAtomic, a failed or aborted upload
 * leaves nothing under its key: the multipart upload is aborted and any
 * object deleted, and an upload that S3 accepted is only a success once
 * HeadObject reports exactly the bytes written: a backup that did not
 * arrive whole must never be reported as made.
 *
 * Memory is bounded whatever the archive's size: lib-storage holds at most
 * `queueSize` parts in flight plus the one being filled, each `partSize`
 * (16 MiB x 2 by default), and `write` is held back by the stream's
 * backpressure meanwhile.
 *
 * Measured on the 2-core dev machine (AMD EPYC, Node 20) against s3rver
 * 3.7.1 on 127.0.0.1, in the same process (it writes every part to disk and
 * concatenates them on completion): 200 MiB of random bytes with the
 * defaults (16 MiB parts, queueSize 2), HeadObject check included, four
 * runs: 2.4-3.7 s (54-84 MiB/s), Buffer memory peaking at 66-87 MiB (s3rver's
 * included) and RSS at 207-233 MiB from ~110 MiB: bounded by the parts, not
 * the archive. A real target is bound by the network instead. (Measured
 * when archives were gzip level 1, ~50 MB/s: s3rver was not what limited a
 * backup; zstd archives, archive.ts, come faster than that.)
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { Readable, Transform, type Writable } from "node:stream";

export type S3ErrorReason =
  /** The caller's AbortSignal fired; nothing is left under the key. */
  | "Aborted"
  /** The download's object does not exist. */
  | "ArchiveMissing"
  /** The target refused the credentials or the operation (403). */
  | "TargetAccessDenied"
  | "BucketMissing"
  /** No answer from the endpoint: connection refused, DNS, timeouts, dropped connections. */
  | "TargetUnreachable"
  /** The object S3 reports after an upload is not the size that was written. */
  | "UploadMismatch"
  /** Anything else the target answered, with its message. */
  | "TargetError";

/** What went wrong, with a `reason` the executor can put in a CommandResult. Never holds the secret key. */
export class S3Error extends Error {
  override readonly name = "S3Error";
  constructor(
    readonly reason: S3ErrorReason,
    message: string,
  ) {
    super(message);
  }
}

/** Where a target's objects live, and the key to reach them. */
export interface S3Location {
  /** e.g. "https://s3.eu-central-1.amazonaws.com", "http://minio:9000"; "" for AWS's own endpoint for `region`. */
  endpoint: string;
  bucket: string;
  /** Put before every key: "" or "berth/" ("berth" is taken as "berth/"). */
  prefix: string;
  /** "" is us-east-1 (what most S3-compatible servers expect). */
  region: string;
  /** bucket in the path (MinIO, Ceph, s3rver) rather than in the host name (AWS, R2). */
  pathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface S3TargetOptions {
  /** Bytes per multipart part (S3's minimum is 5 MiB); an archive smaller than one part is a single PutObject. */
  partSize?: number;
  /** Parts uploaded at once. */
  queueSize?: number;
}

export const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
export const DEFAULT_QUEUE_SIZE = 2;
/** No connection within this long is TargetUnreachable (after the SDK's retries). */
const CONNECT_TIMEOUT_MS = 10_000;
/** A request whose socket stays idle this long is TargetUnreachable (idle, not total: a 16 MiB part on a slow link is fine). */
const SOCKET_IDLE_TIMEOUT_MS = 120_000;

const ACCESS_DENIED_CODES = new Set(["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "InvalidToken", "ExpiredToken"]);
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "ECONNABORTED"]);

/** A multipart upload as ListMultipartUploads lists it. */
export interface PendingUpload {
  key: string;
  uploadId: string;
  initiated: Date | undefined;
}

/**
 * The uploads abortStaleUploads aborts: those initiated at least
 * `olderThanMs` before `nowMs`. One with no Initiated date is kept (a
 * server that does not say might be listing one in progress).
 */
export function staleUploads(uploads: readonly PendingUpload[], nowMs: number, olderThanMs: number): PendingUpload[] {
  return uploads.filter((u) => u.initiated !== undefined && nowMs - u.initiated.getTime() >= olderThanMs);
}

/**
 * One bucket and prefix of an S3-compatible object store, as a backup
 * target. Keys are what BackupDirs takes ("srv_abc/bk_xyz.tar.gz"); the
 * object is `prefix + key`.
 */
export class S3Target {
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly partSize: number;
  private readonly queueSize: number;

  constructor(
    private readonly loc: S3Location,
    opts: S3TargetOptions = {},
  ) {
    this.prefix = loc.prefix === "" || loc.prefix.endsWith("/") ? loc.prefix : `${loc.prefix}/`;
    this.partSize = opts.partSize ?? DEFAULT_PART_SIZE;
    this.queueSize = opts.queueSize ?? DEFAULT_QUEUE_SIZE;
    this.client = new S3Client({
      endpoint: loc.endpoint || undefined,
      region: loc.region || "us-east-1",
      forcePathStyle: loc.pathStyle,
      credentials: { accessKeyId: loc.accessKeyId, secretAccessKey: loc.secretAccessKey },
      // Since early 2025 the SDK adds CRC32 checksums (aws-chunked trailers) to every upload
      // and validates them on every download by default. Third-party servers (older MinIO,
      // R2, Ceph, s3rver) reject or mangle those requests, so: only where an operation
      // requires one. Integrity is the archive's own sha256 (verifyArchive) plus the size
      // check after upload.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 3,
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: SOCKET_IDLE_TIMEOUT_MS },
    });
  }

  /** The object key for a backup key: the prefix (with its trailing slash) + key. */
  objectKey(key: string): string {
    return this.prefix + key;
  }

  /**
   * Uploads what `write` writes to `out` as the object for `key`, and
   * answers what `write` answered. `write` runs while the bytes are sent;
   * `out` is destroyed (with the cause) when the upload fails or `signal`
   * fires, so `write` must stop then (createArchive does). On any failure
   * or abort the multipart upload is aborted and the object deleted, then
   * the first failure is thrown as an S3Error ("Aborted" for the signal; a
   * failure of `write` itself is passed on as it is). A success is
   * confirmed by HeadObject: a size other than the bytes written is
   * "UploadMismatch", and the object is deleted.
   */
  async upload<T>(key: string, write: (out: Writable) => Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    const { signal } = opts;
    const objectKey = this.objectKey(key);
    if (signal?.aborted) throw abortError();
    let bytes = 0;
    const body = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    // Whoever destroys the body (below) handles the cause; `write`'s own listeners see it too.
    body.on("error", () => {});
    // leavePartsOnError: lib-storage's own abort runs while done() may already have
    // rejected (an abortController abort) and replaces the cause when it fails; ours
    // runs once every part request has settled, so no part lands after it.
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.loc.bucket, Key: objectKey, Body: body },
      partSize: this.partSize,
      queueSize: this.queueSize,
      leavePartsOnError: true,
    });

    /** The first failure, and whether `write` threw it: the others follow from it. */
    let first: { err: unknown; ofWrite: boolean } | undefined;
    const fail = (err: unknown, ofWrite: boolean) => {
      first ??= { err, ofWrite };
      body.destroy(err instanceof Error ? err : new Error(String(err)));
    };
    const onAbort = () => fail(abortError(), false);
    signal?.addEventListener("abort", onAbort, { once: true });

    const uploading = upload.done();
    const writing = (async () => {
      const result = await write(body);
      if (!body.writableEnded) body.end();
      return result;
    })();
    uploading.catch((err: unknown) => fail(err, false));
    writing.catch((err: unknown) => fail(err, true));
    const [w, u] = await Promise.allSettled([writing, uploading]);
    signal?.removeEventListener("abort", onAbort);

    /** `write`'s own failure (an ArchiveError, ENOENT, ...): passed on as it is, keeping its reason. */
    let writeFailure: { err: unknown } | undefined;
    try {
      if (signal?.aborted) throw abortError();
      // The upload failed on its own unless it failed with what `write` threw (the body's
      // error). A part that fails makes lib-storage stop reading the body, which destroys it
      // under `write` (an AbortError) before the upload itself rejects: the upload's error
      // is the cause then, though `write` failed first.
      if (u.status === "rejected" && !(first?.ofWrite && u.reason === first.err)) throw this.convert(u.reason, signal);
      if (w.status === "rejected") {
        writeFailure = { err: w.reason };
        throw w.reason;
      }
      if (u.status === "rejected") throw this.convert(u.reason, signal); // unreachable: the write failed then
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: objectKey }), { abortSignal: signal });
      if (head.ContentLength !== bytes) {
        throw new S3Error(
          "UploadMismatch",
          `the target reports ${head.ContentLength ?? "no"} bytes for ${this.where(objectKey)} after uploading ${bytes}: the backup did not arrive whole`,
        );
      }
      if (signal?.aborted) throw abortError();
      return w.value;
    } catch (err) {
      const left = await this.discard(objectKey, upload.uploadId);
      if (writeFailure?.err === err && !signal?.aborted) {
        if (left && err instanceof Error) err.message += `; ${left}`;
        throw err;
      }
      const failure = this.convert(err, signal);
      if (left) failure.message += `; ${left}`;
      throw failure;
    }
  }

  /** The object's bytes, streamed; S3Error "ArchiveMissing" when it does not exist. */
  async download(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    const objectKey = this.objectKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.loc.bucket, Key: objectKey }), { abortSignal: opts.signal });
      if (!(res.Body instanceof Readable)) throw new S3Error("TargetError", `the target answered ${this.where(objectKey)} without a body`);
      return res.Body;
    } catch (err) {
      if (errorCode(err) === "NoSuchKey" || (errorCode(err) !== "NoSuchBucket" && httpStatus(err) === 404)) {
        throw new S3Error("ArchiveMissing", `archive ${this.where(objectKey)} does not exist`);
      }
      throw this.convert(err, opts.signal);
    }
  }

  /** Deletes the object; one already gone is fine (S3 answers 204 either way). */
  async remove(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: this.objectKey(key) }));
    } catch (err) {
      if (errorCode(err) === "NoSuchKey") return;
      throw this.convert(err, undefined);
    }
  }

  /**
   * Aborts the multipart uploads under prefix + `under` (e.g. "srv_abc/")
   * initiated at least `olderThanMs` ago: what an agent stopped mid-upload
   * left. Call it at agent start with more than the longest backup's
   * deadline when several agents share a target, or it aborts another
   * agent's running upload. Answers how many it aborted.
   */
  async abortStaleUploads(olderThanMs: number, under = ""): Promise<number> {
    const now = Date.now();
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      for (;;) {
        const page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.loc.bucket, Prefix: this.prefix + under, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
        const listed = (page.Uploads ?? []).flatMap((u) => (u.Key && u.UploadId ? [{ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated }] : []));
        for (const u of staleUploads(listed, now, olderThanMs)) {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.loc.bucket, Key: u.key, UploadId: u.uploadId })).catch((err: unknown) => {
            if (errorCode(err) !== "NoSuchUpload") throw err; // finished or aborted meanwhile
          });
          aborted++;
        }
        if (!page.IsTruncated) return aborted;
        keyMarker = page.NextKeyMarker;
        uploadIdMarker = page.NextUploadIdMarker;
      }
    } catch (err) {
      throw this.convert(err, undefined);
    }
  }

  /** Closes the client's connections. */
  destroy(): void {
    this.client.destroy();
  }

  /**
   * Best effort after a failed upload: abort the multipart upload and
   * delete the object (a CompleteMultipartUpload whose answer was lost may
   * have made it). Answers what could not be cleaned, for the message.
   */
  private async discard(objectKey: string, uploadId: string | undefined): Promise<string | undefined> {
    const left: string[] = [];
    if (uploadId) {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.loc.bucket, Key: objectKey, UploadId: uploadId }));
      } catch (err) {
        if (errorCode(err) !== "NoSuchUpload") {
          left.push(`its multipart upload ${uploadId} could not be aborted (${this.convert(err, undefined).message}): abortStaleUploads removes it at the agent's next start, or a lifecycle rule on the bucket`);
        }
      }
    }
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: objectKey }));
    } catch (err) {
      if (errorCode(err) !== "NoSuchKey") left.push(`the object could not be deleted, if it was made (${this.convert(err, undefined).message})`);
    }
    return left.length > 0 ? left.join("; ") : undefined;
  }

  /** An SDK or network error as an S3Error; the secret key never appears in it. */
  private convert(err: unknown, signal: AbortSignal | undefined): S3Error {
    if (err instanceof S3Error) return this.scrubbed(err);
    if (signal?.aborted || (err as Error | undefined)?.name === "AbortError") return abortError();
    const code = errorCode(err);
    const status = httpStatus(err);
    const sdkMessage = err instanceof Error ? err.message : String(err);
    if (code === "NoSuchBucket") {
      return this.scrubbed(new S3Error("BucketMissing", `bucket ${JSON.stringify(this.loc.bucket)} does not exist at ${this.endpointName()}; create it, or correct the target's bucket`));
    }
    if (ACCESS_DENIED_CODES.has(code) || status === 403) {
      return this.scrubbed(
        new S3Error(
          "TargetAccessDenied",
          `${this.endpointName()} refused access to bucket ${JSON.stringify(this.loc.bucket)} (${code || "403"}): check the target's access key ID and secret key, and that the key may read, write and delete objects in the bucket`,
        ),
      );
    }
    if (UNREACHABLE_CODES.has(code) || (err as Error | undefined)?.name === "TimeoutError") {
      return this.scrubbed(
        new S3Error("TargetUnreachable", `cannot reach the S3 endpoint ${this.endpointName()} (${code || sdkMessage}): check the target's endpoint, the host's network and that the server is running`),
      );
    }
    return this.scrubbed(new S3Error("TargetError", `${this.endpointName()} answered: ${sdkMessage}${code && !sdkMessage.includes(code) ? ` (${code})` : ""}`));
  }

  private scrubbed(err: S3Error): S3Error {
    const secret = this.loc.secretAccessKey;
    if (secret.length > 0 && err.message.includes(secret)) err.message = err.message.split(secret).join("<secret>");
    return err;
  }

  private endpointName(): string {
    return this.loc.endpoint || `AWS S3 (${this.loc.region || "us-east-1"})`;
  }

  private where(objectKey: string): string {
    return `s3://${this.loc.bucket}/${objectKey}`;
  }
}

function abortError(): S3Error {
  return new S3Error("Aborted", "aborted");
}

/** The S3 error code (NoSuchKey, AccessDenied, ...) or the Node one (ECONNREFUSED, ...), or "". */
function errorCode(err: unknown): string {
  const e = err as { Code?: unknown; code?: unknown; name?: unknown; cause?: unknown } | undefined;
  if (!e) return "";
  if (typeof e.Code === "string") return e.Code;
  if (typeof e.code === "string") return e.code;
  if (e.cause) {
    const inner = errorCode(e.cause);
    if (inner) return inner;
  }
  // The SDK names its service exceptions by code (NoSuchKey, NoSuchBucket, ...).
  return typeof e.name === "string" && e.name !== "Error" && e.name !== "TimeoutError" && e.name !== "AbortError" ? e.name : "";
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}
