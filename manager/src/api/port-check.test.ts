import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PortMappingSchema, Protocol, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { PreconditionError } from "../errors.js";
import type { ServerRecord } from "../domain/records.js";
import { requirePortsFree } from "./port-check.js";

const port = (hostPort: number) => create(PortMappingSchema, { hostPort, containerPort: hostPort, protocol: Protocol.TCP });
const on = (id: string, name: string, project: string, hostPort: number) =>
  ({ id, name, project, spec: create(ServerSpecSchema, { name, ports: [port(hostPort)] }) }) as ServerRecord;

/** The store contract's listServers over `servers`, counting reads. */
function storeOf(servers: ServerRecord[]) {
  const s = {
    reads: 0,
    listServers: async () => {
      s.reads++;
      return servers;
    },
  };
  return s;
}

describe("requirePortsFree", () => {
  const store = storeOf([on("srv_a", "web", "default", 8080), on("srv_b", "secret", "other", 9090)]);

  it("refuses a port another server publishes, naming it and a free one; another project's server is not named", async () => {
    await expect(requirePortsFree(store, "host_a", [port(8080)], { exceptId: "", project: "default" })).rejects.toThrow(
      new PreconditionError('port conflict on host host_a: host port 8080/tcp is used by server "web" (try 8081)'),
    );
    await expect(requirePortsFree(store, "host_a", [port(9090)], { exceptId: "", project: "default", hostLabel: "alpha" })).rejects.toThrow(
      /^port conflict on host alpha: .*a server in another project/,
    );
  });

  it("lets a server keep its own ports, and reads nothing when no port is asked for", async () => {
    await expect(requirePortsFree(store, "host_a", [port(8080)], { exceptId: "srv_a", project: "default" })).resolves.toBeUndefined();
    const quiet = storeOf([]);
    await requirePortsFree(quiet, "host_a", [], { exceptId: "", project: "default" });
    expect(quiet.reads).toBe(0);
  });
});
