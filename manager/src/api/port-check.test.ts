import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PortMappingSchema, Protocol, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";
import type { ServerRecord } from "../domain/records.js";
import { checkPortsFree } from "./port-check.js";

const port = (hostPort: number) => create(PortMappingSchema, { hostPort, containerPort: hostPort, protocol: Protocol.TCP });
const on = (id: string, name: string, project: string, hostPort: number) =>
  ({ id, name, project, spec: create(ServerSpecSchema, { name, ports: [port(hostPort)] }) }) as ServerRecord;

function storeOf(servers: ServerRecord[]): Pick<Store, "listServers"> & { reads: number } {
  const s = {
    reads: 0,
    listServers: () => {
      s.reads++;
      return servers;
    },
  };
  return s;
}

describe("checkPortsFree", () => {
  const store = storeOf([on("srv_a", "web", "default", 8080), on("srv_b", "secret", "other", 9090)]);

  it("refuses a port another server publishes, naming it and a free one; another project's server is not named", () => {
    expect(() => checkPortsFree(store, "host_a", [port(8080)], { exceptId: "", project: "default" })).toThrow(
      new PreconditionError('port conflict on host host_a: host port 8080/tcp is used by server "web" (try 8081)'),
    );
    expect(() => checkPortsFree(store, "host_a", [port(9090)], { exceptId: "", project: "default", hostLabel: "alpha" })).toThrow(/^port conflict on host alpha: .*a server in another project/);
  });

  it("lets a server keep its own ports, and reads nothing when no port is asked for", () => {
    expect(() => checkPortsFree(store, "host_a", [port(8080)], { exceptId: "srv_a", project: "default" })).not.toThrow();
    const quiet = storeOf([]);
    checkPortsFree(quiet, "host_a", [], { exceptId: "", project: "default" });
    expect(quiet.reads).toBe(0);
  });
});
