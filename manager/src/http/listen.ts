import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";

import type { connectNodeAdapter } from "@connectrpc/connect-node";

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

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Pending connections the kernel may queue before the manager accepts them. */
const LISTEN_BACKLOG = 4096;
/** A connection that sends nothing this long is closed before any server sees it. */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

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
export async function listen(host: string, port: number, handler: Handler, tls?: TlsOptions): Promise<Listener> {
  const h1 = createHttp1Server(handler as (req: IncomingMessage, res: ServerResponse) => void);
  h1.keepAliveTimeout = 65_000;
  const h2 = createHttp2Server({}, handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const sessions = new Set<Http2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  const sockets = new Set<Socket>();

  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
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
  const server: Server = createNetServer(tlsServer ? sniffTls : sniff);
  // Raw TCP sockets, before any handshake, so close() can end them all.
  server.on("connection", track);

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
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
