/**
 * Starts the manager's SFTP endpoint: its host key (kept in a file, or made
 * for this process), logins and file work through the manager's own routes
 * and interceptors in process (api-files.ts).
 */
import { createClient, createRouterTransport, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import type { Logger } from "pino";
import { apiLogin } from "./api-files.js";
import { hostKeyFor, SftpServer } from "./sftp-server.js";

export interface SftpEndpoint {
  server: SftpServer;
  address: { host: string; port: number; fingerprint: string };
}

export async function startSftp(
  cfg: { listen: [string, string]; hostKeyFile?: string },
  routes: (router: ConnectRouter) => void,
  interceptors: Interceptor[],
  log: Logger,
): Promise<SftpEndpoint> {
  const { key, fingerprint } = await hostKeyFor(cfg.hostKeyFile);
  const transport = createRouterTransport(routes, { router: { interceptors } });
  const login = apiLogin({ access: createClient(AccessService, transport), servers: createClient(ServerService, transport), files: createClient(FileService, transport) });
  const server = new SftpServer({ hostKey: key, login, log: log.child({ component: "sftp" }) });
  const [host, port] = cfg.listen;
  const bound = await server.listen(Number(port), host);
  log.info({ sftp: `${host}:${bound.port}`, fingerprint, hostKeyFile: cfg.hostKeyFile ?? "(this process only)" }, "SFTP listening");
  return { server, address: { host, port: bound.port, fingerprint } };
}
