import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from "node:net";

import type { connectNodeAdapter } from "@connectrpc/connect-node";

/** A request handler for both HTTP/1.1 and HTTP/2 (connect-node does not export the type). */
export type Handler = ReturnType<typeof connectNodeAdapter>;

export interface Listener {
  /** host:port actually bound (port 0 resolved). */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One TCP port for every client: a connection that opens with the HTTP/2
 * preface goes to an h2c server (gRPC, grpc-js agents, buf curl --http2-prior-knowledge),
 * anything else to an HTTP/1.1 server (browsers, curl, Connect and gRPC-Web).
 */
export async function listen(host: string, port: number, handler: Handler): Promise<Listener> {
  const h1 = createHttp1Server(handler as (req: IncomingMessage, res: ServerResponse) => void);
  h1.keepAliveTimeout = 65_000;
  const h2 = createHttp2Server({}, handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const sessions = new Set<Http2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  const sockets = new Set<Socket>();

  const server: Server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, H2_PREFACE.length);
      const isH2 = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      // Wait for enough bytes to tell (the preface is 24 bytes; "PRI" may be a prefix of a bad request line).
      if (isH2 && n < H2_PREFACE.length) return;
      socket.off("data", onData);
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
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
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
