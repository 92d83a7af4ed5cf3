import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { FileInfoSchema, ReadFileResponseSchema, WriteFileResponseSchema, type WriteFileRequest } from "@berth/proto/berth/v1/file_pb.js";
import { downloadBlob, uploadBlob, type FileReader, type FileWriter } from "./file-transfer.js";

/** A manager that keeps what it is sent, answering each chunk like WriteFile does. */
function fakeWriter(opts: { skew?: number; onChunk?: (n: number) => void } = {}) {
  const sent: Partial<WriteFileRequest>[] = [];
  let body = new Uint8Array();
  const client: FileWriter = {
    async writeFile(req) {
      sent.push(req as Partial<WriteFileRequest>);
      opts.onChunk?.(sent.length);
      const data = req.data ?? new Uint8Array();
      const next = new Uint8Array(body.length + data.length);
      next.set(body);
      next.set(data, body.length);
      body = next;
      return create(WriteFileResponseSchema, {
        uploadId: "up-1",
        nextOffset: BigInt(body.length + (opts.skew ?? 0)),
        ...(req.last ? { entry: create(FileInfoSchema, { name: "f", size: BigInt(body.length) }) } : {}),
      });
    },
  };
  return { client, sent, body: () => body };
}

const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7) % 251);

describe("uploadBlob", () => {
  it("sends the file in chunks, each where the last ended; the first opens the upload with the size and the expected time, the rest carry its id", async () => {
    const w = fakeWriter();
    const progress: number[] = [];
    const data = bytes(25);
    const seen = timestampFromMs(1_700_000_000_123);
    const entry = await uploadBlob(w.client, "srv", "world/level.dat", new Blob([data]), { chunkBytes: 10, expectedModifyTime: seen, onProgress: (n) => progress.push(n) });
    expect(w.body()).toEqual(data);
    expect(entry?.size).toBe(25n);
    expect(w.sent.map((r) => [r.offset, r.uploadId, r.last, r.data?.length])).toEqual([
      [0n, "", false, 10],
      [10n, "up-1", false, 10],
      [20n, "up-1", true, 5],
    ]);
    expect(w.sent[0]).toMatchObject({ server: "srv", path: "world/level.dat", size: 25n, expectedModifyTime: seen });
    expect(w.sent[1]!.size).toBeUndefined();
    expect(w.sent[1]!.expectedModifyTime).toBeUndefined();
    expect(progress).toEqual([10, 20, 25]);
  });

  it("an empty file is one last chunk", async () => {
    const w = fakeWriter();
    await uploadBlob(w.client, "srv", "empty", new Blob([]));
    expect(w.sent).toHaveLength(1);
    expect(w.sent[0]).toMatchObject({ offset: 0n, last: true, size: 0n });
  });

  it("canceled, it sends no further chunk (the target is never replaced)", async () => {
    const abort = new AbortController();
    const w = fakeWriter({ onChunk: (n) => n === 2 && abort.abort() });
    await expect(uploadBlob(w.client, "srv", "big", new Blob([bytes(50)]), { chunkBytes: 10, signal: abort.signal })).rejects.toThrow();
    expect(w.sent).toHaveLength(2);
    expect(w.sent.some((r) => r.last)).toBe(false);
  });

  it("stops when the manager expects another offset than where the chunk ended", async () => {
    const w = fakeWriter({ skew: 3 });
    await expect(uploadBlob(w.client, "srv", "f", new Blob([bytes(30)]), { chunkBytes: 10 })).rejects.toThrow(/expects offset 13/);
    expect(w.sent).toHaveLength(1);
  });
});

describe("downloadBlob", () => {
  it("joins the stream's chunks in order and reports progress against the size as opened", async () => {
    const data = bytes(300);
    const client: FileReader = {
      async *readFile(req) {
        expect(req).toMatchObject({ server: "srv", path: "logs/latest.log" });
        yield create(ReadFileResponseSchema, { entry: create(FileInfoSchema, { name: "latest.log", size: 300n }), data: data.subarray(0, 100) });
        yield create(ReadFileResponseSchema, { data: data.subarray(100, 256) });
        yield create(ReadFileResponseSchema, { data: data.subarray(256) });
      },
    };
    const progress: [number, number][] = [];
    const { entry, blob } = await downloadBlob(client, "srv", "logs/latest.log", { onProgress: (r, t) => progress.push([r, t]) });
    expect(entry?.name).toBe("latest.log");
    expect(new Uint8Array(await blob.arrayBuffer())).toEqual(data);
    expect(progress).toEqual([
      [100, 300],
      [256, 300],
      [300, 300],
    ]);
  });
});
