import { describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { pino } from "pino";
import {
  DesiredState,
  Protocol,
  RestartPolicy,
  ServerService,
  ServerSpecSchema,
  type ServerSpec,
} from "@berth/proto/berth/v1/server_pb.js";
import { InvalidArgumentError } from "../errors.js";
import { errorInterceptor } from "./errors.js";
import { requireId, validateRequests, validateSpec } from "./validate.js";

/** The plain-object form of a ServerSpec init (not a ready message), so two can be spread together. */
type SpecInit = Exclude<MessageInitShape<typeof ServerSpecSchema>, ServerSpec>;

const GOOD: SpecInit = {
  name: "mc-1",
  image: "itzg/minecraft-server:java21",
  env: { EULA: "TRUE", _PRIV: "x" },
  ports: [
    { hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP },
    { hostPort: 19132, containerPort: 19132, protocol: Protocol.UDP },
  ],
  command: ["--nogui"],
};

function spec(over: Partial<SpecInit> = {}): ServerSpec {
  return create(ServerSpecSchema, { ...GOOD, ...over });
}

const port = (hostPort: number, containerPort = 80, protocol = Protocol.UNSPECIFIED) => ({ hostPort, containerPort, protocol });

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    const e = err as InvalidArgumentError;
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message.startsWith(`${e.field}: `)).toBe(true);
    return e.field;
  }
  throw new Error("expected an InvalidArgumentError, got none");
}

const BAD: [string, Partial<SpecInit>, string][] = [
  ["empty name", { name: "" }, "spec.name"],
  ["blank name", { name: "   " }, "spec.name"],
  ["uppercase name", { name: "Minecraft" }, "spec.name"],
  ["name of 64 characters", { name: "a".repeat(64) }, "spec.name"],
  ["unicode name", { name: "séb" }, "spec.name"],
  ["unicode digit-lookalike name", { name: "mc１" }, "spec.name"],
  ["path traversal name", { name: "../x" }, "spec.name"],
  ["name with a slash", { name: "a/b" }, "spec.name"],
  ["name starting with '-'", { name: "-mc" }, "spec.name"],
  ["name ending with '-'", { name: "mc-" }, "spec.name"],
  ["name with '_'", { name: "mc_1" }, "spec.name"],
  ["name with a dot", { name: "mc.1" }, "spec.name"],
  ["name with a newline", { name: "mc\n1" }, "spec.name"],
  ["empty image", { image: "" }, "spec.image"],
  ["blank image", { image: "  " }, "spec.image"],
  ["image with spaces", { image: "my image:latest" }, "spec.image"],
  ["image with uppercase", { image: "Postgres:16" }, "spec.image"],
  ["image with a shell metacharacter", { image: "busybox;rm" }, "spec.image"],
  ["image with a bad digest", { image: "busybox@sha256:1234" }, "spec.image"],
  ["image too long", { image: `a/${"b".repeat(260)}` }, "spec.image"],
  ["NUL in a command argument", { command: ["ok", "a\0b"] }, "spec.command[1]"],
  ["too many command arguments", { command: Array.from({ length: 257 }, () => "x") }, "spec.command"],
  ["command argument too long", { command: ["x".repeat(32 * 1024 + 1)] }, "spec.command[0]"],
  ["NUL in an env value", { env: { A: "x\0y" } }, 'spec.env["A"]'],
  ["env key starting with a digit", { env: { "1X": "v" } }, 'spec.env["1X"]'],
  ["env key with '-'", { env: { "A-B": "v" } }, 'spec.env["A-B"]'],
  ["env key with '='", { env: { "A=B": "v" } }, 'spec.env["A=B"]'],
  ["empty env key", { env: { "": "v" } }, 'spec.env[""]'],
  ["env value too long", { env: { BIG: "x".repeat(32 * 1024 + 1) } }, 'spec.env["BIG"]'],
  ["env over 256 KiB in total (9 values of 30 KiB)", { env: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`V${i}`, "x".repeat(30 * 1024)])) }, "spec.env"],
  ["too many env variables", { env: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`V${i}`, "x"])) }, "spec.env"],
  ["host port 0", { ports: [port(8080), port(0)] }, "spec.ports[1].host_port"],
  ["host port 70000", { ports: [port(8080), port(70000)] }, "spec.ports[1].host_port"],
  ["host port 65536", { ports: [port(65536)] }, "spec.ports[0].host_port"],
  ["container port 0", { ports: [port(8080, 0)] }, "spec.ports[0].container_port"],
  ["container port 65536", { ports: [port(8080, 65536)] }, "spec.ports[0].container_port"],
  ["duplicate tcp host port", { ports: [port(8080, 80, Protocol.TCP), port(8080, 81, Protocol.TCP)] }, "spec.ports[1].host_port"],
  ["duplicate host port, default protocol is tcp", { ports: [port(8080, 80, Protocol.TCP), port(8080, 81)] }, "spec.ports[1].host_port"],
  ["duplicate udp host port", { ports: [port(9000, 1, Protocol.UDP), port(1, 2), port(9000, 3, Protocol.UDP)] }, "spec.ports[2].host_port"],
  ["unknown protocol", { ports: [port(8080, 80, 7 as Protocol)] }, "spec.ports[0].protocol"],
  ["too many ports", { ports: Array.from({ length: 101 }, (_, i) => port(10_000 + i)) }, "spec.ports"],
  ["relative mount path", { dataMountPath: "data" }, "spec.data_mount_path"],
  ["mount path '/'", { dataMountPath: "/" }, "spec.data_mount_path"],
  ["mount path with '..'", { dataMountPath: "/data/../etc" }, "spec.data_mount_path"],
  ["mount path ending in '..'", { dataMountPath: "/data/.." }, "spec.data_mount_path"],
  ["mount path with NUL", { dataMountPath: "/data\0x" }, "spec.data_mount_path"],
  ["mount path too long", { dataMountPath: `/${"d".repeat(1024)}` }, "spec.data_mount_path"],
  ["unknown restart policy", { restartPolicy: 42 as RestartPolicy }, "spec.restart_policy"],
  ["unknown desired state", { desiredState: 42 as DesiredState }, "spec.desired_state"],
  ["name with surrounding spaces (clients trim)", { name: " mc-1 " }, "spec.name"],
  ["image with surrounding spaces", { image: " busybox " }, "spec.image"],
  ["mount path with surrounding spaces", { dataMountPath: " /srv " }, "spec.data_mount_path"],
  ["capability berth never gives back: MKNOD", { capAdd: ["MKNOD"] }, "spec.cap_add[0]"],
  ["capability berth never gives back: SETFCAP", { capAdd: ["NET_RAW", "SETFCAP"] }, "spec.cap_add[1]"],
  ["capability outside Docker's defaults", { capAdd: ["SYS_ADMIN"] }, "spec.cap_add[0]"],
  ["capability spelled with CAP_", { capAdd: ["CAP_NET_RAW"] }, "spec.cap_add[0]"],
  ["capability in lowercase", { capAdd: ["net_raw"] }, "spec.cap_add[0]"],
  ["ALL capabilities", { capAdd: ["ALL"] }, "spec.cap_add[0]"],
  ["a capability twice", { capAdd: ["NET_RAW", "NET_RAW"] }, "spec.cap_add"],
  ["log size under 64 KiB", { logMaxSizeBytes: 65535 }, "spec.log_max_size_bytes"],
  ["log size over 1 GiB", { logMaxSizeBytes: 1073741825 }, "spec.log_max_size_bytes"],
  ["21 log files", { logMaxFiles: 21 }, "spec.log_max_files"],
  ["ready pattern that does not compile", { readyPattern: "Done (" }, "spec.ready_pattern"],
  ["ready pattern with nested repetition (catastrophic backtracking)", { readyPattern: "^(a+)+$" }, "spec.ready_pattern"],
  ["ready pattern with a backreference", { readyPattern: "(a)\\1" }, "spec.ready_pattern"],
  ["ready pattern over 512 characters", { readyPattern: "a".repeat(513) }, "spec.ready_pattern"],
  ["ready pattern over 1024 characters", { readyPattern: "a".repeat(1025) }, "spec.ready_pattern"],
  ["unknown stop signal", { stopSignal: "SIGSTOP" }, "spec.stop_signal"],
  ["stop signal as a number", { stopSignal: "15" }, "spec.stop_signal"],
  ["stop signal in lowercase", { stopSignal: "sigint" }, "spec.stop_signal"],
];

describe("validateSpec rejects", () => {
  it("a spec with three problems: one InvalidArgument naming all three", () => {
    const bad = spec({ name: "BAD", image: "", ports: [port(8080), port(8080, 81)] });
    const err = (() => {
      try {
        validateSpec(bad);
      } catch (e) {
        return e as InvalidArgumentError;
      }
      throw new Error("expected an InvalidArgumentError");
    })();
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.field).toBe("spec.name");
    expect(err.message).toMatch(/^spec\.name: .*; spec\.image: .*; spec\.ports\[1\]\.host_port: host port 8080\/tcp is already used by ports\[0\]$/);
  });

  it.each(BAD)("%s → %s", (_label, over, field) => {
    expect(fieldOf(() => validateSpec(spec(over)))).toBe(field);
  });

  it("an environment just under the total cap is accepted (7 values of 32 KiB)", () => {
    const env = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`V${i}`, "x".repeat(32 * 1024)]));
    expect(Object.keys(validateSpec(spec({ env })).env)).toHaveLength(7);
  });

  it("a missing spec → spec", () => {
    expect(fieldOf(() => validateSpec(undefined))).toBe("spec");
  });

  it("prefixes fields with the given path", () => {
    expect(fieldOf(() => validateSpec(spec({ ports: [port(8080), port(0)] }), "server.spec"))).toBe("server.spec.ports[1].host_port");
    expect(fieldOf(() => validateSpec(undefined, "update.spec"))).toBe("update.spec");
  });
});

describe("validateSpec accepts and normalizes", () => {
  it("fills defaults: protocol TCP, restart ON_FAILURE, desired RUNNING, data mount /data", () => {
    const out = validateSpec(spec({ ports: [port(8080, 80)], dataMountPath: "" }));
    expect(out.ports.map((p) => p.protocol)).toEqual([Protocol.TCP]);
    expect(out.restartPolicy).toBe(RestartPolicy.ON_FAILURE);
    expect(out.desiredState).toBe(DesiredState.RUNNING);
    expect(out.dataMountPath).toBe("/data");
  });

  it("keeps explicit values", () => {
    const out = validateSpec(
      spec({
        ports: [port(8080, 80, Protocol.UDP)],
        restartPolicy: RestartPolicy.ALWAYS,
        desiredState: DesiredState.STOPPED,
        dataMountPath: "/var/lib/postgresql/data",
      }),
    );
    expect(out.ports[0]).toMatchObject({ hostPort: 8080, containerPort: 80, protocol: Protocol.UDP });
    expect(out.restartPolicy).toBe(RestartPolicy.ALWAYS);
    expect(out.desiredState).toBe(DesiredState.STOPPED);
    expect(out.dataMountPath).toBe("/var/lib/postgresql/data");
  });

  it("keeps every field it does not normalize (cap_add, log rotation)", () => {
    const out = validateSpec(spec({ capAdd: ["NET_RAW"], logMaxSizeBytes: 1 << 20, logMaxFiles: 5 }));
    expect(out).toMatchObject({ capAdd: ["NET_RAW"], logMaxSizeBytes: 1 << 20, logMaxFiles: 5 });
  });

  it("sorts the capabilities given back; log limits at 0 stay 0 (the manager's defaults)", () => {
    const out = validateSpec(spec({ capAdd: ["SYS_CHROOT", "AUDIT_WRITE", "NET_RAW"] }));
    expect(out.capAdd).toEqual(["AUDIT_WRITE", "NET_RAW", "SYS_CHROOT"]);
    expect(out).toMatchObject({ logMaxSizeBytes: 0, logMaxFiles: 0 });
  });

  it("keeps a safe ready pattern; stores a stop signal with SIG ('INT' is SIGINT)", () => {
    expect(validateSpec(spec({ readyPattern: "Done \\(\\d+\\.\\d+s\\)!" })).readyPattern).toBe("Done \\(\\d+\\.\\d+s\\)!");
    expect(validateSpec(spec({ stopSignal: "INT" })).stopSignal).toBe("SIGINT");
    expect(validateSpec(spec({ stopSignal: "SIGKILL" })).stopSignal).toBe("SIGKILL");
    expect(validateSpec(spec({})).stopSignal).toBe("");
  });

  it("a refused ready pattern's message says why and what to do", () => {
    expect(() => validateSpec(spec({ readyPattern: "^(a+)+$" }))).toThrow(/spec\.ready_pattern: refused: .*nested quantifier.*rewrite it/);
    expect(() => validateSpec(spec({ stopSignal: "SIGSTOP" }))).toThrow(/spec\.stop_signal: .*one of SIGTERM, SIGINT/);
  });

  it("trims the host id", () => {
    expect(validateSpec(spec({ hostId: " host_a " })).hostId).toBe("host_a");
  });

  it("returns a copy and leaves the input untouched", () => {
    const input = spec({ ports: [port(8080, 80)], env: { A: "1" }, command: ["a"] });
    const snapshot = structuredClone(input);
    const out = validateSpec(input);
    expect(input).toEqual(snapshot);
    expect(out).not.toBe(input);
    expect(out.env).not.toBe(input.env);
    expect(out.command).not.toBe(input.command);
    expect(out.env).toEqual({ A: "1" });
    expect(out.command).toEqual(["a"]);
  });

  it.each([
    ["single char name", { name: "a" }],
    ["63 char name", { name: `a${"b".repeat(61)}c` }],
    ["digits-only name", { name: "123" }],
    ["image with registry port, path and tag", { image: "registry.example.com:5000/team/app:1.2" }],
    ["image with a digest", { image: `busybox@sha256:${"a".repeat(64)}` }],
    ["image with tag and digest", { image: `ghcr.io/org/app:v1@sha256:${"0f".repeat(32)}` }],
    ["image with '__' in the path", { image: "org/my__app" }],
    ["same host port on tcp and udp", { ports: [port(25565, 25565, Protocol.TCP), port(25565, 25565, Protocol.UDP)] }],
    ["port 1 and 65535", { ports: [port(1, 1), port(65535, 65535)] }],
    ["no ports, no env, no command", { ports: [], env: {}, command: [] }],
    ["env key with lowercase and underscore", { env: { _lower_9: "" } }],
    ["nested mount path", { dataMountPath: "/a/b/c" }],
    ["mount path with a dot component", { dataMountPath: "/data/./x" }],
    ["200 env variables", { env: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`V${i}`, "x"])) }],
  ] as [string, Partial<SpecInit>][])("%s", (_label, over) => {
    expect(() => validateSpec(spec(over))).not.toThrow();
  });
});

describe("requireId", () => {
  it("trims and returns the id", () => {
    expect(requireId("  srv_abc ")).toBe("srv_abc");
  });
  it.each([
    ["", "id"],
    ["   ", "id"],
    ["x".repeat(254), "id"],
  ])("rejects %j", (v, field) => {
    expect(fieldOf(() => requireId(v))).toBe(field);
  });
  it("names the given field", () => {
    expect(fieldOf(() => requireId("", "server_id"))).toBe("server_id");
  });
});

describe("validateRequests (before any handler)", () => {
  const calls: string[] = [];
  const transport = createRouterTransport(
    (router) =>
      router.service(ServerService, {
        createServer: () => {
          calls.push("createServer");
          return {};
        },
        stopServer: () => {
          calls.push("stopServer");
          return {};
        },
      }),
    { router: { interceptors: [errorInterceptor(pino({ level: "silent" })), validateRequests()] } },
  );
  const client = createClient(ServerService, transport);
  const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

  it("a request with three problems answers one InvalidArgument naming all three, each with its field path", async () => {
    calls.length = 0;
    const err = await errorOf(
      client.createServer({ spec: { name: "Bad Name", image: "busybox", ports: [{ hostPort: 70000, containerPort: 80 }, { hostPort: 8080, containerPort: 0 }] } }),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toBe(
      "spec.name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. web-1); " +
        "spec.ports[0].host_port: must be greater than or equal to 1 and less than or equal to 65535; " +
        "spec.ports[1].container_port: must be greater than or equal to 1 and less than or equal to 65535",
    );
    expect(calls).toEqual([]);
  });

  it("adds what rules cannot express (a host port used twice) to the same answer", async () => {
    const err = await errorOf(client.createServer({ spec: { name: "BAD", image: "busybox", ports: [{ hostPort: 80, containerPort: 80 }, { hostPort: 80, containerPort: 81 }] } }));
    expect(err?.rawMessage).toMatch(/^spec\.name: .*; spec\.ports\[1\]\.host_port: host port 80\/tcp is already used by ports\[0\]$/);
  });

  it("refuses a missing spec and out-of-range numbers of any request", async () => {
    expect((await errorOf(client.createServer({})))?.rawMessage).toBe("spec: value is required");
    expect((await errorOf(client.stopServer({ id: "x", timeoutSeconds: 3601 })))?.rawMessage).toBe("timeout_seconds: must be less than or equal to 3600");
    expect(calls).toEqual([]);
  });

  it("lets a valid request through to its handler", async () => {
    await client.createServer({ spec: { name: "ok", image: "busybox", ports: [{ hostPort: 80, containerPort: 80 }] } });
    await client.stopServer({ id: "x", timeoutSeconds: 3600 });
    expect(calls).toEqual(["createServer", "stopServer"]);
  });
});
