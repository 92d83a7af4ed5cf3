import { create } from "@bufbuild/protobuf";
import { ManagerMessageSchema, type Command, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";

/** One connected agent stream, as the hub sees it. */
export interface AgentSession {
  readonly hostId: string;
  /** Set once the agent's first full inventory has been stored. */
  ready: boolean;
  /** When the agent last sent anything (ms since epoch). */
  lastSeen: number;
  send(msg: ManagerMessage): void;
  /** Ends the stream (host removed, or replaced by a newer connection). */
  close(reason: string): void;
}

/**
 * The set of connected agents. A host has at most one session: a new
 * connection replaces the old one (the agent reconnected before the old TCP
 * connection timed out).
 */
export class AgentHub {
  private readonly sessions = new Map<string, AgentSession>();

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

  /** Connected and its inventory is in the store: observations can be trusted. */
  isConnected(hostId: string): boolean {
    return this.sessions.get(hostId)?.ready === true;
  }

  connectedHostIds(): string[] {
    return [...this.sessions.values()].filter((s) => s.ready).map((s) => s.hostId);
  }

  /** Sends a command; false when the host has no ready session (it is resent on reconnect). */
  sendCommand(hostId: string, command: Command): boolean {
    const s = this.sessions.get(hostId);
    if (!s?.ready) return false;
    s.send(create(ManagerMessageSchema, { body: { case: "command", value: command } }));
    return true;
  }

  sendResync(hostId: string): boolean {
    const s = this.sessions.get(hostId);
    if (!s) return false;
    s.send(create(ManagerMessageSchema, { body: { case: "resync", value: {} } }));
    return true;
  }

  disconnect(hostId: string, reason: string): void {
    const s = this.sessions.get(hostId);
    if (!s) return;
    this.sessions.delete(hostId);
    s.close(reason);
  }

  /** Closes sessions silent for longer than `timeoutMs`; returns their host ids. */
  closeSilent(now: number, timeoutMs: number): string[] {
    const stale = [...this.sessions.values()].filter((s) => now - s.lastSeen > timeoutMs);
    for (const s of stale) {
      this.sessions.delete(s.hostId);
      s.close(`no message for ${Math.round((now - s.lastSeen) / 1000)}s`);
    }
    return stale.map((s) => s.hostId);
  }

  closeAll(reason: string): void {
    for (const s of [...this.sessions.values()]) s.close(reason);
    this.sessions.clear();
  }
}
