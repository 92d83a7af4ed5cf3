import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FileRequestSchema, type FileResult } from "@berth/proto/berth/v1/agent_pb.js";
import { FileType } from "@berth/proto/berth/v1/file_pb.js";
import { DataRoot } from "../data/data-root.js";
import { FILES_WORK_DIR, FileRequests, type FileResultInit } from "./file-requests.js";

const SERVER = "srv_filesa";
let base: string;
let data: string;
let files: FileRequests;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "berth-filereq-"));
  const root = join(base, "root");
  data = join(root, SERVER);
  await mkdir(data, { recursive: true });
  await mkdir(join(base, "outside"));
  await writeFile(join(base, "outside", "secret"), "outside secret");
  files = new FileRequests({ dataRoot: new DataRoot(root), log: pino({ level: "silent" }), reserveBytes: 0, uploadIdleMs: 200, maxUploads: 2 });
});
afterEach(async () => {
  files.closeAll();
  await rm(base, { recursive: true, force: true });
});

type Op = NonNullable<MessageInitShape<typeof FileRequestSchema>["op"]>;
let n = 0;
const ask = (op: Op, maxBytes = 1 << 20, serverId = SERVER) => files.handle(create(FileRequestSchema, { requestId: `r${++n}`, serverId, op, maxBytes: BigInt(maxBytes) }));
const errorOf = (r: FileResultInit) => (r.result?.case === "error" ? r.result.value : undefined);
const value = <C extends FileResult["result"]["case"]>(r: FileResultInit, c: C) => {
  expect(r.result?.case, JSON.stringify(errorOf(r))).toBe(c);
  return r.result!.value as Extract<FileResult["result"], { case: C }>["value"];
};
const chunk = (path: string, offset: number, data: string, more: { uploadId?: string; last?: boolean; size?: number; mtimeMs?: number } = {}): Op => ({
  case: "write",
  value: {
    path,
    offset: BigInt(offset),
    data: Buffer.from(data),
    uploadId: more.uploadId ?? "",
    last: more.last ?? false,
    size: BigInt(more.size ?? 0),
    ...(more.mtimeMs !== undefined ? { expectedModifyTime: timestampFromMs(more.mtimeMs) } : {}),
  },
});
const uploadTemps = async () => (await readdir(data)).filter((f) => f.startsWith(".berth-upload-"));

describe("uploads", () => {
  it("writes a file from chunks that follow each other, replacing it only at the last", async () => {
    await writeFile(join(data, "cfg.txt"), "old");
    const first = value(await ask(chunk("cfg.txt", 0, "hello ")), "write");
    expect(first.uploadId).toMatch(/^upl_/);
    expect(first.nextOffset).toBe(6n);
    expect(await readFile(join(data, "cfg.txt"), "utf8")).toBe("old");
    expect(await uploadTemps()).toHaveLength(1);
    const second = value(await ask(chunk("cfg.txt", 6, "big ", { uploadId: first.uploadId })), "write");
    expect(second.nextOffset).toBe(10n);
    const last = value(await ask(chunk("cfg.txt", 10, "world", { uploadId: first.uploadId, last: true })), "write");
    expect(last.entry?.size).toBe(15n);
    expect(last.entry?.type).toBe(FileType.FILE);
    expect(await readFile(join(data, "cfg.txt"), "utf8")).toBe("hello big world");
    expect(await uploadTemps()).toEqual([]);
    expect(files.openUploads).toBe(0);
  });

  it("refuses a chunk at the wrong offset naming the expected one, and the upload goes on from there", async () => {
    const { uploadId } = value(await ask(chunk("a.bin", 0, "12345")), "write");
    const wrong = errorOf(await ask(chunk("a.bin", 3, "xx", { uploadId })));
    expect(wrong?.code).toBe("offset_mismatch");
    expect(wrong?.message).toContain("expects offset 5");
    value(await ask(chunk("a.bin", 5, "678", { uploadId, last: true })), "write");
    expect(await readFile(join(data, "a.bin"), "utf8")).toBe("12345678");
  });

  it("refuses a continuation without a known upload, and a first chunk past offset 0", async () => {
    expect(errorOf(await ask(chunk("a.bin", 4, "x", { uploadId: "upl_nope" })))?.code).toBe("upload_unknown");
    expect(errorOf(await ask(chunk("a.bin", 4, "x")))?.code).toBe("offset_mismatch");
    // An upload id is bound to its path.
    const { uploadId } = value(await ask(chunk("a.bin", 0, "x")), "write");
    expect(errorOf(await ask(chunk("b.bin", 1, "y", { uploadId })))?.code).toBe("upload_unknown");
  });

  it("drops an upload nobody continues, with its temporary file, and leaves the target as it was", async () => {
    await writeFile(join(data, "keep.txt"), "kept");
    const { uploadId } = value(await ask(chunk("keep.txt", 0, "partial")), "write");
    expect(await uploadTemps()).toHaveLength(1);
    await vi.waitFor(async () => expect(await uploadTemps()).toEqual([]), { timeout: 5_000 });
    expect(files.openUploads).toBe(0);
    expect(errorOf(await ask(chunk("keep.txt", 7, "more", { uploadId, last: true })))?.code).toBe("upload_unknown");
    expect(await readFile(join(data, "keep.txt"), "utf8")).toBe("kept");
  });

  it("stops an upload over maxBytes (too_large) and removes its temporary file", async () => {
    const { uploadId } = value(await ask(chunk("big.bin", 0, "x".repeat(8)), 10), "write");
    expect(errorOf(await ask(chunk("big.bin", 8, "y".repeat(8), { uploadId }), 10))?.code).toBe("too_large");
    expect(await uploadTemps()).toEqual([]);
    expect(errorOf(await ask(chunk("big.bin", 0, "x", { size: 11 }), 10))?.code).toBe("too_large");
  });

  it("refuses more open uploads than allowed", async () => {
    value(await ask(chunk("a", 0, "1")), "write");
    value(await ask(chunk("b", 0, "1")), "write");
    expect(errorOf(await ask(chunk("c", 0, "1")))?.code).toBe("too_many_uploads");
  });

  it("refuses a save over a file changed since it was read (conflict), before anything is written", async () => {
    await writeFile(join(data, "cfg.txt"), "old");
    const r = errorOf(await ask(chunk("cfg.txt", 0, "new", { last: true, mtimeMs: 1_000 })));
    expect(r?.code).toBe("conflict");
    expect(await readFile(join(data, "cfg.txt"), "utf8")).toBe("old");
    expect(files.openUploads).toBe(0);
  });
});

describe("operations", () => {
  it("confines every operation: .. and symlinks out refused, / means the data directory, the root cannot be deleted", async () => {
    await symlink(join(base, "outside"), join(data, "out"));
    expect(errorOf(await ask({ case: "stat", value: { path: "../root" } }))?.code).toBe("invalid_path");
    expect(errorOf(await ask({ case: "list", value: { path: "out" } }))?.code).toBe("symlink_refused");
    expect(errorOf(await ask(chunk("out/secret", 0, "pwned", { last: true })))?.code).toBe("symlink_refused");
    expect(errorOf(await ask({ case: "stat", value: { path: "/etc/passwd" } }))?.code).toBe("not_found");
    expect(errorOf(await ask({ case: "delete", value: { path: "/", recursive: true } }))?.code).toBe("root_refused");
    expect(await readFile(join(base, "outside", "secret"), "utf8")).toBe("outside secret");
  });

  it("lists, makes directories, moves, copies, changes modes and deletes", async () => {
    value(await ask({ case: "mkdir", value: { path: "a/b", parents: true } }), "mkdir");
    await writeFile(join(data, "a", "b", "f.txt"), "f");
    value(await ask({ case: "copy", value: { fromPath: "a", toPath: "a2" } }), "copy");
    value(await ask({ case: "move", value: { fromPath: "a2/b/f.txt", toPath: "g.txt" } }), "move");
    expect(value(await ask({ case: "chmod", value: { path: "g.txt", mode: 0o600 } }), "chmod").entry?.mode).toBe(0o600);
    const list = value(await ask({ case: "list", value: { path: "/" } }), "list");
    expect(list.entries.map((e) => [e.name, e.type])).toEqual([
      ["a", FileType.DIRECTORY],
      ["a2", FileType.DIRECTORY],
      ["g.txt", FileType.FILE],
    ]);
    expect(errorOf(await ask({ case: "delete", value: { path: "a" } }))?.code).toBe("not_empty");
    value(await ask({ case: "delete", value: { path: "a", recursive: true } }), "delete");
    expect((await readdir(data)).sort()).toEqual(["a2", "g.txt"]);
  });

  it("answers not_found for a server whose data directory does not exist on this host", async () => {
    const r = errorOf(await ask({ case: "list", value: { path: "/" } }, 1, "srv_missingx"));
    expect(r?.code).toBe("not_found");
    expect(r?.message).toContain("first started");
  });

  it("sweeps the work directory an earlier agent left", async () => {
    await mkdir(join(base, "root", FILES_WORK_DIR, "copy-x"), { recursive: true });
    await files.sweep();
    expect(await readdir(join(base, "root"))).toEqual([SERVER]);
  });
});
