/**
 * Makes every grpc-js channel created in this process use its own subchannel
 * pool, hence its own TCP connection and HTTP/2 session. grpc-js shares one
 * connection between all clients of a process with the same target and
 * options (its global subchannel pool): thousands of simulated agents in one
 * process would otherwise multiplex over a single connection, which no real
 * fleet does (one agent per host, one connection each). Equivalent to the
 * channel option `grpc.use_local_subchannel_pool`, set from outside because
 * the agent's link does not take extra channel options. Benchmark only.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

export function ownConnectionPerChannel(): void {
  const require = createRequire(import.meta.url);
  const main = require.resolve("@grpc/grpc-js");
  const pool = require(join(dirname(main), "subchannel-pool.js")) as { getSubchannelPool?: (global: boolean) => unknown };
  const original = pool.getSubchannelPool;
  if (typeof original !== "function") {
    throw new Error("@grpc/grpc-js changed: subchannel-pool.js has no getSubchannelPool; simulated agents would share one connection");
  }
  pool.getSubchannelPool = () => original(false);
}
