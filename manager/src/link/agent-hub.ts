import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ManagerMessageSchema,
  type Command,
  type CommandResult,
  type FileRequestSchema,
  type FileResult,
  type LogChunk,
  type LogRequestSchema,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";

/** How often agents beat (told in Welcome), and how long one may be silent before closeSilent drops it (--heartbeat-interval, --agent-timeout). */
export const DEFAULT_AGENT_LINK = { heartbeatIntervalSeconds: 5, agentTimeoutSeconds: 15 } as const;

/** One connected agent stream, as the hub sees it. */
export interface AgentSession {
  readonly hostId: string;
  /** Set once the agent's first full inventory has been stored. */
  ready: boolean;
  /** When the agent last sent anything (ms since epoch). */
  lastSeen: number;
  /**
   * A message of the agent is being applied (its batch waits for the
   * database): the agent is not silent, this manager is slow to read on.
   */
  busy?: boolean;
  send(msg: ManagerMessage): void;
  /** What the agent said it serves (Hello.features), e.g. "files"; unset before its Hello. */
  features?: ReadonlySet<string>;
  /** The epoch at which this manager took the host for this stream (host ownership); every command sent on it carries it. */
  ownerEpoch?: number;
  /**
   * Ends the stream (host removed, or replaced by a newer connection).
   * `revoked`: the agent's credential is no longer valid, so it must not retry.
   */
  close(reason: string, revoked?: boolean): void;
}

/** Where one log stream's chunks go (a TailLogs call waiting on them). */
export interface LogRoute {
  onChunk(chunk: LogChunk): void;
  /** The agent's session ended before the stream did. */
  onGone(reason: string): void;
}

/** The host's agent is connected but older than the request: it did not name `feature` in its Hello. */
export class FeatureMissingError extends Error {
  override readonly name = "FeatureMissingError";
  constructor(readonly feature: string) {
    super(`the agent does not serve "${feature}" (it is older than this manager)`);
  }
}

/** The agent's session ended before it answered. */
export class AgentGoneError extends Error {
  override readonly name = "AgentGoneError";
}

/**
 * The set of connected agents. A host has at most one session: a new
 * connection replaces the old one (the agent reconnected before the old TCP
 * connection timed out).
 */
export class AgentHub {
  private readonly sessions = new Map<string, AgentSession>();
  /** Open log streams by request id, bound to the session that serves them. */
  private readonly logRoutes = new Map<string, LogRoute & { session: AgentSession }>();
  /** FileService calls awaiting their agent's FileResult, by request id, bound to the session they went out on. */
  private readonly fileWaiters = new Map<string, { session: AgentSession; resolve(r: FileResult): void; reject(err: Error): void }>();
  /** Callers awaiting a command's result (OrphanService), by command id. */
  private readonly resultWaiters = new Map<string, { hostId: string; resolve(r: CommandResult): void; timer: NodeJS.Timeout }>();
  /** Reports agents sent that the manager refused (host limits, bad ids), by reason, since start. */
  readonly refusedReports = new Map<string, number>();

  /** Counts `n` refused reports (see api/host-limits.ts). */
  noteRefused(reason: string, n: number): void {
    this.refusedReports.set(reason, (this.refusedReports.get(reason) ?? 0) + n);
  }

  attach(session: AgentSession): void {
    const old = this.sessions.get(session.hostId);
    this.sessions.set(session.hostId, session);
    old?.close("replaced by a newer connection from the same agent");
  }

  /** Removes `session` if it is still the current one; returns whether it was. */
  detach(session: AgentSession): boolean {
    if (this.sessions.get(session.hostId) !== session) return false;
    this.sessions.delete(session.hostId);
    return true;
  }

  isCurrent(session: AgentSession): boolean {
    return this.sessions.get(session.hostId) === session;
  }

  /** Whether the host's current session said it serves `feature` (undefined: no ready session). */
  supports(hostId: string, feature: string): boolean | undefined {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return undefined;
    return s.features?.has(feature) === true;
  }

  /** Connected and its inventory is in the store: observations can be trusted. */
  isConnected(hostId: string): boolean {
    return this.sessions.get(hostId)?.ready === true;
  }

  connectedHostIds(): string[] {
    return [...this.sessions.values()].filter((s) => s.ready).map((s) => s.hostId);
  }

  /**
   * `openSecrets`: turns a stored command (secret env values sealed) into the
   * one the agent gets (opened): the only place plaintext secrets leave.
   */
  constructor(private readonly openSecrets: (c: Command) => Command = (c) => c) {}

  /** Sends a command; false when the host has no ready session (it is resent on reconnect). */
  sendCommand(hostId: string, command: Command): boolean {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return false;
    // Stamped at sending: a command the previous owner stored is resent under this stream's epoch.
    const value = s.ownerEpoch === undefined ? this.openSecrets(command) : { ...this.openSecrets(command), ownerEpoch: BigInt(s.ownerEpoch) };
    s.send(create(ManagerMessageSchema, { body: { case: "command", value } }));
    return true;
  }

  /**
   * Sends a one-off command that is not stored (nothing resends it after a
   * reconnect: the caller decides again) and resolves with its result.
   * Rejects when the host has no ready session or no result comes in time.
   */
  request(hostId: string, command: Command, timeoutMs: number): Promise<CommandResult> {
    const result = this.awaitResult(hostId, command.id, timeoutMs);
    if (!this.sendCommand(hostId, command)) {
      this.deliverResult(hostId, undefined, command.id);
      return Promise.reject(new Error(`host ${hostId} is not connected`));
    }
    return result;
  }

  /** Resolves with the result of command `commandId` from `hostId` (sent by anyone); rejects after `timeoutMs`. */
  awaitResult(hostId: string, commandId: string, timeoutMs: number): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.resultWaiters.delete(commandId);
        reject(new Error(`no answer from host ${hostId} within ${Math.round(timeoutMs / 1000)}s`));
      }, timeoutMs);
      timer.unref();
      this.resultWaiters.set(commandId, { hostId, resolve, timer });
    });
  }

  /**
   * A command result from `hostId`: hands it to whoever awaits it (only a
   * result from the host the command went to counts). Returns whether
   * someone did. `result` undefined just forgets the waiter.
   */
  deliverResult(hostId: string, result: CommandResult | undefined, commandId = result?.commandId ?? ""): boolean {
    const w = this.resultWaiters.get(commandId);
    if (!w || w.hostId !== hostId) return false;
    this.resultWaiters.delete(commandId);
    clearTimeout(w.timer);
    if (result) w.resolve(result);
    return true;
  }

  sendResync(hostId: string): boolean {
    const s = this.sessions.get(hostId);
    if (!s) return false;
    s.send(create(ManagerMessageSchema, { body: { case: "resync", value: {} } }));
    return true;
  }

  /**
   * Asks the host's agent to stream a server's container output; chunks
   * carrying `requestId` go to `route` until one has `end`. False when the
   * host has no ready session.
   */
  openLogs(hostId: string, req: MessageInitShape<typeof LogRequestSchema> & { requestId: string }, route: LogRoute): boolean {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return false;
    this.logRoutes.set(req.requestId, { ...route, session: s });
    s.send(create(ManagerMessageSchema, { body: { case: "logRequest", value: req } }));
    return true;
  }

  /** Lets the agent send `bytes` more of a log stream (its caller consumed that much). */
  grantLogCredit(requestId: string, bytes: number): void {
    const r = this.logRoutes.get(requestId);
    if (r && bytes > 0 && this.isCurrent(r.session)) r.session.send(create(ManagerMessageSchema, { body: { case: "logCredit", value: { requestId, bytes } } }));
  }

  /** The caller went away: forget the route and tell the agent, if its session is still current. */
  cancelLogs(requestId: string): void {
    const r = this.logRoutes.get(requestId);
    if (!r) return;
    this.logRoutes.delete(requestId);
    if (this.isCurrent(r.session)) r.session.send(create(ManagerMessageSchema, { body: { case: "logCancel", value: { requestId } } }));
  }

  /** A chunk from `session`; only the session a stream was opened on may feed it. */
  deliverLogChunk(session: AgentSession, chunk: LogChunk): void {
    const r = this.logRoutes.get(chunk.requestId);
    if (!r || r.session !== session) return;
    if (chunk.end) this.logRoutes.delete(chunk.requestId);
    r.onChunk(chunk);
  }

  /** `session` ended: the log streams it served end with it, and the file requests it had not answered fail. */
  endLogs(session: AgentSession, reason: string): void {
    for (const [id, r] of this.logRoutes) {
      if (r.session !== session) continue;
      this.logRoutes.delete(id);
      r.onGone(reason);
    }
    for (const [id, w] of this.fileWaiters) {
      if (w.session !== session) continue;
      this.fileWaiters.delete(id);
      w.reject(new AgentGoneError(reason));
    }
  }

  /**
   * Sends a FileRequest to the host's agent and resolves with its answer.
   * Undefined when the host has no ready session here; rejects with
   * AgentGoneError when the session ends first. `forgetFile` drops a waiter
   * whose caller went away (the agent still finishes the operation).
   */
  fileRequest(hostId: string, req: MessageInitShape<typeof FileRequestSchema> & { requestId: string }): Promise<FileResult> | undefined {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return undefined;
    if (!s.features?.has("files")) return Promise.reject(new FeatureMissingError("files"));
    const answer = new Promise<FileResult>((resolve, reject) => this.fileWaiters.set(req.requestId, { session: s, resolve, reject }));
    s.send(create(ManagerMessageSchema, { body: { case: "fileRequest", value: req } }));
    return answer;
  }

  /** A FileResult from `session`; only the session the request went out on may answer it. */
  deliverFileResult(session: AgentSession, result: FileResult): void {
    const w = this.fileWaiters.get(result.requestId);
    if (!w || w.session !== session) return;
    this.fileWaiters.delete(result.requestId);
    w.resolve(result);
  }

  forgetFile(requestId: string): void {
    this.fileWaiters.delete(requestId);
  }

  /** File requests awaiting an answer (for tests and diagnostics). */
  get pendingFileCount(): number {
    return this.fileWaiters.size;
  }

  /** Open log streams (for tests and diagnostics). */
  get openLogCount(): number {
    return this.logRoutes.size;
  }

  disconnect(hostId: string, reason: string, opts: { revoked?: boolean } = {}): void {
    // As in closeSilent: the stream's handler detaches the session when it ends.
    this.sessions.get(hostId)?.close(reason, opts.revoked === true);
  }

  /** Closes sessions silent for longer than `timeoutMs`; returns their host ids. */
  closeSilent(now: number, timeoutMs: number): string[] {
    const stale = [...this.sessions.values()].filter((s) => !s.busy && now - s.lastSeen > timeoutMs);
    // Closing ends the session's stream; its handler then detaches it and marks the
    // host offline (removing it here first would make that detach a no-op).
    for (const s of stale) s.close(`no message for ${Math.round((now - s.lastSeen) / 1000)}s`);
    return stale.map((s) => s.hostId);
  }

  closeAll(reason: string): void {
    for (const s of [...this.sessions.values()]) s.close(reason);
    this.sessions.clear();
  }
}
