/**
 * SFTP logins and file work through berth's own API, as the login's token:
 * every SFTP request is an API call (AccessService.WhoAmI, ServerService,
 * FileService) through the manager's routes and interceptors in process, so
 * it is authenticated per call (a revoked token stops at its next request),
 * scoped to the token's project, rate-limited, validated and recorded in the
 * ledger exactly as the same call over gRPC would be.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import type { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { FileType, type FileInfo, type FileService } from "@berth/proto/berth/v1/file_pb.js";
import type { Server, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { parseSftpUser, type SftpEntry, type SftpLogin } from "./sftp-files.js";

export interface SftpClients {
  access: Client<typeof AccessService>;
  servers: Client<typeof ServerService>;
  files: Client<typeof FileService>;
}

/** The chunk size of an upload's WriteFile calls (FileService's most). */
export const UPLOAD_CHUNK_BYTES = 1024 * 1024;

export function apiLogin(api: SftpClients): SftpLogin {
  return async (user, password) => {
    const headers = { authorization: `Bearer ${password}` };
    const { token } = await api.access.whoAmI({}, { headers });
    if (!token) throw new ConnectError("the manager did not say whose token this is", Code.Internal);
    const { server: key, project } = parseSftpUser(user);
    const server = await findServer(api, headers, key, project);
    const id = server.id;
    const call = { headers };
    const files = api.files;
    return {
      label: `token:${token.id}:${token.name} → ${server.spec?.name ?? id}.${server.project}`,
      writable: token.role === Role.OPERATOR || token.role === Role.ADMIN,
      stat: async (path) => entryOf((await files.statFile({ server: id, path }, call)).entry),
      async list(path, pageToken) {
        const r = await files.listFiles({ server: id, path, pageToken }, call);
        return { entries: r.entries.map(entryOf), nextPageToken: r.nextPageToken };
      },
      async *read(path, offset, signal) {
        for await (const r of files.readFile({ server: id, path, offset: BigInt(offset) }, { headers, signal })) if (r.data.length > 0) yield r.data;
      },
      async write(path, data, signal) {
        let uploadId = "";
        let offset = 0;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const send = async (chunk: Buffer, last: boolean) => {
          const r = await files.writeFile({ server: id, path, uploadId, offset: BigInt(offset), data: chunk, last }, { headers, signal });
          uploadId = r.uploadId;
          offset += chunk.length;
        };
        for await (const d of data) {
          pending.push(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
          pendingBytes += d.byteLength;
          while (pendingBytes >= UPLOAD_CHUNK_BYTES) {
            const all = Buffer.concat(pending);
            await send(all.subarray(0, UPLOAD_CHUNK_BYTES), false);
            pending = [all.subarray(UPLOAD_CHUNK_BYTES)];
            pendingBytes = all.length - UPLOAD_CHUNK_BYTES;
          }
        }
        await send(Buffer.concat(pending), true);
      },
      mkdir: async (path) => void (await files.makeDirectory({ server: id, path }, call)),
      async remove(path) {
        const e = entryOf((await files.statFile({ server: id, path }, call)).entry);
        if (e.type === "dir") throw new ConnectError(`/${path} is a directory: remove it with rmdir`, Code.FailedPrecondition);
        await files.deleteFile({ server: id, path }, call);
      },
      async rmdir(path) {
        const e = entryOf((await files.statFile({ server: id, path }, call)).entry);
        if (e.type !== "dir") throw new ConnectError(`/${path} is not a directory`, Code.FailedPrecondition);
        await files.deleteFile({ server: id, path }, call);
      },
      rename: async (from, to) => void (await files.moveFile({ server: id, fromPath: from, toPath: to }, call)),
      chmod: async (path, mode) => void (await files.changeFileMode({ server: id, path, mode }, call)),
    };
  };
}

/**
 * The server `key` (name or id) in `project`. A name is looked up in the
 * project; an id must belong to it. NotFound otherwise, as for anything the
 * token cannot see.
 */
async function findServer(api: SftpClients, headers: Record<string, string>, key: string, project: string): Promise<Server> {
  const byKey = await api.servers.getServer({ id: key }, { headers }).then(
    (r) => r.server,
    (err: unknown) => {
      const code = ConnectError.from(err).code;
      // An all-projects admin's bare name can be ambiguous: the project below decides.
      if (code === Code.NotFound || code === Code.FailedPrecondition || code === Code.InvalidArgument) return undefined;
      throw err;
    },
  );
  if (byKey && byKey.project === project && !byKey.deleteTime) return byKey;
  for (let pageToken = ""; ; ) {
    const page = await api.servers.listServers({ project, pageToken, pageSize: 500 }, { headers });
    const s = page.servers.find((x) => x.spec?.name === key || x.id === key);
    if (s) return s;
    if (!page.nextPageToken) break;
    pageToken = page.nextPageToken;
  }
  throw new ConnectError(`no server "${key}" in project "${project}" that this token can see: log in as <server name or id>.<project>`, Code.NotFound);
}

const TYPES: Record<number, SftpEntry["type"]> = { [FileType.FILE]: "file", [FileType.DIRECTORY]: "dir", [FileType.SYMLINK]: "symlink" };

function entryOf(e: FileInfo | undefined): SftpEntry {
  if (!e) throw new ConnectError("the file API answered without the entry", Code.Internal);
  return { name: e.name, type: TYPES[e.type] ?? "other", size: Number(e.size), mode: e.mode, mtimeMs: e.modifyTime ? timestampMs(e.modifyTime) : 0 };
}
