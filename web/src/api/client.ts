/**
 * One Connect transport to the manager that served this page (same origin:
 * Connect, gRPC-Web and gRPC share its port), binary format, with the
 * signed-in token on every call. Clients for every service are made once.
 */
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { QueryService, SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";

export interface Api {
  servers: Client<typeof ServerService>;
  hosts: Client<typeof HostService>;
  events: Client<typeof EventService>;
  alerts: Client<typeof AlertService>;
  access: Client<typeof AccessService>;
  orphans: Client<typeof OrphanService>;
  backups: Client<typeof BackupService>;
  files: Client<typeof FileService>;
  usage: Client<typeof UsageService>;
  templates: Client<typeof TemplateService>;
  schedules: Client<typeof ScheduleService>;
  query: Client<typeof QueryService>;
  savedQueries: Client<typeof SavedQueryService>;
}

/**
 * Clients sending `authorization: Bearer <token>`. `onUnauthenticated` runs
 * when the manager refuses the token (revoked, or another database): the
 * session is over.
 */
export function createApi(token: string, onUnauthenticated: (message: string) => void): Api {
  const auth: Interceptor = (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (err) {
      const e = ConnectError.from(err);
      if (e.code === Code.Unauthenticated) onUnauthenticated(e.rawMessage);
      throw err;
    }
  };
  const transport = createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: true, interceptors: [auth] });
  return {
    servers: createClient(ServerService, transport),
    hosts: createClient(HostService, transport),
    events: createClient(EventService, transport),
    alerts: createClient(AlertService, transport),
    access: createClient(AccessService, transport),
    orphans: createClient(OrphanService, transport),
    backups: createClient(BackupService, transport),
    files: createClient(FileService, transport),
    usage: createClient(UsageService, transport),
    templates: createClient(TemplateService, transport),
    schedules: createClient(ScheduleService, transport),
    query: createClient(QueryService, transport),
    savedQueries: createClient(SavedQueryService, transport),
  };
}

/** The manager's message for an error, prefixed with its gRPC code: "FailedPrecondition: port 8080 …". */
export function errorText(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Canceled) return "canceled";
  return `${Code[e.code]}: ${e.rawMessage}`;
}

export function errorCode(err: unknown): Code {
  return ConnectError.from(err).code;
}

export function isAbort(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}
