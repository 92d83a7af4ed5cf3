import type Docker from "dockerode";
import { describe, expect, it } from "vitest";
import { Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { adoptionView, DOCKER_DEFAULT_PATH, imageDefaults, summaryInfo } from "./adoption-view.js";

const image = imageDefaults({ Config: { Env: ["PATH=/bin", "LANG=C"], Cmd: ["/bin/sh"], Entrypoint: null, User: "", WorkingDir: "", Labels: { maintainer: "x" } } } as unknown as Docker.ImageInspectInfo);

function container(config: object = {}, host: object = {}): Docker.ContainerInspectInfo {
  return {
    Config: { Env: ["PATH=/bin", "LANG=C", "MODE=prod"], Cmd: ["serve", "--port", "80"], Entrypoint: null, Labels: { maintainer: "x" }, User: "", WorkingDir: "", Tty: false, ...config },
    HostConfig: { RestartPolicy: { Name: "no" }, NetworkMode: "bridge", PortBindings: { "80/tcp": [{ HostIp: "", HostPort: "8080" }] }, SecurityOpt: ["no-new-privileges"], ...host },
  } as unknown as Docker.ContainerInspectInfo;
}

describe("adoptionView", () => {
  it("keeps only what the container adds to its image: a berth-made container hashes the same again", () => {
    expect(adoptionView(container(), image)).toEqual({ env: { MODE: "prod" }, command: ["serve", "--port", "80"], unsupported: [] });
    expect(adoptionView(container({ Cmd: ["/bin/sh"] }), image).command).toEqual([]);
    // A value that differs from the image's is the container's own.
    expect(adoptionView(container({ Env: ["PATH=/usr/bin"] }), image).env).toEqual({ PATH: "/usr/bin" });
  });

  it("an image without PATH: Docker's default PATH is not the container's own", () => {
    const bare = imageDefaults(undefined);
    expect(adoptionView(container({ Env: [DOCKER_DEFAULT_PATH, "A=1"] }), bare).env).toEqual({ A: "1" });
  });

  it("names everything a berth spec cannot express", () => {
    const v = adoptionView(
      container(
        { Entrypoint: ["/init"], User: "1000", WorkingDir: "/app", Tty: true, Labels: { maintainer: "x", team: "games", "berth.server": "srv_x" } },
        {
          Privileged: true,
          CapAdd: ["NET_ADMIN"],
          NetworkMode: "host",
          PidMode: "host",
          RestartPolicy: { Name: "unless-stopped" },
          Memory: 1 << 30,
          PortBindings: { "80/tcp": [{ HostIp: "127.0.0.1", HostPort: "8080" }], "81/tcp": [{ HostIp: "", HostPort: "" }] },
          SecurityOpt: ["no-new-privileges", "seccomp=unconfined"],
        },
      ),
      image,
    );
    expect(v.unsupported).toEqual([
      "privilege: privileged mode",
      "privilege: added capabilities beyond berth's allow-list (NET_ADMIN)",
      'privilege: network mode "host"',
      'privilege: pid mode "host"',
      "privilege: security options (seccomp=unconfined)",
      'Docker restart policy "unless-stopped" (berth decides restarts; until berth recreates the container Docker may restart it too)',
      "memory limit",
      'entrypoint ["/init"] (berth runs the image\'s entrypoint)',
      'user "1000"',
      'working directory "/app"',
      "a TTY",
      "port 80/tcp published on 127.0.0.1 only (berth publishes on every address)",
      "port 81/tcp published on a random host port (berth needs a fixed one; add it with UpdateServer)",
      "labels (team)",
    ]);
  });

  it("marks what berth never grants as a privilege, and only that", () => {
    const v = (h: Partial<Docker.HostConfig> & Record<string, unknown>) => adoptionView(container({}, h), image).unsupported;
    expect(v({ CapAdd: ["CAP_SYS_ADMIN", "NET_RAW"] })).toEqual([
      "privilege: added capabilities beyond berth's allow-list (SYS_ADMIN)",
      "added capabilities (NET_RAW; give them back with the spec's cap_add)",
    ]);
    expect(v({ NetworkMode: "container:abc", IpcMode: "host", UTSMode: "host", UsernsMode: "host" })).toEqual([
      'privilege: network mode "container:abc"',
      'privilege: ipc mode "host"',
      'privilege: uts mode "host"',
      'privilege: userns mode "host"',
    ]);
    expect(v({ Devices: [{ PathOnHost: "/dev/fuse", PathInContainer: "/dev/fuse", CgroupPermissions: "rwm" }], SecurityOpt: ["apparmor=unconfined"] })).toEqual([
      "privilege: devices (/dev/fuse)",
      "privilege: security options (apparmor=unconfined)",
    ]);
    // A user-defined network, a private IPC namespace, a seccomp profile: lost on recreation, not privileges.
    expect(v({ NetworkMode: "mynet", IpcMode: "private", SecurityOpt: ["seccomp=/etc/profile.json"] })).toEqual([
      'network mode "mynet" (berth puts it on its project\'s network)',
      "security options (seccomp=/etc/profile.json)",
    ]);
  });
});

describe("summaryInfo", () => {
  it("a docker ps entry, without environment or command", () => {
    const info = summaryInfo({
      Id: "abc",
      Names: ["/plain"],
      Image: "nginx:1",
      State: "exited",
      Status: "Exited (137) 5 minutes ago",
      Created: 1_700_000_000,
      Labels: { a: "b" },
      Command: "nginx -g 'daemon off;'",
      Ports: [
        { IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
        { IP: "::", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
        { PrivatePort: 443, Type: "tcp" },
        { IP: "0.0.0.0", PrivatePort: 53, PublicPort: 5353, Type: "udp" },
      ],
      Mounts: [{ Type: "bind", Source: "/srv/www", Destination: "/usr/share/nginx/html", RW: false }],
    } as unknown as Docker.ContainerInfo);
    expect(info).toMatchObject({ id: "abc", name: "plain", image: "nginx:1", state: "exited", exitCode: 137, labels: { a: "b" }, command: [], env: {} });
    expect(info.ports.map((p) => [p.hostPort, p.containerPort, p.protocol])).toEqual([
      [8080, 80, Protocol.TCP],
      [5353, 53, Protocol.UDP],
    ]);
    expect(info.mounts).toEqual(["/srv/www:/usr/share/nginx/html"]);
    expect(info.mountPoints[0]).toMatchObject({ type: "bind", source: "/srv/www", destination: "/usr/share/nginx/html", readOnly: true });
    expect(Number(info.createdTime!.seconds)).toBe(1_700_000_000);
  });
});
