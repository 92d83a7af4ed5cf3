/**
 * A tiny TCP proxy for partition tests: put it between an agent and the
 * manager, then cut the link and heal it.
 *
 *   cut("blackhole")  existing connections stay open but nothing gets through
 *                     (a silent network partition: only keepalives and
 *                     heartbeat timeouts notice it); new connections are refused
 *   cut("reset")      existing connections are destroyed at once; new ones refused
 *   heal()            new connections are forwarded again
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface TcpProxy {
  /** "127.0.0.1:<port>" to dial instead of the target. */
  readonly address: string;
  readonly port: number;
  /** Connections currently open through the proxy. */
  readonly open: number;
  cut(mode: "blackhole" | "reset"): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  let state: "open" | "cut" = "open";
  const pairs = new Set<{ client: Socket; upstream: Socket; blackholed: boolean }>();

  const server: Server = createServer((client) => {
    if (state === "cut") {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, targetHost);
    const pair = { client, upstream, blackholed: false };
    pairs.add(pair);
    // Forward by hand (not pipe) so a blackhole can swallow bytes without closing anything.
    client.on("data", (d: Buffer) => {
      if (!pair.blackholed) upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      if (!pair.blackholed) client.write(d);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      // While blackholed nothing crosses, closes included: an agent that gives up on a
      // silent link (keepalive timeout) and drops its socket must not reach the manager as
      // a disconnect, or the manager would notice at once instead of by silence. The
      // other side is closed when the partition heals (or the proxy closes).
      const onGone = () => {
        if (pair.blackholed) s.destroy();
        else end();
      };
      s.on("error", onGone);
      s.on("close", onGone);
      s.on("end", () => {
        // Half-close is forwarded only while connected; a blackholed pair just sits there.
        if (!pair.blackholed) end();
      });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;

  return {
    address: `127.0.0.1:${port}`,
    port,
    get open() {
      return pairs.size;
    },
    cut(mode) {
      state = "cut";
      for (const p of [...pairs]) {
        if (mode === "reset") {
          pairs.delete(p);
          p.client.destroy();
          p.upstream.destroy();
        } else {
          p.blackholed = true;
        }
      }
    },
    heal() {
      state = "open";
      // Blackholed connections are beyond repair (their byte streams lost data): drop them.
      for (const p of [...pairs]) {
        if (p.blackholed) {
          pairs.delete(p);
          p.client.destroy();
          p.upstream.destroy();
        }
      }
    },
    async close() {
      for (const p of [...pairs]) {
        p.client.destroy();
        p.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
