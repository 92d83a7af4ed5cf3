import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Protocol, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { emptyForm, fieldOfMessage, formatSize, formFromSpec, FormError, parseSize, portSuggestions, specFromForm } from "./spec-form-model.js";

describe("spec form", () => {
  it("builds a spec from the form: shell-like command, KEY=VALUE env, ports", () => {
    const spec = specFromForm({
      ...emptyForm(),
      name: " mc ",
      image: "itzg/minecraft:2",
      command: `sh -c 'echo "hi there"; exec sleep 1'`,
      env: "EULA=TRUE\n\nMOTD=a=b",
      ports: [
        { host: "25565", container: "", udp: false },
        { host: "19132", container: "19132", udp: true },
        { host: "", container: "", udp: false },
      ],
    });
    expect(spec.name).toBe("mc");
    expect(spec.command).toEqual(["sh", "-c", 'echo "hi there"; exec sleep 1']);
    expect(spec.env).toEqual({ EULA: "TRUE", MOTD: "a=b" });
    expect(spec.ports).toEqual([
      { hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP },
      { hostPort: 19132, containerPort: 19132, protocol: Protocol.UDP },
    ]);
  });

  it("names the field it cannot parse", () => {
    expect(() => specFromForm({ ...emptyForm(), command: "sh -c 'oops" })).toThrow(FormError);
    try {
      specFromForm({ ...emptyForm(), ports: [{ host: "80x", container: "", udp: false }] });
    } catch (e) {
      expect((e as FormError).field).toBe("ports.0.host");
    }
    expect(() => specFromForm({ ...emptyForm(), env: "NOEQUALS" })).toThrow(/line 1/);
  });

  it("round-trips a spec through the form", () => {
    const spec = create(ServerSpecSchema, {
      name: "a",
      image: "i:1",
      command: ["sh", "-c", "exec sleep 100000"],
      env: { B: "2", A: "x y" },
      ports: [{ hostPort: 1, containerPort: 2, protocol: Protocol.UDP }],
      dataMountPath: "/data",
      restartPolicy: RestartPolicy.ALWAYS,
    });
    const back = specFromForm(formFromSpec(spec));
    expect(back.command).toEqual(spec.command);
    expect(back.env).toEqual(spec.env);
    expect(back.ports).toEqual([{ hostPort: 1, containerPort: 2, protocol: Protocol.UDP }]);
    expect(formFromSpec(spec).env).toBe("A=x y\nB=2");
  });

  it("keeps capabilities given back and log limits through an edit (the editor must not reset them)", () => {
    const spec = create(ServerSpecSchema, { name: "a", image: "i:1", capAdd: ["SYS_CHROOT", "NET_RAW"], logMaxSizeBytes: 512 * 1024, logMaxFiles: 5 });
    const form = formFromSpec(spec);
    expect(form).toMatchObject({ capAdd: ["SYS_CHROOT", "NET_RAW"], logMaxSize: "512K", logMaxFiles: "5" });
    expect(specFromForm(form)).toMatchObject({ capAdd: ["NET_RAW", "SYS_CHROOT"], logMaxSizeBytes: 512 * 1024, logMaxFiles: 5 });
    // Empty means the manager's defaults.
    expect(specFromForm(emptyForm())).toMatchObject({ capAdd: [], logMaxSizeBytes: 0, logMaxFiles: 0 });
  });

  it("reads log sizes with or without a unit, and names the field it cannot read", () => {
    expect(["65536", "64K", "10M", "10 MiB", "1G", "2kb"].map(parseSize)).toEqual([65536, 65536, 10485760, 10485760, 1073741824, 2048]);
    expect(["", "ten", "1.5M", "-1", "5T"].map(parseSize)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect([10485760, 65536, 100_000].map(formatSize)).toEqual(["10M", "64K", "100000"]);
    try {
      specFromForm({ ...emptyForm(), logMaxSize: "big" });
      throw new Error("no FormError");
    } catch (e) {
      expect((e as FormError).field).toBe("logMaxSize");
    }
    expect(() => specFromForm({ ...emptyForm(), logMaxFiles: "3x" })).toThrow(/not a number of files/);
  });

  it("maps the manager's field paths onto form fields", () => {
    expect(fieldOfMessage("spec.cap_add[0]: must be in list [AUDIT_WRITE, FSETID, NET_RAW, SETPCAP, SYS_CHROOT]")).toBe("capAdd");
    expect(fieldOfMessage("spec.log_max_size_bytes: must be greater than or equal to 65536")).toBe("logMaxSize");
    expect(fieldOfMessage("spec.log_max_files: must be less than or equal to 20")).toBe("logMaxFiles");
    expect(fieldOfMessage("spec.ports[1].host_port: 0 is out of range 1-65535")).toBe("ports.1.host");
    expect(fieldOfMessage("spec.ports[0].container_port: 0 is out of range")).toBe("ports.0.container");
    expect(fieldOfMessage('spec.name: "A" is not a valid name')).toBe("name");
    expect(fieldOfMessage("spec.env.FOO: must not contain NUL bytes")).toBe("env");
    expect(fieldOfMessage('spec.env["1X"]: does not match regex pattern `^[A-Za-z_][A-Za-z0-9_]*$`; spec.name: x')).toBe("env");
    expect(fieldOfMessage("spec.command[2]: does not match regex pattern")).toBe("command");
    expect(fieldOfMessage("spec.data_mount_path: cannot be '/'")).toBe("dataMountPath");
    expect(fieldOfMessage("no host is connected")).toBeUndefined();
  });

  it("reads port conflicts and the suggested free ports", () => {
    const msg = 'port conflict on host host_x: host port 25565/tcp is used by server "mc-1" (try 25566); host port 53/udp is used by server "dns"';
    expect(portSuggestions(msg)).toEqual([
      { port: 25565, udp: false, usedBy: "mc-1", suggestion: 25566 },
      { port: 53, udp: true, usedBy: "dns", suggestion: undefined },
    ]);
  });

  it("reads a conflict with another project's server, which the manager does not name", () => {
    expect(portSuggestions("port conflict on host h: host port 8080/tcp is used by a server in another project (try 8081)")).toEqual([
      { port: 8080, udp: false, usedBy: "a server in another project", suggestion: 8081 },
    ]);
  });

  it("keeps secret env keys: masked values go back as they came, so the manager keeps the stored ones", () => {
    const spec = create(ServerSpecSchema, { name: "db", image: "i:1", env: { DB_PASSWORD: "********", TZ: "UTC" }, secretEnv: ["DB_PASSWORD"] });
    const form = formFromSpec(spec);
    expect(form.secretEnv).toBe("DB_PASSWORD");
    expect(specFromForm(form)).toMatchObject({ env: { DB_PASSWORD: "********", TZ: "UTC" }, secretEnv: ["DB_PASSWORD"] });
    expect(specFromForm({ ...form, secretEnv: "DB_PASSWORD, TZ" }).secretEnv).toEqual(["DB_PASSWORD", "TZ"]);
    expect(() => specFromForm({ ...form, secretEnv: "API_TOKEN" })).toThrow(/API_TOKEN is not set in Environment/);
    expect(fieldOfMessage("spec.secret_env[0]: value must be unique")).toBe("secretEnv");
  });
});
