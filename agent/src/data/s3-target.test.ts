import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import type { Readable, Writable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { S3RVER_KEY, TestS3Server, type S3Request } from "../../testing/s3-server.js";
import { S3Target, staleUploads, type S3Location } from "./s3-target.js";
import { createArchive } from "./archive.js";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MiB = 1024 * 1024;
/** S3's minimum part size: 40 MB is then eight parts. */
const PART = 5 * MiB;

/**
 * Writes `total` random bytes to `out` in 1 MiB chunks, honouring
 * backpressure; `after(written)` runs after each chunk. Answers the sha256.
 */
async function writeRandom(out: Writable, total: number, after?: (written: number) => void | Promise<void>): Promise<string> {
  const hash = createHash("sha256");
  let written = 0;
  while (written < total) {
    const chunk = randomBytes(Math.min(MiB, total - written));
    hash.update(chunk);
    written += chunk.length;
    if (!out.write(chunk)) await once(out, "drain");
    await after?.(written);
  }
  return hash.digest("hex");
}

async function sha256Of(stream: Readable): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** A port of 127.0.0.1 nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** A part of upload `uploadId` has been stored (answered 200). */
function partStored(requests: S3Request[]): boolean {
  return requests.some((r) => r.method === "PUT" && r.query.has("partNumber") && r.status === 200);
}

describe("S3Target against s3rver", () => {
  let s3: TestS3Server;
  const targets: S3Target[] = [];

  beforeAll(async () => {
    s3 = await TestS3Server.start(["backups"]);
  });
  afterAll(async () => {
    for (const t of targets) t.destroy();
    await s3.close();
  });
  afterEach(() => {
    s3.headSizeSkew = 0;
    s3.requests.length = 0;
  });

  function target(loc: Partial<S3Location> = {}): S3Target {
    const t = new S3Target({ endpoint: s3.endpoint, bucket: "backups", prefix: "", region: "", pathStyle: true, ...S3RVER_KEY, ...loc }, { partSize: PART, queueSize: 2 });
    targets.push(t);
    return t;
  }

  /** The multipart upload the requests so far created (CreateMultipartUpload's id, read from its first part). */
  function uploadIdOf(key: string): string {
    const part = s3.requests.find((r) => r.method === "PUT" && r.path === `/backups/${key}` && r.query.has("uploadId"));
    expect(part, `no part of ${key} was uploaded`).toBeDefined();
    return part!.query.get("uploadId")!;
  }

  /**
   * The upload was aborted once every part request of it had been
   * answered (no part lands after the abort).
   */
  function expectAbortedAfterItsParts(key: string): void {
    const id = uploadIdOf(key);
    const aborts = s3.requests.filter((r) => r.method === "DELETE" && r.path === `/backups/${key}` && r.query.get("uploadId") === id);
    expect(aborts.length, "AbortMultipartUpload was not sent").toBeGreaterThan(0);
    const parts = s3.requests.filter((r) => r.method === "PUT" && r.query.get("uploadId") === id);
    for (const p of parts) {
      expect(p.answered, `part ${p.query.get("partNumber")} was still in flight`).toBeDefined();
      expect(p.answered!).toBeLessThan(aborts[0]!.arrived);
    }
  }

  it("objectKey puts the prefix before the key, adding a missing trailing slash", () => {
    expect(target({ prefix: "" }).objectKey("srv_a/bk_1.tar.gz")).toBe("srv_a/bk_1.tar.gz");
    expect(target({ prefix: "nightly/" }).objectKey("srv_a/bk_1.tar.gz")).toBe("nightly/srv_a/bk_1.tar.gz");
    expect(target({ prefix: "nightly" }).objectKey("srv_a/bk_1.tar.gz")).toBe("nightly/srv_a/bk_1.tar.gz");
    expect(target({ prefix: "a/b" }).objectKey("k")).toBe("a/b/k");
  });

  it("uploads 40 MB in parts and downloads the same bytes, under the prefix", async () => {
    const t = target({ prefix: "nightly" });
    const size = 40 * MiB + 12345;
    const written = await t.upload("srv_a/bk_1.tar.gz", (out) => writeRandom(out, size));
    expect(written).toMatch(/^[0-9a-f]{64}$/);
    // Multipart: created, more than one part, completed.
    const key = "/backups/nightly/srv_a/bk_1.tar.gz";
    expect(s3.requests.some((r) => r.method === "POST" && r.path === key && r.query.has("uploads"))).toBe(true);
    expect(s3.requests.filter((r) => r.method === "PUT" && r.path === key && r.query.has("partNumber")).length).toBe(9);
    expect(s3.requests.some((r) => r.method === "HEAD" && r.path === key)).toBe(true);

    expect(await sha256Of(await t.download("srv_a/bk_1.tar.gz"))).toEqual({ sha256: written, bytes: size });
    // The object is at prefix + "/" + key: a target without a prefix sees it there.
    expect((await sha256Of(await target().download("nightly/srv_a/bk_1.tar.gz"))).sha256).toBe(written);
    expect(await s3.pendingUploads("backups")).toEqual([]);
  });

  it("uploads an archive smaller than a part as one object", async () => {
    const t = target();
    const written = await t.upload("srv_a/small.tar.gz", (out) => writeRandom(out, 100_000));
    expect(s3.requests.some((r) => r.query.has("uploads"))).toBe(false);
    expect(await sha256Of(await t.download("srv_a/small.tar.gz"))).toEqual({ sha256: written, bytes: 100_000 });
  });

  it("answers what write answered", async () => {
    const result = await target().upload("srv_a/value.tar.gz", async (out) => {
      out.end("tiny");
      return { files: 3 };
    });
    expect(result).toEqual({ files: 3 });
  });

  it("fails with UploadMismatch and deletes the object when the target reports another size", async () => {
    const t = target();
    s3.headSizeSkew = -1;
    const err = await t.upload("srv_a/short.tar.gz", (out) => writeRandom(out, 12 * MiB)).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "UploadMismatch" });
    expect((err as Error).message).toContain(String(12 * MiB));
    s3.headSizeSkew = 0;
    await expect(t.download("srv_a/short.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
  });

  it("when write throws midway: rejects with its error, aborts the multipart upload after its parts, leaves no object", async () => {
    const t = target();
    const boom = new Error("the data directory vanished");
    const err = await t
      .upload("srv_a/broken.tar.gz", (out) =>
        writeRandom(out, 40 * MiB, (written) => {
          if (written >= 12 * MiB) throw boom;
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBe(boom);
    await expect(t.download("srv_a/broken.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
    expectAbortedAfterItsParts("srv_a/broken.tar.gz");
  });

  it("when the signal fires midway: rejects Aborted, aborts the multipart upload after its parts, leaves no object", async () => {
    const t = target();
    const ac = new AbortController();
    let writtenAfterAbort = 0;
    const err = await t
      .upload(
        "srv_a/aborted.tar.gz",
        (out) =>
          writeRandom(out, 40 * MiB, (written) => {
            if (ac.signal.aborted) writtenAfterAbort++;
            if (written >= 12 * MiB) ac.abort();
          }),
        { signal: ac.signal },
      )
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "Aborted" });
    // `out` was destroyed: write stopped within a chunk or two instead of writing the other 28 MiB.
    expect(writtenAfterAbort).toBeLessThanOrEqual(1);
    await expect(t.download("srv_a/aborted.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
    expectAbortedAfterItsParts("srv_a/aborted.tar.gz");
  });

  it("refuses to start with a signal already aborted", async () => {
    let called = false;
    const err = await target()
      .upload(
        "srv_a/never.tar.gz",
        async () => {
          called = true;
        },
        { signal: AbortSignal.abort() },
      )
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "Aborted" });
    expect(called).toBe(false);
  });

  it("download of a missing key is ArchiveMissing; remove of a missing key succeeds; remove deletes", async () => {
    const t = target({ prefix: "p/" });
    await expect(t.download("srv_a/none.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
    await expect(t.remove("srv_a/none.tar.gz")).resolves.toBeUndefined();
    await t.upload("srv_a/gone.tar.gz", async (out) => void out.end("x"));
    await t.remove("srv_a/gone.tar.gz");
    await expect(t.download("srv_a/gone.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
  });

  it("a bucket that does not exist is BucketMissing", async () => {
    const t = target({ bucket: "no-such-bucket" });
    await expect(t.download("k")).rejects.toMatchObject({ reason: "BucketMissing" });
    await expect(t.upload("k", async (out) => void out.end("x"))).rejects.toMatchObject({ reason: "BucketMissing" });
    await expect(t.remove("k")).rejects.toMatchObject({ reason: "BucketMissing" });
  });

  // s3rver 3.7.1 checks the access key ID but not V4 signatures (authentication.js:
  // "Signature version 4 calculation is unimplemented"): a wrong secret alone passes there.
  it("an unknown access key is TargetAccessDenied, without the secret key in the message", async () => {
    const secret = "wrong-secret-Xq7vP2";
    const t = target({ accessKeyId: "NOBODY", secretAccessKey: secret });
    const err = await t.upload("srv_a/k.tar.gz", (out) => writeRandom(out, 1000)).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "TargetAccessDenied" });
    expect((err as Error).message).toContain("access key");
    expect((err as Error).message).not.toContain(secret);
    const down = await t.download("srv_a/k.tar.gz").catch((e: unknown) => e);
    expect(down).toMatchObject({ reason: "TargetAccessDenied" });
    expect((down as Error).message).not.toContain(secret);
  });

  it("an endpoint nothing listens on is TargetUnreachable, naming the endpoint", async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const t = target({ endpoint });
    const err = await t.upload("srv_a/k.tar.gz", (out) => writeRandom(out, 1000)).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "TargetUnreachable" });
    expect((err as Error).message).toContain(endpoint);
    await expect(t.download("k")).rejects.toMatchObject({ reason: "TargetUnreachable" });
  });

  it("abortStaleUploads: s3rver 3.7.1 has no ListMultipartUploads, which is a TargetError naming NotImplemented", async () => {
    const err = await target().abortStaleUploads(0).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: "TargetError" });
    expect((err as Error).message).toContain("NotImplemented");
  });
});

describe("S3Target when s3rver dies mid-upload", () => {
  let s3: TestS3Server;
  let t: S3Target;

  beforeAll(async () => {
    s3 = await TestS3Server.start(["backups"]);
    t = new S3Target({ endpoint: s3.endpoint, bucket: "backups", prefix: "", region: "", pathStyle: true, ...S3RVER_KEY }, { partSize: PART, queueSize: 2 });
  });
  afterAll(async () => {
    t.destroy();
    await s3.close();
  });

  it("rejects TargetUnreachable, not a success; after a restart there is no object", async () => {
    let stopped = false;
    const err = await t
      .upload("srv_a/crash.tar.gz", (out) =>
        writeRandom(out, 40 * MiB, async () => {
          if (!stopped && partStored(s3.requests)) {
            stopped = true;
            await s3.stop();
          }
        }),
      )
      .catch((e: unknown) => e);
    expect(stopped).toBe(true);
    expect(err).toMatchObject({ reason: "TargetUnreachable" });
    expect((err as Error).message).toContain(s3.endpoint);
    // The server was gone when the upload was to be aborted: the message says what is left and who cleans it.
    const id = uploadIdOfCrash();
    expect((err as Error).message).toContain(`multipart upload ${id} could not be aborted`);
    expect((err as Error).message).toContain("abortStaleUploads");

    await s3.restart();
    await expect(t.download("srv_a/crash.tar.gz")).rejects.toMatchObject({ reason: "ArchiveMissing" });
    // s3rver keeps the parts on disk (it cannot list or abort uploads: see agent/testing/s3-server.ts).
    expect(await s3.pendingUploads("backups")).toEqual([id]);
  });

  it("with an archive being written (createArchive), the server gone before the first part: rejects, never hangs", async () => {
    const src = await mkdtemp(join(tmpdir(), "berth-s3-src-"));
    try {
      for (let i = 0; i < 3; i++) await writeFile(join(src, `blob-${i}`), randomBytes(8 * MiB));
      let stopped = false;
      const err = await t
        .upload("srv_a/archive.tar.gz", (out) =>
          createArchive(src, out, {
            onProgress: (p) => {
              if (!stopped && p.bytesDone > 0) {
                stopped = true;
                void s3.stop();
              }
            },
          }),
        )
        .catch((e: unknown) => e);
      expect(stopped).toBe(true);
      expect(err).toMatchObject({ reason: "TargetUnreachable" });
    } finally {
      await s3.restart().catch(() => {});
      await rm(src, { recursive: true, force: true });
    }
  });

  function uploadIdOfCrash(): string {
    const part = s3.requests.find((r) => r.method === "PUT" && r.path === "/backups/srv_a/crash.tar.gz" && r.query.has("uploadId"));
    return part!.query.get("uploadId")!;
  }
});

describe("staleUploads", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");
  const at = (iso: string) => new Date(iso);
  it.each([
    ["initiated an hour ago, older than 30 min", at("2025-06-01T11:00:00Z"), 30 * 60_000, true],
    ["initiated a minute ago, older than 30 min", at("2025-06-01T11:59:00Z"), 30 * 60_000, false],
    ["exactly the age", at("2025-06-01T11:30:00Z"), 30 * 60_000, true],
    ["any age with 0", at("2025-06-01T12:00:00Z"), 0, true],
    ["no Initiated date", undefined, 0, false],
  ])("%s: %s", (_what, initiated, olderThanMs, stale) => {
    const u = { key: "srv_a/bk.tar.gz", uploadId: "u1", initiated };
    expect(staleUploads([u], now, olderThanMs)).toEqual(stale ? [u] : []);
  });
});
