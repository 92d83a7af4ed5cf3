import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  AgentMessageSchema,
  EnrollRequestSchema,
  EnrollResponseSchema,
  ManagerMessageSchema,
  type AgentMessage,
  type EnrollResponse,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";
import { Backoff } from "./backoff.js";
import { afterHealthy, afterStreamEnd, type RotationState } from "./failover.js";

const CONNECT_PATH = "/berth.v1.AgentService/Connect";
const ENROLL_PATH = "/berth.v1.AgentService/Enroll";

/**
 * grpc-js leaves reserved characters of grpc-message percent-encoded
 * ("used%3B create a new one"); messages are shown to people, so decode them.
 */
export function errorDetails(err: { details?: string; message?: string }): string {
  const raw = err.details ?? err.message ?? String(err);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** HTTP/2 keepalive: a ping every 10 s, dead if unanswered for 5 s (< 20 s to detect a dead link). */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  // The link's own backoff (0.5 s .. 30 s, jittered) paces reconnects; grpc-js's channel
  // backoff on top of it (1 s initial, x1.6) would add seconds after a manager restart.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.min_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5_000,
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
};

/**
 * Parses "http://host:port" / "https://host:port" into a grpc-js target and
 * credentials. With https, `caPem` (the CA pinned at enrollment) is the only
 * trust root; without it, the system's roots are used.
 */
export function channelFor(managerUrl: string, caPem?: string): { target: string; credentials: grpc.ChannelCredentials } {
  let u: URL;
  try {
    u = new URL(managerUrl);
  } catch {
    throw new Error(`manager URL "${managerUrl}" is not a URL; use e.g. http://manager.example:7000`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`manager URL must start with http:// or https:// (got ${u.protocol})`);
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  return {
    target: `${u.hostname.includes(":") ? `[${u.hostname}]` : u.hostname}:${port}`.replace(/^\[\[/, "[").replace(/\]\]/, "]"),
    credentials:
      u.protocol === "https:" ? grpc.credentials.createSsl(caPem ? Buffer.from(caPem) : null) : grpc.credentials.createInsecure(),
  };
}

/**
 * One-time enrollment: trades an enrollment token for this host's id and
 * secret. With https and `caPem`, the manager must prove it holds a
 * certificate issued by that CA before the token leaves this host.
 */
export async function enroll(managerUrl: string, token: string, hostname: string, agentVersion: string, caPem?: string): Promise<EnrollResponse> {
  const { target, credentials } = channelFor(managerUrl, caPem);
  const client = new grpc.Client(target, credentials, CHANNEL_OPTIONS);
  try {
    return await new Promise<EnrollResponse>((resolve, reject) => {
      client.makeUnaryRequest(
        ENROLL_PATH,
        (m: ReturnType<typeof create<typeof EnrollRequestSchema>>) => Buffer.from(toBinary(EnrollRequestSchema, m)),
        (b: Buffer) => fromBinary(EnrollResponseSchema, b),
        create(EnrollRequestSchema, { token, hostname, agentVersion }),
        new grpc.Metadata(),
        { deadline: Date.now() + 30_000 },
        (err, res) => (err || !res ? reject(err ?? new Error("empty response")) : resolve(res)),
      );
    });
  } finally {
    client.close();
  }
}

export interface LinkHandlers {
  /** The stream is open: send Hello and a full inventory now. */
  onOpen(): void;
  onMessage(msg: ManagerMessage): void;
  onClose(): void;
  /** The manager refused our credential: stop for good. */
  onRevoked(message: string): void;
}

/** The reconnect backoff: the first round's delay is up to RECONNECT_BASE_MS, doubling to at most the cap (`--reconnect-max`). */
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_MAX_MS = 30_000;

/** How long a welcomed stream must stay up before the reconnect backoff starts over. */
const HEALTHY_AFTER_MS = 15_000;

/**
 * With several managers: how long a dial may go without the manager's
 * Welcome (sent as soon as the stream opens) before the link gives up on
 * that manager and tries the next. Covers a manager whose address drops
 * packets, which the OS would take minutes to give up on.
 */
const WELCOME_TIMEOUT_MS = 10_000;

export interface LinkOptions {
  /** The reconnect delays between full rounds of the URL list (default 0.5 s .. 30 s, full jitter). */
  backoff?: Backoff;
  /** The cap of the default backoff (RECONNECT_MAX_MS); ignored with `backoff`. */
  reconnectMaxMs?: number;
  /** Default HEALTHY_AFTER_MS. */
  healthyAfterMs?: number;
  /** Default WELCOME_TIMEOUT_MS; only used with more than one URL (a single manager is waited for). */
  welcomeTimeoutMs?: number;
}

/**
 * The agent's bidi stream to a manager, reconnecting forever with
 * exponential backoff and jitter (cap 30 s) until stopped or revoked.
 *
 * With several manager URLs it dials one at a time, in order: a failed dial
 * or an ended stream moves on to the next URL at once, and the backoff's
 * delay comes only after every URL failed in a row (one delay per round,
 * failover.ts). A refused credential stops the link on any manager.
 *
 * The backoff starts over only once a stream has been healthy for a while
 * (`healthyAfterMs` after the manager's welcome), not on the welcome itself:
 * a manager that welcomes and then refuses what the agent sends (it once
 * refused every inventory over its message cap) would otherwise be redialled
 * every few hundred milliseconds forever.
 */
export class ManagerLink {
  private client: grpc.Client | undefined;
  /** The URL `client` dials (its index in `urls`). */
  private clientIndex = -1;
  private call: grpc.ClientDuplexStream<AgentMessage, ManagerMessage> | undefined;
  private readonly urls: readonly string[];
  private readonly backoff: Backoff;
  private readonly healthyAfterMs: number;
  private readonly welcomeTimeoutMs: number;
  private rotation: RotationState = { index: 0, failedInRound: 0 };
  private connectedUrl: string | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private healthyTimer: NodeJS.Timeout | undefined;
  private welcomeTimer: NodeJS.Timeout | undefined;
  private openedAt = 0;

  constructor(
    /** One URL, or several managers to fail over between, in order. */
    managerUrls: string | readonly string[],
    /** `caPem`: the manager's CA pinned at enrollment, the only trust root for https. */
    private readonly credential: { hostId: string; secret: string; caPem?: string },
    private readonly handlers: LinkHandlers,
    private readonly log: Logger,
    opts: LinkOptions = {},
  ) {
    this.urls = typeof managerUrls === "string" ? [managerUrls] : [...managerUrls];
    if (this.urls.length === 0) throw new Error("ManagerLink needs at least one manager URL");
    if (opts.reconnectMaxMs !== undefined && !(opts.reconnectMaxMs > 0)) throw new RangeError(`reconnect backoff cap must be above 0 ms (got ${opts.reconnectMaxMs})`);
    this.backoff = opts.backoff ?? new Backoff(RECONNECT_BASE_MS, opts.reconnectMaxMs ?? RECONNECT_MAX_MS, Math.random, { boundByOutage: true });
    this.healthyAfterMs = opts.healthyAfterMs ?? HEALTHY_AFTER_MS;
    this.welcomeTimeoutMs = opts.welcomeTimeoutMs ?? WELCOME_TIMEOUT_MS;
  }

  get connected(): boolean {
    return this.call !== undefined;
  }

  /** The URL of the manager the current stream goes to (dialled, perhaps not yet welcomed); undefined between streams. */
  get managerUrl(): string | undefined {
    return this.call ? this.connectedUrl : undefined;
  }

  /** Throws (before dialling anything) on a URL grpc-js cannot dial, e.g. from a hand-edited credential file. */
  start(): void {
    for (const url of this.urls) channelFor(url, this.credential.caPem);
    this.dial();
  }

  /** Sends if connected; state lost while disconnected is re-sent as a full inventory on reconnect. */
  send(msg: AgentMessage): boolean {
    if (!this.call) return false;
    this.call.write(msg);
    return true;
  }

  /**
   * Like send, for bulk data (logs): resolves once the stream has room for
   * more, so a fast producer is slowed to the link's pace instead of
   * buffering without bound. False when not connected or the stream ended.
   */
  async sendPaced(msg: AgentMessage): Promise<boolean> {
    const call = this.call;
    if (!call) return false;
    if (call.write(msg)) return true;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearInterval(check);
        call.off("drain", done);
        resolve();
      };
      // The stream may end instead of draining: then stop waiting too.
      const check = setInterval(() => this.call !== call && done(), 500);
      call.once("drain", done);
    });
    return this.call === call;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    clearTimeout(this.healthyTimer);
    clearTimeout(this.welcomeTimer);
    this.call?.cancel();
    this.call = undefined;
    this.client?.close();
  }

  /** The channel to `urls[index]`: kept across redials of one URL, replaced (old one closed) when the URL changes. */
  private clientFor(index: number): grpc.Client {
    if (this.client && this.clientIndex === index) return this.client;
    this.client?.close();
    const { target, credentials } = channelFor(this.urls[index]!, this.credential.caPem);
    this.client = new grpc.Client(target, credentials, CHANNEL_OPTIONS);
    this.clientIndex = index;
    return this.client;
  }

  private dial(): void {
    if (this.stopped) return;
    const url = this.urls[this.rotation.index]!;
    const client = this.clientFor(this.rotation.index);
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${this.credential.hostId}.${this.credential.secret}`);
    const call = client.makeBidiStreamRequest(
      CONNECT_PATH,
      (m: AgentMessage) => Buffer.from(toBinary(AgentMessageSchema, m)),
      (b: Buffer) => fromBinary(ManagerMessageSchema, b),
      md,
    );
    this.call = call;
    this.connectedUrl = url;
    this.openedAt = Date.now();
    let welcomed = false;
    clearTimeout(this.welcomeTimer);
    if (this.urls.length > 1) {
      // Another manager may answer: do not wait on this one for as long as the OS would.
      this.welcomeTimer = setTimeout(() => {
        if (this.call !== call || welcomed) return;
        this.log.warn({ url, waitedMs: this.welcomeTimeoutMs }, "no welcome from the manager in time; trying the next one");
        call.cancel();
      }, this.welcomeTimeoutMs);
      this.welcomeTimer.unref();
    }
    call.on("data", (msg: ManagerMessage) => {
      if (!welcomed && msg.body.case === "welcome") {
        welcomed = true;
        clearTimeout(this.welcomeTimer);
        clearTimeout(this.healthyTimer);
        this.healthyTimer = setTimeout(() => {
          if (this.call !== call) return;
          this.backoff.reset();
          this.rotation = afterHealthy(this.rotation);
        }, this.healthyAfterMs);
        this.healthyTimer.unref();
        this.log.info({ url, manager: msg.body.value.managerId, host: msg.body.value.hostId }, "connected to manager");
      }
      this.handlers.onMessage(msg);
    });
    let ended = false;
    const end = (err?: grpc.ServiceError) => {
      if (ended) return;
      ended = true;
      if (this.call === call) {
        this.call = undefined;
        clearTimeout(this.healthyTimer);
        clearTimeout(this.welcomeTimer);
      }
      this.handlers.onClose();
      if (this.stopped) return;
      const decision = afterStreamEnd(this.rotation, this.urls.length, err?.code);
      if (decision.kind === "stop") {
        this.stopped = true;
        const reason = errorDetails(err!);
        this.log.error({ url, reason, code: err?.code }, `the manager refused this agent's credential (${reason}); not retrying. Re-enroll with \`berth-agent enroll\``);
        this.handlers.onRevoked(reason);
        return;
      }
      this.rotation = decision.state;
      const delay = decision.backoff ? this.backoff.next() : 0;
      const next = this.urls[decision.state.index]!;
      this.log.warn(
        { url, err: err?.details ?? "stream ended", code: err?.code, retryInMs: delay, upMs: Date.now() - this.openedAt, ...(this.urls.length > 1 ? { next } : {}) },
        "link to manager lost; reconnecting",
      );
      this.timer = setTimeout(() => this.dial(), delay);
    };
    call.on("error", (err: grpc.ServiceError) => end(err));
    call.on("end", () => end());
    call.on("status", (s: grpc.StatusObject) => {
      if (s.code !== grpc.status.OK) end(Object.assign(new Error(s.details), { code: s.code, details: s.details, metadata: s.metadata }) as grpc.ServiceError);
    });
    this.handlers.onOpen();
  }
}
