/**
 * FileService's handlers over a real AgentHub whose one session is played
 * by the agent's own FileRequests and LogStreams on a temporary data root
 * (no Docker, no link): what the API answers, records and refuses.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FileResultSchema, LogChunkSchema, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { FileService, ReadFileRequestSchema, type ReadFileResponse } from "@berth/proto/berth/v1/file_pb.js";
import { DataRoot } from "../../../agent/src/data/data-root.js";
import { FILE_OP_GRPC_CODE } from "../../../agent/src/files/errors.js";
import { FileRequests } from "../../../agent/src/files/file-requests.js";
import { LogStreams } from "../../../agent/src/log-streams.js";
import type { ContainerRuntime } from "../../../agent/src/runtime/container-runtime.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { toConnectError } from "../errors.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub, type AgentSession } from "../link/agent-hub.js";
import { newServer, testStore } from "../../testing/store.js";
import { FILE_ERROR_CODE } from "./file-errors.js";
import { createFileService } from "./file-service.js";

const OPERATOR: Caller = { tokenId: "tok_op", name: "ops", role: "operator", project: "default" };
const VIEWER: Caller = { tokenId: "tok_view", name: "watcher", role: "viewer", project: "default" };
const OTHER: Caller = { tokenId: "tok_b", name: "b", role: "operator", project: "team-b" };
const SERVER = "srv_webfiles";

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

let base: string;
let data: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "berth-filesvc-"));
  data = join(base, "root", SERVER);
  await mkdir(data, { recursive: true });
  await mkdir(join(base, "outside"));
  await writeFile(join(base, "outside", "secret"), "outside secret");
  cleanup.push(() => rm(base, { recursive: true, force: true }));
});

/** The manager's FileService with host_aaaa's agent played by the agent's own code over `base`. */
async function setup(opts: { maxUploadBytes?: number; connected?: boolean } = {}) {
  const store = await testStore();
  cleanup.push(() => store.close());
  const ledger = new Ledger(store);
  const hub = new AgentHub();
  await store.commit([
    { op: "host.insert", id: "host_aaaa", name: "a", secretHash: "x", createdAt: 1 },
    { op: "server.insert", server: newServer({ id: SERVER, name: "web", hostId: "host_aaaa", dataInitialized: true }) },
    { op: "server.insert", server: newServer({ id: "srv_goneaway", name: "gone", hostId: "host_aaaa", dataInitialized: true, deletedAt: 5 }) },
  ]);
  const files = new FileRequests({ dataRoot: new DataRoot(join(base, "root")), log: pino({ level: "silent" }), reserveBytes: 0 });
  cleanup.push(() => files.closeAll());
  const sent: ManagerMessage[] = [];
  let streams: LogStreams;
  const session: AgentSession = {
    hostId: "host_aaaa",
    ready: true,
    features: new Set(["files"]),
    lastSeen: Date.now(),
    send(msg) {
      sent.push(msg);
      const b = msg.body;
      if (b.case === "fileRequest") void files.handle(b.value).then((r) => hub.deliverFileResult(session, create(FileResultSchema, r)));
      if (b.case === "logRequest") streams.start(b.value);
      if (b.case === "logCredit") streams.credit(b.value.requestId, b.value.bytes);
      if (b.case === "logCancel") streams.cancel(b.value.requestId);
    },
    close() {},
  };
  streams = new LogStreams({} as ContainerRuntime, async (c) => (hub.deliverLogChunk(session, create(LogChunkSchema, c)), true), pino({ level: "silent" }), files);
  if (opts.connected !== false) hub.attach(session);
  const svc = createFileService({ store, hub, ledger, ...(opts.maxUploadBytes !== undefined ? { maxUploadBytes: opts.maxUploadBytes } : {}) });
  const ctx = (caller: Caller, signal = new AbortController().signal): HandlerContext =>
    createHandlerContext({
      service: FileService,
      method: FileService.method.listFiles,
      protocolName: "connect",
      requestMethod: "POST",
      url: "http://test/berth.v1.FileService/X",
      requestSignal: signal,
      contextValues: createContextValues().set(callerKey, caller),
    });
  const events = async (type?: string) =>
    (await store.listNewestFirst({ project: null, limit: 100 })).filter((e) => !type || e.type === type).map((e) => ({ ...e, payload: JSON.parse(e.payloadJson) as Record<string, unknown> }));
  return { store, hub, svc, ctx, sent, events, session, files };
}

const codeOf = async (p: unknown) => {
  try {
    await p;
    return "OK";
  } catch (err) {
    // As the error interceptor converts them at the edge.
    return Code[toConnectError(err).code];
  }
};
const req = <S extends DescMessage>(s: S, init: MessageInitShape<S>) => create(s, init) as never;

async function download(svc: ReturnType<typeof createFileService>, ctx: HandlerContext, init: MessageInitShape<typeof ReadFileRequestSchema>) {
  const out: ReadFileResponse[] = [];
  for await (const r of svc.readFile(create(ReadFileRequestSchema, init), ctx) as AsyncIterable<ReadFileResponse>) out.push(r);
  return { entry: out[0]?.entry, bytes: Buffer.concat(out.map((r) => r.data)) };
}

describe("FileService", () => {
  it("uploads in chunks and downloads the same bytes, the download paced by the credit window", async () => {
    const { svc, ctx, sent, events } = await setup();
    const content = randomBytes(3 * 1024 * 1024 + 123);
    const op = ctx(OPERATOR);
    let uploadId = "";
    let offset = 0;
    while (offset < content.length) {
      const part = content.subarray(offset, offset + 1024 * 1024);
      const last = offset + part.length === content.length;
      const r = await svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "world.bin", uploadId, offset: BigInt(offset), data: part, last, size: offset === 0 ? BigInt(content.length) : 0n }), op);
      uploadId = r.uploadId ?? "";
      offset = Number(r.nextOffset);
      if (last) expect(r.entry?.size).toBe(BigInt(content.length));
    }
    expect(createHash("sha256").update(await readFile(join(data, "world.bin"))).digest("hex")).toBe(createHash("sha256").update(content).digest("hex"));
    const got = await download(svc, ctx(VIEWER), { server: "web", path: "world.bin" });
    expect(got.entry?.size).toBe(BigInt(content.length));
    expect(got.bytes.equals(content)).toBe(true);
    // The agent was granted credit as the caller read: the window, not the file, bounds what is in flight.
    expect(sent.filter((m) => m.body.case === "logCredit").length).toBeGreaterThan(5);
    // A range.
    const range = await download(svc, ctx(VIEWER), { server: "web", path: "world.bin", offset: 10n, length: 100n });
    expect(range.bytes.equals(content.subarray(10, 110))).toBe(true);
    // One ledger event for the upload, with actor and path.
    const written = await events("file.written");
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({ actor: "token:tok_op:ops", serverId: SERVER, payload: { path: "world.bin", bytes: content.length } });
  });

  it("names the expected offset when a chunk does not follow (FailedPrecondition)", async () => {
    const { svc, ctx } = await setup();
    const r = await svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "a.txt", data: Buffer.from("abc") }), ctx(OPERATOR));
    const err = await Promise.resolve(svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "a.txt", uploadId: r.uploadId ?? "", offset: 1n, data: Buffer.from("x") }), ctx(OPERATOR))).catch((e: unknown) => toConnectError(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((err as ConnectError).rawMessage).toContain("expects offset 3");
  });

  it("refuses a file over the size cap before asking the host (ResourceExhausted)", async () => {
    const { svc, ctx, sent } = await setup({ maxUploadBytes: 1024 * 1024 });
    expect(await codeOf(svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "a.bin", size: 2n * 1024n * 1024n, data: Buffer.from("x") }), ctx(OPERATOR)))).toBe("ResourceExhausted");
    expect(sent).toEqual([]);
  });

  it("records every change with actor and path, and nothing for a refused one or a read", async () => {
    const { svc, ctx, events } = await setup();
    const op = ctx(OPERATOR);
    await writeFile(join(data, "f.txt"), "f");
    await svc.makeDirectory(req(FileService.method.makeDirectory.input, { server: "web", path: "d" }), op);
    await svc.copyFile(req(FileService.method.copyFile.input, { server: "web", fromPath: "f.txt", toPath: "d/g.txt" }), op);
    await svc.moveFile(req(FileService.method.moveFile.input, { server: "web", fromPath: "d/g.txt", toPath: "h.txt" }), op);
    await svc.changeFileMode(req(FileService.method.changeFileMode.input, { server: "web", path: "h.txt", mode: 0o600 }), op);
    await svc.createArchive(req(FileService.method.createArchive.input, { server: "web", paths: ["h.txt"], archivePath: "h.zip", format: 2 }), op);
    await svc.extractArchive(req(FileService.method.extractArchive.input, { server: "web", archivePath: "h.zip", destinationPath: "out" }), op);
    await svc.deleteFile(req(FileService.method.deleteFile.input, { server: "web", path: "d", recursive: true }), op);
    await svc.listFiles(req(FileService.method.listFiles.input, { server: "web", path: "/" }), ctx(VIEWER));
    expect(await codeOf(svc.deleteFile(req(FileService.method.deleteFile.input, { server: "web", path: "nope" }), op))).toBe("NotFound");
    const got = (await events()).reverse().map((e) => [e.type, e.actor, (e.payload as { path: string }).path]);
    expect(got).toEqual([
      ["file.directory_created", "token:tok_op:ops", "d"],
      ["file.copied", "token:tok_op:ops", "f.txt"],
      ["file.moved", "token:tok_op:ops", "d/g.txt"],
      ["file.mode_changed", "token:tok_op:ops", "h.txt"],
      ["file.archive_created", "token:tok_op:ops", "h.zip"],
      ["file.archive_extracted", "token:tok_op:ops", "h.zip"],
      ["file.deleted", "token:tok_op:ops", "d"],
    ]);
    expect(await readFile(join(data, "out", "h.txt"), "utf8")).toBe("f");
  });

  it("maps the agent's refusals to gRPC codes: escapes, symlinks, the root", async () => {
    const { svc, ctx } = await setup();
    await symlink(join(base, "outside"), join(data, "out"));
    const op = ctx(OPERATOR);
    expect(await codeOf(svc.statFile(req(FileService.method.statFile.input, { server: "web", path: "../x" }), op))).toBe("InvalidArgument");
    expect(await codeOf(svc.listFiles(req(FileService.method.listFiles.input, { server: "web", path: "out" }), op))).toBe("PermissionDenied");
    expect(await codeOf(download(svc, op, { server: "web", path: "out/secret" }))).toBe("PermissionDenied");
    expect(await codeOf(svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "out/secret", data: Buffer.from("x"), last: true }), op))).toBe("PermissionDenied");
    expect(await codeOf(svc.deleteFile(req(FileService.method.deleteFile.input, { server: "web", path: "/", recursive: true }), op))).toBe("PermissionDenied");
    expect(await codeOf(download(svc, op, { server: "web", path: "missing" }))).toBe("NotFound");
    expect(await readFile(join(base, "outside", "secret"), "utf8")).toBe("outside secret");
  });

  it("lets a viewer read but not write; another project's token does not see the server", async () => {
    const { svc, ctx, sent } = await setup();
    await writeFile(join(data, "f.txt"), "f");
    expect(await codeOf(svc.statFile(req(FileService.method.statFile.input, { server: "web", path: "f.txt" }), ctx(VIEWER)))).toBe("OK");
    expect(await codeOf(svc.writeFile(req(FileService.method.writeFile.input, { server: "web", path: "f.txt", data: Buffer.from("x"), last: true }), ctx(VIEWER)))).toBe("PermissionDenied");
    expect(await codeOf(svc.deleteFile(req(FileService.method.deleteFile.input, { server: "web", path: "f.txt" }), ctx(VIEWER)))).toBe("PermissionDenied");
    const before = sent.length;
    expect(await codeOf(svc.statFile(req(FileService.method.statFile.input, { server: SERVER, path: "f.txt" }), ctx(OTHER)))).toBe("NotFound");
    expect(sent.length).toBe(before);
    expect(await readFile(join(data, "f.txt"), "utf8")).toBe("f");
  });

  it("answers FailedPrecondition for a deleted server and Unavailable when its host is offline or goes away mid-call", async () => {
    const offline = await setup({ connected: false });
    expect(await codeOf(offline.svc.listFiles(req(FileService.method.listFiles.input, { server: "gone", path: "/" }), offline.ctx(OPERATOR)))).toBe("FailedPrecondition");
    const err = await Promise.resolve(offline.svc.listFiles(req(FileService.method.listFiles.input, { server: "web", path: "/" }), offline.ctx(OPERATOR))).catch((e: unknown) => toConnectError(e));
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect((err as ConnectError).rawMessage).toContain("offline");
    expect(await codeOf(download(offline.svc, offline.ctx(VIEWER), { server: "web", path: "f" }))).toBe("Unavailable");

    // Connected, but the session ends before the agent answers.
    const { svc, ctx, hub, session } = await setup();
    session.send = () => {};
    const pending = svc.listFiles(req(FileService.method.listFiles.input, { server: "web", path: "/" }), ctx(OPERATOR));
    await vi.waitFor(() => expect(hub.pendingFileCount).toBe(1));
    hub.endLogs(session, "agent stream ended");
    expect(await codeOf(pending)).toBe("Unavailable");
    expect(hub.pendingFileCount).toBe(0);
  });

  it("refuses at once (FailedPrecondition) when the host's agent is older than the file service", async () => {
    const { svc, ctx, session, sent, hub } = await setup();
    session.features = new Set();
    const err = await Promise.resolve(svc.listFiles(req(FileService.method.listFiles.input, { server: "web", path: "/" }), ctx(VIEWER))).catch((e: unknown) => toConnectError(e));
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((err as ConnectError).rawMessage).toContain("upgrade the agent");
    expect(await codeOf(download(svc, ctx(VIEWER), { server: "web", path: "f" }))).toBe("FailedPrecondition");
    expect(sent).toEqual([]);
    expect(hub.pendingFileCount).toBe(0);
  });

  it("stops waiting when the caller goes away, forgetting the request", async () => {
    const { svc, ctx, hub, session } = await setup();
    session.send = () => {};
    const ac = new AbortController();
    const pending = svc.statFile(req(FileService.method.statFile.input, { server: "web", path: "x" }), ctx(OPERATOR, ac.signal));
    await vi.waitFor(() => expect(hub.pendingFileCount).toBe(1));
    ac.abort();
    expect(await codeOf(pending)).toBe("Canceled");
    expect(hub.pendingFileCount).toBe(0);
  });

  it("maps every file error code the agent has, as the agent's table says", () => {
    const want = Object.fromEntries(Object.entries(FILE_OP_GRPC_CODE).map(([k, v]) => [k, Code[v as keyof typeof Code]]));
    expect(FILE_ERROR_CODE).toEqual(want);
  });
});
