import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import { constants as h2constants, createServer as createHttp2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";

import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "../log.js";

/** A request handler for both HTTP/1.1 and HTTP/2 (connect-node does not export the type). */
export type Handler = ReturnType<typeof connectNodeAdapter>;

export interface Listener {
  /** host:port actually bound (port 0 resolved). */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** PEM certificate chain and key: the port then speaks TLS only. */
export interface TlsOptions {
  cert: string;
  key: string;
}

/**
 * What one client may hold on the port. Every client shares one process, so
 * each resource a connection can pin (sockets, HTTP/2 streams, half-sent
 * requests) has a bound; docs/security.md "Limits of the port" lists them.
 */
export interface HttpLimits {
  /** Open TCP connections from one IP address; more are closed at accept. */
  maxConnectionsPerIp: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may have open. */
  maxConcurrentStreams: number;
  /**
   * HTTP/2 streams open at once from one IP address, over all its connections:
   * connections × streams per connection would otherwise let one address pin
   * tens of thousands of unfinished requests. More are refused (REFUSED_STREAM).
   */
  maxStreamsPerIp: number;
  /** An HTTP/2 connection with no open stream and no frame for this long is closed (GOAWAY). */
  idleTimeoutMs: number;
  /** HTTP/1: the request head must arrive within this (slowloris). */
  headersTimeoutMs: number;
  /** HTTP/1: the whole request (head and body) must arrive within this. */
  requestTimeoutMs: number;
}

/** The defaults; manager-settings.ts shows them in --help and a test keeps the two equal. */
export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxConnectionsPerIp: 256,
  maxConcurrentStreams: 256,
  maxStreamsPerIp: 1024,
  idleTimeoutMs: 120_000,
  headersTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
};

export interface ListenOptions {
  /** Serve TLS only with this material; plaintext when absent. */
  tls?: TlsOptions | undefined;
  limits?: Partial<HttpLimits> | undefined;
  /** Where refused connections are reported (at most one line per IP a minute). */
  log?: Logger | undefined;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Pending connections the kernel may queue before the manager accepts them. */
const LISTEN_BACKLOG = 4096;
/** A connection that sends nothing this long is closed before any server sees it. */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

/** At most one warning per refused address per this long. */
const WARN_EVERY_MS = 60_000;

/**
 * What each IP address holds open (connections, streams), up to `cap`. A
 * refusal is reported through `warn` at most once a minute per address.
 */
class PerAddressCap {
  readonly #open = new Map<string, number>();
  /** When each refused address was last warned about; only entries of the last window matter. */
  readonly #warnedAt = new Map<string, number>();
  #sweptAt = 0;

  constructor(
    private readonly cap: number,
    private readonly warn: (ip: string, open: number) => void,
  ) {}

  /** Takes a slot for `ip`; false when it already holds `cap`. */
  take(ip: string): boolean {
    const open = this.#open.get(ip) ?? 0;
    if (open < this.cap) {
      this.#open.set(ip, open + 1);
      return true;
    }
    const now = Date.now();
    if ((this.#warnedAt.get(ip) ?? 0) < now - WARN_EVERY_MS) {
      this.#forgetOldWarnings(now);
      this.#warnedAt.set(ip, now);
      this.warn(ip, open);
    }
    return false;
  }

  /**
   * Drops warnings older than the window (they no longer hold a warning back),
   * at most once per window: otherwise every address ever refused stayed.
   */
  #forgetOldWarnings(now: number): void {
    if (now - this.#sweptAt < WARN_EVERY_MS) return;
    this.#sweptAt = now;
    for (const [ip, at] of this.#warnedAt) if (at < now - WARN_EVERY_MS) this.#warnedAt.delete(ip);
  }

  release(ip: string): void {
    const left = (this.#open.get(ip) ?? 1) - 1;
    if (left > 0) this.#open.set(ip, left);
    else this.#open.delete(ip);
  }
}

/** Closes `socket` if it sends nothing for a while; returns the function that stops the clock. */
function closeIfSilent(socket: Socket): () => void {
  const onTimeout = () => socket.destroy();
  socket.setTimeout(FIRST_BYTES_TIMEOUT_MS);
  socket.once("timeout", onTimeout);
  return () => {
    socket.setTimeout(0);
    socket.off("timeout", onTimeout);
  };
}

/**
 * One TCP port for every client. In plaintext, a connection that opens with
 * the HTTP/2 preface goes to an h2c server (gRPC, grpc-js agents, buf curl
 * --http2-prior-knowledge), anything else to an HTTP/1.1 server (browsers,
 * curl, Connect and gRPC-Web). With `tls`, the port speaks TLS only and ALPN
 * decides: `h2` to the HTTP/2 server, `http/1.1` (or no ALPN) to HTTP/1.1.
 */
export async function listen(host: string, port: number, handler: Handler, options: ListenOptions = {}): Promise<Listener> {
  const { tls, log } = options;
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...options.limits };
  const h1 = createHttp1Server(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // How often the two timeouts above are checked: a late request is closed within this.
      connectionsCheckingInterval: Math.min(5_000, limits.headersTimeoutMs),
    },
    handler as (req: IncomingMessage, res: ServerResponse) => void,
  );
  h1.keepAliveTimeout = 65_000;
  // Node checks headersTimeout/requestTimeout only for a server that emitted "listening"; this one
  // never listens (sockets are handed to it after sniffing), so without this nothing enforced them
  // and a slowloris client kept its connection forever. h1.close() stops the check.
  h1.emit("listening");
  const streamsPerIp = new PerAddressCap(limits.maxStreamsPerIp, (ip, open) =>
    log?.warn({ ip, open, limit: limits.maxStreamsPerIp }, "stream refused: this IP address holds the most HTTP/2 streams allowed (--max-streams-per-ip)"),
  );
  const connectionsPerIp = new PerAddressCap(limits.maxConnectionsPerIp, (ip, open) =>
    log?.warn({ ip, open, limit: limits.maxConnectionsPerIp }, "connection refused: this IP address holds the most connections allowed (--max-connections-per-ip)"),
  );
  const h2 = createHttp2Server(
    { settings: { maxConcurrentStreams: limits.maxConcurrentStreams } },
    (req: Http2ServerRequest, res: Http2ServerResponse) => {
      // Once the answer (a gRPC status included) is out, the rest of the request is of no use:
      // reset the stream with NO_ERROR, as gRPC servers do, instead of leaving the client blocked
      // on flow control with a stream that never closes (an oversize message did that).
      // (Node's compat layer always ends a response with trailers; "wantTrailers" listeners run in
      // order, so on the next turn its trailers are queued ahead of the RST_STREAM. The response's
      // own "finish" comes only once the stream has closed, i.e. never here.)
      res.stream.once("wantTrailers", () =>
        setImmediate(() => {
          if (!req.complete && !res.stream.destroyed) res.stream.close(h2constants.NGHTTP2_NO_ERROR);
        }),
      );
      const ip = req.socket.remoteAddress ?? "";
      if (!streamsPerIp.take(ip)) {
        // REFUSED_STREAM: the request was not processed, a client may retry it later.
        res.stream.close(h2constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      res.stream.once("close", () => streamsPerIp.release(ip));
      (handler as (q: Http2ServerRequest, s: Http2ServerResponse) => void)(req, res);
    },
  );
  const sessions = new Set<Http2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
    closeWhenIdle(s, limits.idleTimeoutMs);
  });
  const sockets = new Set<Socket>();

  /** Counts raw TCP connections per IP; over the cap, the new one is closed before a byte is read. */
  const track = (socket: Socket) => {
    const ip = socket.remoteAddress ?? "";
    if (!connectionsPerIp.take(ip)) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      connectionsPerIp.release(ip);
    });
  };

  const tlsServer = tls
    ? createTlsServer(
        // TLS 1.2 is the least HTTP/2 allows; older clients are refused.
        { cert: tls.cert, key: tls.key, ALPNProtocols: ["h2", "http/1.1"], minVersion: "TLSv1.2" },
        (socket: TLSSocket) => {
          socket.setNoDelay(true);
          socket.on("error", () => socket.destroy());
          if (socket.alpnProtocol === "h2") h2.emit("connection", socket);
          else h1.emit("connection", socket);
        },
      )
    : undefined;
  // Raw TCP sockets, before any handshake: counted per IP, and so close() can end them all.
  const server: Server = createNetServer((socket) => {
    track(socket);
    if (!socket.destroyed) (tlsServer ? sniffTls : sniff)(socket);
  });

  /** TLS mode: a TLS handshake goes on; a plaintext HTTP/1 request is told to use https. */
  function sniffTls(socket: Socket): void {
    socket.on("error", () => socket.destroy());
    const spoke = closeIfSilent(socket);
    socket.once("data", (chunk: Buffer) => {
      spoke();
      socket.pause();
      socket.unshift(chunk);
      // 0x16: a TLS handshake record (ClientHello).
      if (chunk[0] === 0x16) {
        tlsServer!.emit("connection", socket);
      } else if (chunk.subarray(0, 3).toString() === "PRI") {
        socket.destroy();
      } else {
        const body = "this berth manager serves TLS only on this port: use https:// (and the manager's CA)\n";
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      }
    });
  }

  function sniff(socket: Socket): void {
    socket.setNoDelay(true);
    const spoke = closeIfSilent(socket);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, H2_PREFACE.length);
      const isH2 = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      // Wait for enough bytes to tell (the preface is 24 bytes; "PRI" may be a prefix of a bad request line).
      if (isH2 && n < H2_PREFACE.length) return;
      socket.off("data", onData);
      spoke();
      socket.pause();
      socket.unshift(buffered);
      // Both servers pick up bytes already buffered on the socket: http2 reads them on
      // the next tick (so the socket must stay paused until then), http1 on resume.
      if (isH2) {
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // A fleet reconnecting at once (a manager restart, a partition healing) opens
    // thousands of connections within a second; with Node's default backlog (511)
    // the kernel drops the excess SYNs and those agents wait out TCP retransmits
    // (1 s, 3 s, 7 s, ...) or time out (docs/benchmarks.md). The kernel caps this
    // at net.core.somaxconn.
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    address: { host: addr.address, port: addr.port },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.close();
      h1.closeAllConnections();
      // Stops the timeout checks; it answers ERR_SERVER_NOT_RUNNING (h1 never listened), which is fine.
      h1.close(() => {});
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/**
 * Closes an HTTP/2 session (GOAWAY, then the socket) once it has had no open
 * stream and no activity for `idleMs`. Sessions with a stream open are never
 * idle: an agent's link and a watch are long-lived streams, whatever their
 * traffic. Node refreshes the session's timer on every frame sent or received.
 */
function closeWhenIdle(session: Http2Session, idleMs: number): void {
  let open = 0;
  session.on("stream", (stream) => {
    open++;
    stream.once("close", () => open--);
  });
  session.setTimeout(idleMs);
  // "timeout" fires again after each new quiet period (a callback passed to setTimeout would run once).
  session.on("timeout", () => {
    if (open > 0 || session.closed || session.destroyed) return;
    session.close();
    // A client that ignores GOAWAY and keeps the socket open is cut off after one more period.
    setTimeout(() => session.destroy(), idleMs).unref();
  });
}
