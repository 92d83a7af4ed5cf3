import { create } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { describe, expect, it } from "vitest";
import type { CreateContainerSpec } from "./container-runtime.js";
import { containerConfig } from "./docker-runtime.js";

const spec: CreateContainerSpec = {
  name: "mc-1",
  image: "itzg/minecraft-server:latest",
  command: ["java", "-jar", "server.jar"],
  env: { EULA: "TRUE" },
  labels: { "berth.server": "srv_abcd2345", "berth.manager": "mgr_x" },
  ports: [
    create(PortMappingSchema, { hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP }),
    create(PortMappingSchema, { hostPort: 19132, containerPort: 19132, protocol: Protocol.UDP }),
  ],
  dataDir: "/var/lib/berth/srv_abcd2345",
  mountPath: "/data",
};

describe("containerConfig: all that berth can ask Docker for", () => {
  const c = containerConfig(spec);
  const hc = c.HostConfig!;

  it("runs with an init, no restart policy and no TTY", () => {
    expect(hc.Init).toBe(true);
    expect(hc.RestartPolicy).toEqual({ Name: "no" });
    expect(c.Tty).toBe(false);
  });

  it("asks for no privileges, capabilities, devices or host namespaces", () => {
    expect(hc.Privileged).toBe(false);
    expect(hc.CapAdd).toEqual([]);
    expect(hc.SecurityOpt).toEqual(["no-new-privileges"]);
    // Unset means Docker's defaults: bridge network, private pid/ipc/uts namespaces.
    for (const k of ["NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "Devices", "DeviceRequests", "Binds", "VolumesFrom", "CgroupParent", "Sysctls"]) {
      expect(hc).not.toHaveProperty(k);
    }
  });

  it("mounts exactly the server's data directory, as a structured bind", () => {
    expect(hc.Mounts).toEqual([{ Type: "bind", Source: "/var/lib/berth/srv_abcd2345", Target: "/data", ReadOnly: false }]);
  });

  it("publishes the requested ports with their protocols", () => {
    expect(c.ExposedPorts).toEqual({ "25565/tcp": {}, "19132/udp": {} });
    expect(hc.PortBindings).toEqual({ "25565/tcp": [{ HostPort: "25565" }], "19132/udp": [{ HostPort: "19132" }] });
  });

  it("copies image, command, env and labels and nothing else", () => {
    expect(Object.keys(c).sort()).toEqual(["Cmd", "Env", "ExposedPorts", "HostConfig", "Image", "Labels", "Tty", "name"]);
    expect(c.Env).toEqual(["EULA=TRUE"]);
    expect(c.Labels).toEqual(spec.labels);
  });

  it("refuses a relative data directory or a mount over the container's root", () => {
    expect(() => containerConfig({ ...spec, dataDir: "srv_abcd2345" })).toThrow(/absolute host path/);
    expect(() => containerConfig({ ...spec, mountPath: "/" })).toThrow(/other than \//);
    expect(() => containerConfig({ ...spec, mountPath: "data" })).toThrow(/absolute path/);
  });
});
