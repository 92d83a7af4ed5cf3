import { create } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CreateContainerSpec } from "./container-runtime.js";
import { containerConfig, DockerRuntime } from "./docker-runtime.js";

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
    expect(hc.CapDrop).toEqual(["AUDIT_WRITE", "FSETID", "MKNOD", "NET_RAW", "SETFCAP", "SETPCAP", "SYS_CHROOT"]);
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

  it("rotates a json-file log: 10 MiB x 3 unless the spec says otherwise", () => {
    expect(hc.LogConfig).toEqual({ Type: "json-file", Config: { "max-size": "10485760", "max-file": "3" } });
    const own = containerConfig({ ...spec, logMaxSizeBytes: 1 << 20, logMaxFiles: 5 }).HostConfig!;
    expect(own.LogConfig).toEqual({ Type: "json-file", Config: { "max-size": "1048576", "max-file": "5" } });
    expect(() => containerConfig({ ...spec, logMaxSizeBytes: 100 })).toThrow(/at least 65536/);
    expect(() => containerConfig({ ...spec, logMaxFiles: 21 })).toThrow(/1 to 20/);
  });

  it("gives back only allowed capabilities, by not dropping them; never adds one", () => {
    const own = containerConfig({ ...spec, capAdd: ["NET_RAW", "SYS_CHROOT"] }).HostConfig!;
    expect(own.CapAdd).toEqual([]);
    expect(own.CapDrop).toEqual(["AUDIT_WRITE", "FSETID", "MKNOD", "SETFCAP", "SETPCAP"]);
    for (const cap of ["MKNOD", "SETFCAP", "SYS_ADMIN", "ALL", "CAP_NET_RAW", "net_raw"]) {
      expect(() => containerConfig({ ...spec, capAdd: [cap] })).toThrow(/cannot be added; a server may only get back AUDIT_WRITE, FSETID, NET_RAW, SETPCAP, SYS_CHROOT/);
    }
  });

  it("sets Docker's StopSignal only when the spec names one, and only a stop signal berth allows", () => {
    expect(containerConfig({ ...spec, stopSignal: "SIGINT" }).StopSignal).toBe("SIGINT");
    expect(containerConfig({ ...spec, stopSignal: "SIGKILL" }).StopSignal).toBe("SIGKILL");
    for (const sig of ["SIGSTOP", "INT", "9", "sigint"]) expect(() => containerConfig({ ...spec, stopSignal: sig })).toThrow(/is not one of SIGTERM, SIGINT/);
  });

  it("refuses a relative data directory or a mount over the container's root", () => {
    expect(() => containerConfig({ ...spec, dataDir: "srv_abcd2345" })).toThrow(/absolute host path/);
    expect(() => containerConfig({ ...spec, mountPath: "/" })).toThrow(/other than \//);
    expect(() => containerConfig({ ...spec, mountPath: "data" })).toThrow(/absolute path/);
  });
});

describe("DockerRuntime: docker info once per engine connection", () => {
  /** A DockerRuntime whose engine answers `docker info` as `info` says (no socket is opened). */
  function withEngine(info: () => Promise<object>) {
    const rt = new DockerRuntime({ socketPath: "/nonexistent/docker.sock" });
    let asked = 0;
    let created = 0;
    (rt as unknown as { docker: object }).docker = {
      info: () => {
        asked++;
        return info();
      },
      createContainer: async () => ({ id: `c${++created}` }),
      getEvents: async () => new PassThrough(),
    };
    return { rt, asked: () => asked };
  }

  it("asks once for concurrent and later creates, and again after a new events subscription", async () => {
    let answer!: (v: object) => void;
    const { rt, asked } = withEngine(() => new Promise((r) => (answer = r)));
    const both = Promise.all([rt.create(spec), rt.create({ ...spec, name: "mc-2" })]);
    await new Promise((r) => setTimeout(r, 5));
    answer({ SecurityOptions: ["name=seccomp,profile=builtin"] });
    await both;
    await rt.create(spec);
    expect(asked()).toBe(1);
    const ac = new AbortController();
    await rt.subscribe(() => {}, ac.signal);
    ac.abort();
    const next = rt.create(spec);
    await new Promise((r) => setTimeout(r, 5));
    answer({});
    await next;
    expect(asked()).toBe(2);
  });

  it("does not keep a failed answer: the next create asks again", async () => {
    let fail = true;
    const { rt, asked } = withEngine(async () => {
      if (fail) throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
      return {};
    });
    await expect(rt.create(spec)).rejects.toMatchObject({ reason: "DockerUnreachable" });
    fail = false;
    await rt.create(spec);
    expect(asked()).toBe(2);
  });
});
