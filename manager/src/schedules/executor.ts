/**
 * The real executor of schedule runs (runner.ts ScheduleExecutor): each task
 * calls the very handler an operator's RPC does (ServerService's
 * SendConsoleCommand, Start/Stop/Restart/RebuildServer, BackupService's
 * CreateBackup), in-process, as a caller with the operator role in the
 * schedule's project and the ledger actor `schedule:<id>`. So the checks,
 * the ledger events, the reconciler's wake-up and the conditions are the
 * same as for a person's call.
 */
import { create } from "@bufbuild/protobuf";
import { createContextValues, createHandlerContext, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { BackupService, CreateBackupRequestSchema } from "@berth/proto/berth/v1/backup_pb.js";
import {
  Phase,
  RebuildServerRequestSchema,
  RestartServerRequestSchema,
  SendConsoleCommandRequestSchema,
  ServerService,
  StartServerRequestSchema,
  StopServerRequestSchema,
} from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";
import type { ScheduleRecord } from "./records.js";
import type { ScheduleExecutor } from "./runner.js";

export interface ExecutorDeps {
  store: Store;
  servers: Partial<ServiceImpl<typeof ServerService>>;
  backups: Pick<ServiceImpl<typeof BackupService>, "createBackup">;
}

/** The caller a schedule's tasks act as: operator in its project, recorded as `schedule:<id>`. */
export function scheduleCaller(s: ScheduleRecord): Caller {
  return { tokenId: "", name: `schedule ${s.name}`, role: "operator", project: s.project, actor: `schedule:${s.id}` };
}

function contextFor(caller: Caller, service: DescService, method: string, signal: AbortSignal): HandlerContext {
  return createHandlerContext({
    service,
    method: service.method[method]!,
    protocolName: "in-process",
    requestMethod: "POST",
    url: `schedule://${service.typeName}/${method}`,
    requestSignal: signal,
    contextValues: createContextValues().set(callerKey, caller),
  });
}

function need<T>(f: T | undefined, name: string): T {
  if (!f) throw new Error(`ServerService.${name} is not available to schedules`);
  return f;
}

/** Resolves after `ms`, or rejects once `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error("aborted"));
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Error("aborted"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export function scheduleExecutor(deps: ExecutorDeps, s: ScheduleRecord): ScheduleExecutor {
  const caller = scheduleCaller(s);
  const sv = deps.servers;
  return {
    async isRunning(serverId) {
      const rec = await deps.store.getServer(serverId);
      if (!rec || rec.deletedAt !== null) throw new PreconditionError(`server ${serverId} no longer exists; change the schedule's target`);
      return rec.status.phase === Phase.RUNNING;
    },
    async consoleCommand(serverId, command, signal) {
      await need(sv.sendConsoleCommand, "SendConsoleCommand")(create(SendConsoleCommandRequestSchema, { id: serverId, line: command }), contextFor(caller, ServerService, "sendConsoleCommand", signal));
      return `sent "${command}"`;
    },
    async power(serverId, action, signal) {
      switch (action) {
        case "start":
          await need(sv.startServer, "StartServer")(create(StartServerRequestSchema, { id: serverId }), contextFor(caller, ServerService, "startServer", signal));
          break;
        case "stop":
          await need(sv.stopServer, "StopServer")(create(StopServerRequestSchema, { id: serverId }), contextFor(caller, ServerService, "stopServer", signal));
          break;
        case "restart":
          await need(sv.restartServer, "RestartServer")(create(RestartServerRequestSchema, { id: serverId }), contextFor(caller, ServerService, "restartServer", signal));
          break;
        case "rebuild":
          await need(sv.rebuildServer, "RebuildServer")(create(RebuildServerRequestSchema, { id: serverId }), contextFor(caller, ServerService, "rebuildServer", signal));
          break;
      }
      return `${action} asked for`;
    },
    async backup(serverId, task, signal) {
      let target = task.target;
      if (!target) {
        const first = (await deps.store.listBackupTargets())[0];
        if (!first) throw new PreconditionError("no backup target exists: create one with BackupService.CreateBackupTarget, or remove the backup task");
        target = first.id;
      }
      const r = await deps.backups.createBackup(create(CreateBackupRequestSchema, { server: serverId, target, live: task.live }), contextFor(caller, BackupService, "createBackup", signal));
      return `backup ${r.backup?.id ?? ""} asked for`;
    },
    sleep,
  };
}
