import type { Role } from "./caller.js";

/**
 * How a procedure authenticates:
 * - `open`: anyone (health checks, server reflection);
 * - `agent`: the agent's own credential, checked by the AgentService handler;
 * - `token`: an operator token with at least `role`.
 */
export type Permission =
  | { readonly auth: "open" }
  | { readonly auth: "agent" }
  | {
      readonly auth: "token";
      /** The least role that may call it. */
      readonly role: Role;
      /** Changes state: counted by the per-token rate limit. */
      readonly mutates: boolean;
      /**
       * Acts on shared infrastructure (hosts, enrollment, orphans) rather than
       * one project's servers, so only an all-projects admin may call it: a
       * project-scoped admin must not remove a host other tenants run on.
       */
      readonly allProjects?: boolean;
    };

const OPEN: Permission = { auth: "open" };
const AGENT: Permission = { auth: "agent" };
const read = (role: Role): Permission => ({ auth: "token", role, mutates: false });
const write = (role: Role): Permission => ({ auth: "token", role, mutates: true });
const infra = (role: Role, mutates: boolean): Permission => ({ auth: "token", role, mutates, allProjects: true });

/**
 * THE permission table: every procedure the manager serves, by
 * "<service type name>/<method name>". The auth interceptor consults it before
 * any handler runs and refuses a procedure that is missing (fail closed);
 * a unit test checks it covers every method of every service descriptor.
 */
export const PERMISSIONS: Readonly<Record<string, Permission>> = {
  // Servers: read for viewers, lifecycle for operators, data destruction for admins.
  "berth.v1.ServerService/GetServer": read("viewer"),
  "berth.v1.ServerService/ListServers": read("viewer"),
  "berth.v1.ServerService/WatchServers": read("viewer"),
  "berth.v1.ServerService/TailLogs": read("viewer"),
  "berth.v1.ServerService/WatchConsole": read("viewer"),
  "berth.v1.ServerService/SendConsoleCommand": write("operator"),
  "berth.v1.ServerService/ExecCommand": write("operator"),
  "berth.v1.ServerService/CreateServer": write("operator"),
  "berth.v1.ServerService/UpdateServer": write("operator"),
  "berth.v1.ServerService/StartServer": write("operator"),
  "berth.v1.ServerService/StopServer": write("operator"),
  "berth.v1.ServerService/PauseServer": write("operator"),
  "berth.v1.ServerService/ResumeServer": write("operator"),
  "berth.v1.ServerService/RestartServer": write("operator"),
  "berth.v1.ServerService/RebuildServer": write("operator"),
  "berth.v1.ServerService/DeleteServer": write("operator"),
  "berth.v1.ServerService/RestoreServer": write("operator"),
  "berth.v1.ServerService/PurgeServer": write("admin"),
  "berth.v1.ServerService/TransferServer": write("operator"),
  "berth.v1.ServerService/CloneServer": write("operator"),
  "berth.v1.ServerService/GetInstallLog": read("viewer"),
  "berth.v1.ServerService/ReinstallServer": write("operator"),

  // A server's data directory: viewers read, operators change. WriteFile is one call per
  // 1 MiB chunk: not counted by the per-token mutation rate limit (--rate-limit would
  // otherwise cap an upload at that many MiB a second); the agent bounds open uploads.
  "berth.v1.UsageService/GetUsage": read("viewer"),
  "berth.v1.UsageService/WatchUsage": read("viewer"),

  "berth.v1.FileService/ListFiles": read("viewer"),
  "berth.v1.FileService/StatFile": read("viewer"),
  "berth.v1.FileService/ReadFile": read("viewer"),
  "berth.v1.FileService/WriteFile": { auth: "token", role: "operator", mutates: false },
  "berth.v1.FileService/MakeDirectory": write("operator"),
  "berth.v1.FileService/MoveFile": write("operator"),
  "berth.v1.FileService/CopyFile": write("operator"),
  "berth.v1.FileService/DeleteFile": write("operator"),
  "berth.v1.FileService/ChangeFileMode": write("operator"),
  "berth.v1.FileService/CreateArchive": write("operator"),
  "berth.v1.FileService/ExtractArchive": write("operator"),

  // Hosts are shared by every project.
  "berth.v1.HostService/ListHosts": read("viewer"),
  "berth.v1.HostService/GetHost": read("viewer"),
  "berth.v1.HostService/ResyncHost": write("operator"),
  "berth.v1.HostService/CreateEnrollmentToken": infra("admin", true),
  "berth.v1.HostService/RemoveHost": infra("admin", true),
  "berth.v1.HostService/CordonHost": infra("admin", true),
  "berth.v1.HostService/DrainHost": infra("admin", true),
  "berth.v1.HostService/UncordonHost": infra("admin", true),
  "berth.v1.HostService/SetHostCapacity": infra("admin", true),

  "berth.v1.AccessService/WhoAmI": read("viewer"),
  "berth.v1.AccessService/CreateToken": write("admin"),
  "berth.v1.AccessService/ListTokens": read("admin"),
  "berth.v1.AccessService/RevokeToken": write("admin"),

  "berth.v1.EventService/ListEvents": read("viewer"),
  "berth.v1.EventService/WatchEvents": read("viewer"),

  "berth.v1.AlertService/ListAlerts": read("viewer"),
  "berth.v1.AlertService/AcknowledgeAlert": write("operator"),
  "berth.v1.AlertService/MuteAlert": write("operator"),

  // Backups: targets are shared infrastructure; backups belong to their server's project.
  "berth.v1.BackupService/CreateBackupTarget": infra("admin", true),
  "berth.v1.BackupService/ListBackupTargets": read("viewer"),
  "berth.v1.BackupService/DeleteBackupTarget": infra("admin", true),
  "berth.v1.BackupService/CreateBackup": write("operator"),
  "berth.v1.BackupService/GetBackup": read("viewer"),
  "berth.v1.BackupService/ListBackups": read("viewer"),
  "berth.v1.BackupService/DeleteBackup": write("operator"),
  "berth.v1.BackupService/LockBackup": write("operator"),
  "berth.v1.BackupService/RestoreBackup": write("operator"),
  // Schedules: read for viewers, changes and runs for operators of the project.
  "berth.v1.ScheduleService/ListSchedules": read("viewer"),
  "berth.v1.ScheduleService/GetSchedule": read("viewer"),
  "berth.v1.ScheduleService/CreateSchedule": write("operator"),
  "berth.v1.ScheduleService/UpdateSchedule": write("operator"),
  "berth.v1.ScheduleService/DeleteSchedule": write("operator"),
  "berth.v1.ScheduleService/RunScheduleNow": write("operator"),
  "berth.v1.ScheduleService/ListScheduleRuns": read("viewer"),
  "berth.v1.ScheduleService/PreviewCron": read("viewer"),

  // Orphans are containers and data no project owns.
  "berth.v1.OrphanService/ListOrphans": infra("admin", false),
  "berth.v1.OrphanService/AdoptOrphan": infra("admin", true),
  "berth.v1.OrphanService/DestroyOrphan": infra("admin", true),
  "berth.v1.OrphanService/ReassignServer": infra("admin", true),

  "berth.v1.AgentService/Enroll": AGENT,
  "berth.v1.AgentService/Connect": AGENT,

  // Templates: viewers read (global and their project's), operators change their project's;
  // the handlers refuse changing a global template to anyone but an all-projects admin.
  // Explore: counting is a read. Saving a private query is a viewer's own
  // bookmark; a shared one or one with an alert needs an operator (the
  // service checks that, and who may change someone else's).
  "berth.v1.QueryService/Aggregate": read("viewer"),
  "berth.v1.SavedQueryService/ListSavedQueries": read("viewer"),
  "berth.v1.SavedQueryService/GetSavedQuery": read("viewer"),
  "berth.v1.SavedQueryService/RunSavedQuery": read("viewer"),
  "berth.v1.SavedQueryService/CreateSavedQuery": write("viewer"),
  "berth.v1.SavedQueryService/UpdateSavedQuery": write("viewer"),
  "berth.v1.SavedQueryService/DeleteSavedQuery": write("viewer"),
  "berth.v1.TemplateService/ListTemplates": read("viewer"),
  "berth.v1.TemplateService/GetTemplate": read("viewer"),
  "berth.v1.TemplateService/RenderTemplate": read("viewer"),
  "berth.v1.TemplateService/CreateTemplate": write("operator"),
  "berth.v1.TemplateService/UpdateTemplate": write("operator"),
  "berth.v1.TemplateService/DeleteTemplate": write("operator"),
  "berth.v1.TemplateService/ImportTemplate": write("operator"),

  "grpc.health.v1.Health/Check": OPEN,
  "grpc.health.v1.Health/Watch": OPEN,
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": OPEN,
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
};

/** The permission of a procedure, or undefined when the table lacks it (refuse). */
export function permissionFor(serviceTypeName: string, methodName: string): Permission | undefined {
  return Object.hasOwn(PERMISSIONS, `${serviceTypeName}/${methodName}`) ? PERMISSIONS[`${serviceTypeName}/${methodName}`] : undefined;
}
