import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { FileRequestSchema, FileResult } from "@berth/proto/berth/v1/agent_pb.js";
import {
  ChangeFileModeResponseSchema,
  CopyFileResponseSchema,
  CreateArchiveResponseSchema,
  DeleteFileResponseSchema,
  ExtractArchiveResponseSchema,
  ListFilesResponseSchema,
  MakeDirectoryResponseSchema,
  MoveFileResponseSchema,
  ReadFileRequestSchema,
  ReadFileResponseSchema,
  StatFileResponseSchema,
  WriteFileResponseSchema,
  type FileService,
} from "@berth/proto/berth/v1/file_pb.js";
import { actorOf, callerOf, requireRole, type Caller } from "../auth/caller.js";
import type { ServerRecord } from "../domain/records.js";
import { formatBytes } from "../domain/limits.js";
import { PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import { AgentGoneError, FeatureMissingError, type AgentHub } from "../link/agent-hub.js";
import type { Store } from "../store/store.js";
import { fileOpError } from "./file-errors.js";
import { loadVisibleServer } from "./find-server.js";
import { agentLogs } from "./logs.js";
import { invalidArgument, ruleProblems } from "./protovalidate.js";

/** The most bytes one uploaded, archived or extracted file may hold unless --file-max-upload-bytes says otherwise. */
export const DEFAULT_FILE_MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024;
/** How long a quick operation (list, stat, an upload chunk, mkdir, move, delete, chmod) may take on the host. */
const QUICK_ANSWER_MS = 60_000;
/** How long a copy, an archive or an extraction may take on the host before the caller is told to look later. */
const LONG_ANSWER_MS = 30 * 60_000;

export interface FileServiceDeps {
  store: Pick<Store, "getServer" | "findServerByName" | "listServers" | "commit">;
  hub: AgentHub;
  ledger: Pick<Ledger, "op">;
  /** Which hosts are connected to any manager of this database: says why a host is not reachable here. */
  presence?: { isConnected(hostId: string): boolean };
  /** --file-max-upload-bytes. */
  maxUploadBytes?: number;
  /** Test seams. */
  quickAnswerMs?: number;
  longAnswerMs?: number;
  openTimeoutMs?: number;
}

type Op = NonNullable<MessageInitShape<typeof FileRequestSchema>["op"]>;
type ResultOf<C extends FileResult["result"]["case"]> = Extract<FileResult["result"], { case: C }>["value"];

/**
 * `FileService`: one server's data directory, through its host's agent
 * (agent/src/files/file-requests.ts), running or stopped
 * (docs/console-and-files.md#files). Viewers list, stat and read; operators
 * change, and every change that succeeded is a `file.*` ledger event with
 * the actor and the path. The agent's refusals arrive as file error codes
 * and become gRPC codes here (file-errors.ts).
 */
/** Bytes the server's disk quota leaves (its size as last measured), or undefined without a quota. */
function quotaRoom(s: ServerRecord): number | undefined {
  const quota = s.spec.resources?.diskQuotaBytes ?? 0n;
  if (quota === 0n) return undefined;
  return Number(quota - BigInt(s.status.dataSizeBytes));
}

function overQuota(s: ServerRecord, path: string, size: bigint): ConnectError {
  const quota = s.spec.resources?.diskQuotaBytes ?? 0n;
  const used = BigInt(s.status.dataSizeBytes);
  const what = size > 0n ? `${path} (${formatBytes(size)})` : path;
  return new ConnectError(
    `${what}: server "${s.name}" uses ${formatBytes(used)} of its ${formatBytes(quota)} disk quota (resources.disk_quota_bytes, as last measured), so this does not fit; nothing was written: delete files or raise the quota`,
    Code.ResourceExhausted,
  );
}

export function createFileService(deps: FileServiceDeps): ServiceImpl<typeof FileService> {
  const { store, hub, ledger } = deps;
  const maxUploadBytes = deps.maxUploadBytes ?? DEFAULT_FILE_MAX_UPLOAD_BYTES;
  const quickMs = deps.quickAnswerMs ?? QUICK_ANSWER_MS;
  const longMs = deps.longAnswerMs ?? LONG_ANSWER_MS;

  /** The server `key` names, visible to the caller and not deleted. */
  async function serverFor(caller: Caller, key: string, what: string): Promise<ServerRecord> {
    const s = await loadVisibleServer(store, caller, key);
    if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it (ServerService.RestoreServer) to ${what} its files`);
    return s;
  }

  function unreachable(s: ServerRecord): UnavailableError {
    if (deps.presence?.isConnected(s.hostId)) {
      return new UnavailableError(`host ${s.hostId} of server "${s.name}" is connected to another manager of this berth; its files are reached through the manager holding its agent's stream: call there (or retry: agents move between managers when one stops)`);
    }
    return new UnavailableError(`host ${s.hostId} of server "${s.name}" is offline; its files are on that host: try again when it is back`);
  }

  function olderAgent(s: ServerRecord): PreconditionError {
    return new PreconditionError(`the agent of host ${s.hostId} (server "${s.name}") is older than this manager and has no file service; upgrade the agent on that host`);
  }

  /** Sends `op` to the agent of `s`'s host and returns its answer of kind `kind`, or throws the agent's refusal as a gRPC error. */
  async function ask<C extends Exclude<FileResult["result"]["case"], "error" | undefined>>(
    s: ServerRecord,
    kind: C,
    op: Op,
    ctx: HandlerContext,
    opts: { long?: boolean; maxBytes?: number } = {},
  ): Promise<ResultOf<C>> {
    const requestId = newId("file");
    const answer = hub.fileRequest(s.hostId, { requestId, serverId: s.id, op, ...(opts.maxBytes !== undefined ? { maxBytes: BigInt(opts.maxBytes) } : {}) });
    if (!answer) throw unreachable(s);
    const ms = opts.long ? longMs : quickMs;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const r = await Promise.race([
        answer,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new ConnectError(`the host of server "${s.name}" did not answer within ${Math.round(ms / 1000)} s; the operation may still finish there: look with StatFile or ListFiles`, Code.DeadlineExceeded)),
            ms,
          );
          onAbort = () => reject(new ConnectError("the caller went away", Code.Canceled));
          ctx.signal.addEventListener("abort", onAbort, { once: true });
        }),
      ]);
      if (r.result.case === "error") throw fileOpError(r.result.value, s.name);
      if (r.result.case !== kind) throw new ConnectError(`the host of server "${s.name}" answered a ${kind} request with ${r.result.case ?? "nothing"}; is its agent older than this manager?`, Code.Internal);
      return r.result.value as ResultOf<C>;
    } catch (err) {
      if (err instanceof FeatureMissingError) throw olderAgent(s);
      if (err instanceof AgentGoneError) throw new UnavailableError(`the agent of host ${s.hostId} disconnected (${err.message}) before it answered; the operation may or may not have happened there: look, then try again`);
      throw err;
    } finally {
      clearTimeout(timer);
      if (onAbort) ctx.signal.removeEventListener("abort", onAbort);
      hub.forgetFile(requestId);
    }
  }

  /** Appends the ledger event of a change that happened. */
  async function record(s: ServerRecord, caller: Caller, e: { type: FileEventType; message: string; payload: Record<string, unknown> }): Promise<void> {
    await store.commit([ledger.op({ ...e, project: s.project, serverId: s.id, hostId: s.hostId, actor: actorOf(caller) })]);
  }

  return {
    async listFiles(req, ctx) {
      const s = await serverFor(callerOf(ctx), req.server, "list");
      const r = await ask(s, "list", { case: "list", value: req }, ctx);
      return create(ListFilesResponseSchema, r);
    },

    async statFile(req, ctx) {
      const s = await serverFor(callerOf(ctx), req.server, "read");
      return create(StatFileResponseSchema, await ask(s, "stat", { case: "stat", value: req }, ctx));
    },

    async *readFile(req, ctx) {
      // The interceptor checks unary requests only: a streaming call's rules are checked here.
      const problems = ruleProblems(ReadFileRequestSchema, req);
      if (problems.length) throw invalidArgument(problems);
      const s = await serverFor(callerOf(ctx), req.server, "read");
      if (hub.supports(s.hostId, "files") === false) throw olderAgent(s);
      const stream = agentLogs(
        { store, hub, ...(deps.presence ? { presence: deps.presence } : {}), ...(deps.openTimeoutMs !== undefined ? { openTimeoutMs: deps.openTimeoutMs } : {}) },
        s,
        { follow: false, tailLines: 0, fileRead: { path: req.path, offset: req.offset, length: req.length } },
        ctx,
      );
      for await (const e of stream) {
        // A conforming agent stays within the window; bytes left out would corrupt the file.
        if ("dropped" in e) throw new ConnectError(`${e.dropped.bytes} bytes of ${req.path} were lost on the way from the host (its agent sent more than its window); download it again`, Code.DataLoss);
        const c = e.chunk;
        if (c.fileEntry) yield create(ReadFileResponseSchema, { entry: c.fileEntry });
        if (c.data.length > 0) yield create(ReadFileResponseSchema, { data: c.data });
      }
    },

    async writeFile(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "WriteFile");
      if (req.size > BigInt(maxUploadBytes) || req.offset + BigInt(req.data.length) > BigInt(maxUploadBytes)) {
        throw new ConnectError(`${req.path}: a file may hold at most ${maxUploadBytes} bytes here (the manager's --file-max-upload-bytes); nothing was written`, Code.ResourceExhausted);
      }
      const s = await serverFor(caller, req.server, "write");
      // A new upload must fit in what the disk quota leaves; the agent holds the file to that size.
      const room = quotaRoom(s);
      if (room !== undefined && req.offset === 0n && (room <= 0 || req.size > BigInt(room))) throw overQuota(s, req.path, req.size);
      const r = await ask(s, "write", { case: "write", value: req }, ctx, { maxBytes: room === undefined ? maxUploadBytes : Math.min(maxUploadBytes, Math.max(0, room)) });
      if (req.last) await record(s, caller, { type: "file.written", message: `wrote ${req.path} (${r.nextOffset} bytes)`, payload: { path: req.path, bytes: Number(r.nextOffset) } });
      return create(WriteFileResponseSchema, r);
    },

    async makeDirectory(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "MakeDirectory");
      const s = await serverFor(caller, req.server, "change");
      const r = await ask(s, "mkdir", { case: "mkdir", value: req }, ctx);
      await record(s, caller, { type: "file.directory_created", message: `created directory ${req.path}`, payload: { path: req.path } });
      return create(MakeDirectoryResponseSchema, r);
    },

    async moveFile(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "MoveFile");
      const s = await serverFor(caller, req.server, "change");
      const r = await ask(s, "move", { case: "move", value: req }, ctx);
      await record(s, caller, { type: "file.moved", message: `moved ${req.fromPath} to ${req.toPath}${req.overwrite ? " (replacing what was there)" : ""}`, payload: { path: req.fromPath, to: req.toPath, overwrite: req.overwrite } });
      return create(MoveFileResponseSchema, r);
    },

    async copyFile(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CopyFile");
      const s = await serverFor(caller, req.server, "change");
      const r = await ask(s, "copy", { case: "copy", value: req }, ctx, { long: true });
      await record(s, caller, { type: "file.copied", message: `copied ${req.fromPath} to ${req.toPath} (${r.entries} entries, ${r.bytes} bytes)`, payload: { path: req.fromPath, to: req.toPath, entries: Number(r.entries), bytes: Number(r.bytes) } });
      return create(CopyFileResponseSchema, r);
    },

    async deleteFile(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "DeleteFile");
      const s = await serverFor(caller, req.server, "change");
      const r = await ask(s, "delete", { case: "delete", value: req }, ctx, { long: req.recursive });
      await record(s, caller, { type: "file.deleted", message: `deleted ${req.path}${req.recursive ? " (recursively)" : ""}`, payload: { path: req.path, recursive: req.recursive } });
      return create(DeleteFileResponseSchema, r);
    },

    async changeFileMode(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "ChangeFileMode");
      const s = await serverFor(caller, req.server, "change");
      const r = await ask(s, "chmod", { case: "chmod", value: req }, ctx);
      await record(s, caller, { type: "file.mode_changed", message: `changed the mode of ${req.path} to ${req.mode.toString(8).padStart(4, "0")}`, payload: { path: req.path, mode: req.mode } });
      return create(ChangeFileModeResponseSchema, r);
    },

    async createArchive(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateArchive");
      const s = await serverFor(caller, req.server, "change");
      const room = quotaRoom(s);
      if (room !== undefined && room <= 0) throw overQuota(s, req.archivePath, 0n);
      const r = await ask(s, "createArchive", { case: "createArchive", value: req }, ctx, { long: true, maxBytes: room === undefined ? maxUploadBytes : Math.min(maxUploadBytes, room) });
      await record(s, caller, { type: "file.archive_created", message: `archived ${req.paths.join(", ")} into ${req.archivePath} (${r.entries} entries${r.skippedCount > 0n ? `, ${r.skippedCount} left out` : ""})`, payload: {
        path: req.archivePath,
        paths: req.paths,
        entries: Number(r.entries),
      } });
      return create(CreateArchiveResponseSchema, r);
    },

    async extractArchive(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "ExtractArchive");
      const s = await serverFor(caller, req.server, "change");
      const room = quotaRoom(s);
      if (room !== undefined && room <= 0) throw overQuota(s, req.archivePath, 0n);
      const r = await ask(s, "extractArchive", { case: "extractArchive", value: req }, ctx, { long: true, maxBytes: room === undefined ? maxUploadBytes : Math.min(maxUploadBytes, room) });
      const dest = req.destinationPath || "/";
      await record(s, caller, { type: "file.archive_extracted", message: `extracted ${req.archivePath} into ${dest} (${r.entries} entries, ${r.bytes} bytes)`, payload: { path: req.archivePath, to: dest, entries: Number(r.entries), bytes: Number(r.bytes) } });
      return create(ExtractArchiveResponseSchema, r);
    },
  };
}

/** The ledger event types FileService appends (ledger/catalogue.ts). */
type FileEventType = "file.written" | "file.directory_created" | "file.moved" | "file.copied" | "file.deleted" | "file.mode_changed" | "file.archive_created" | "file.archive_extracted";
