import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Protocol, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import {
  compareFields,
  emptyForm,
  fieldLabel,
  fieldOfMessage,
  fieldOfPath,
  formatSize,
  formFromSpec,
  FormError,
  parseSize,
  portSuggestions,
  problemsAfterEdit,
  problemsOfAnswer,
  specFromForm,
  type SpecForm,
} from "./spec-form-model.js";

describe("spec form", () => {
  it("builds a spec from the form: argv as given, KEY=VALUE env, ports", () => {
    const spec = specFromForm({
      ...emptyForm(),
      name: " mc ",
      image: "itzg/minecraft:2",
      command: ["sh", "-c", 'echo "hi there"; exec sleep 1'],
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
    try {
      specFromForm({ ...emptyForm(), ports: [{ host: "80x", container: "", udp: false }] });
      throw new Error("no FormError");
    } catch (e) {
      expect((e as FormError).field).toBe("ports.0.host");
      // The container port (empty: the host port's) is not reported again.
      expect((e as FormError).problems).toHaveLength(1);
    }
    expect(() => specFromForm({ ...emptyForm(), env: "NOEQUALS" })).toThrow(/line 1/);
  });

  it("names every field it cannot parse at once, in the form's order", () => {
    const form: SpecForm = {
      ...emptyForm(),
      env: "NOEQUALS",
      ports: [
        { host: "", container: "", udp: false },
        { host: "80", container: "http", udp: false },
      ],
      logMaxSize: "big",
      logMaxFiles: "3x",
    };
    let err: unknown;
    try {
      specFromForm(form);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FormError);
    // ports.1: the row as the form shows it (the empty row 0 is not sent, but still counted).
    expect((err as FormError).problems.map((p) => p.field)).toEqual(["env", "ports.1.container", "logMaxSize", "logMaxFiles"]);
  });

  it("keeps the argv exactly: arguments with spaces, quotes and empty ones round-trip", () => {
    const argv = ["sh", "-c", `echo "a b"  'c'; exec sleep 1`, "", "two words", "line 1\nline 2"];
    const form = formFromSpec(create(ServerSpecSchema, { name: "a", image: "i:1", command: argv }));
    expect(form.command).toEqual(argv);
    expect(specFromForm(form).command).toEqual(argv);
    expect(specFromForm(formFromSpec(create(ServerSpecSchema, { name: "a", image: "i:1" }))).command).toEqual([]);
  });

  it("console and its stop command round-trip; the stop command is not sent without a console", () => {
    const spec = create(ServerSpecSchema, { name: "mc", image: "i", console: true, stopCommand: "stop" });
    expect(specFromForm(formFromSpec(spec))).toMatchObject({ console: true, stopCommand: "stop" });
    expect(specFromForm({ ...formFromSpec(spec), console: false })).toMatchObject({ console: false, stopCommand: "" });
    expect(fieldOfPath("spec.stop_command")).toBe("stopCommand");
  });

  it("keeps the ready pattern and stop signal through an edit (the form has no input for them)", () => {
    const spec = create(ServerSpecSchema, { name: "mc", image: "i", readyPattern: "Done \\(.*\\)!", stopSignal: "SIGINT" });
    expect(specFromForm(formFromSpec(spec))).toMatchObject({ readyPattern: "Done \\(.*\\)!", stopSignal: "SIGINT" });
    expect(specFromForm(emptyForm())).toMatchObject({ readyPattern: "", stopSignal: "" });
  });

  it("labels: key=value lines round-trip sorted; a line without '=' is named; the manager's labels[\"K\"] lands on Labels", () => {
    const spec = create(ServerSpecSchema, { name: "mc", image: "i", labels: { tier: "prod", "example.com/game": "mc", canary: "" } });
    const f = formFromSpec(spec);
    expect(f.labels).toBe("canary=\nexample.com/game=mc\ntier=prod");
    expect(specFromForm(f).labels).toEqual({ tier: "prod", "example.com/game": "mc", canary: "" });
    expect(specFromForm({ ...f, labels: " tier = prod \n\n" }).labels).toEqual({ tier: "prod" });
    let err: unknown;
    try {
      specFromForm({ ...f, labels: "tier=prod\noops" });
    } catch (e) {
      err = e;
    }
    expect((err as FormError).problems).toEqual([{ field: "labels", message: "line 2: write key=value (e.g. tier=prod)" }]);
    expect(fieldOfPath('spec.labels["Bad"]')).toBe("labels");
    expect(fieldLabel("labels")).toBe("Labels");
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
    expect(fieldOfMessage("spec.command[2]: does not match regex pattern")).toBe("command.2");
    expect(fieldOfMessage("spec.command: must contain no more than 256 item(s)")).toBe("command");
    expect(fieldOfPath("project")).toBe("project");
    expect(fieldOfPath("spec.host_id")).toBe("hostId");
    expect(fieldOfPath("id")).toBeUndefined();
    // The spec's ports[i] is the i-th row sent: empty rows are not.
    const rows = { ports: [{ host: "", container: "", udp: false }, { host: "1", container: "", udp: false }, { host: "2", container: "", udp: false }] };
    expect(fieldOfPath("spec.ports[1].host_port", rows)).toBe("ports.2.host");
    // A container port left empty is the host port's.
    expect(fieldOfPath("spec.ports[0].container_port", rows)).toBe("ports.1.host");
    expect(fieldOfPath("spec.ports[0].container_port", { ports: [{ host: "1", container: "0", udp: false }] })).toBe("ports.0.container");
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

  it("puts every violation of the manager's answer on its field; one on no form field keeps its path", () => {
    const violations = [
      { field: "spec.name", description: "must be lowercase" },
      { field: "spec.ports[0].host_port", description: "must be greater than or equal to 1" },
      { field: "spec.ports[2].host_port", description: "host port 9000/tcp is already used by ports[1]" },
      { field: "expected_version", description: "must be positive" },
    ];
    const problems = problemsOfAnswer({ message: "spec.name: must be lowercase; …", violations });
    expect(problems).toEqual([
      { field: "name", message: "must be lowercase" },
      { field: "ports.0.host", message: "must be greater than or equal to 1" },
      { field: "ports.2.host", message: "host port 9000/tcp is already used by ports[1]" },
      { field: undefined, message: "expected_version: must be positive" },
    ]);
    // Without details (an older manager): the message, on the field it starts with.
    expect(problemsOfAnswer({ message: "spec.image: bad", violations: [] })).toEqual([{ field: "image", message: "spec.image: bad" }]);
    expect(problems.flatMap((p) => (p.field ? [fieldLabel(p.field)] : []))).toEqual(["Name", "Host port 1", "Host port 3"]);
    expect(fieldLabel("command.0")).toBe("Argument 1");
    // Listed as the form shows them, not as the manager found them.
    expect(["capAdd", "ports.1.host", "dataMountPath", "ports.0.container", "command.10", "command.2", "ports.0.host", "name"].sort(compareFields)).toEqual([
      "name",
      "dataMountPath",
      "command.2",
      "command.10",
      "ports.0.host",
      "ports.0.container",
      "ports.1.host",
      "capAdd",
    ]);
    // A host port of 0 with the container port left empty breaks both rules: one problem, on the host port.
    const zero = { ports: [{ host: "0", container: "", udp: false }] };
    const both = [
      { field: "spec.ports[0].host_port", description: "must be greater than or equal to 1" },
      { field: "spec.ports[0].container_port", description: "must be greater than or equal to 1" },
    ];
    expect(problemsOfAnswer({ message: "", violations: both }, zero)).toEqual([{ field: "ports.0.host", message: "must be greater than or equal to 1" }]);
  });

  it("a field's problem goes away when its value changes; the others and those on no field stay", () => {
    const before: SpecForm = { ...emptyForm(), name: "Bad", image: "x y", command: ["sh", "-c"], ports: [{ host: "0", container: "80", udp: false }] };
    const problems = [
      { field: "name", message: "n" },
      { field: "image", message: "i" },
      { field: "command.1", message: "c" },
      { field: "ports.0.host", message: "p" },
      { field: undefined, message: "no host is connected" },
    ];
    expect(problemsAfterEdit(problems, before, { ...before })).toBe(problems);
    expect(problemsAfterEdit(problems, before, { ...before, name: "good" }).map((p) => p.field)).toEqual(["image", "command.1", "ports.0.host", undefined]);
    expect(problemsAfterEdit(problems, before, { ...before, command: ["sh", "-x"] }).map((p) => p.field)).toEqual(["name", "image", "ports.0.host", undefined]);
    expect(problemsAfterEdit(problems, before, { ...before, command: ["sh"] }).map((p) => p.field)).toEqual(["name", "image", "ports.0.host", undefined]);
    // The protocol is part of the host port (a port used twice is per protocol); the container port is not.
    expect(problemsAfterEdit(problems, before, { ...before, ports: [{ host: "0", container: "81", udp: false }] })).toHaveLength(5);
    expect(problemsAfterEdit(problems, before, { ...before, ports: [{ host: "0", container: "80", udp: true }] })).toHaveLength(4);
    expect(problemsAfterEdit([{ field: "project", message: "x" }], { ...before, project: "a" }, { ...before, project: "b" })).toEqual([]);
  });
});

describe("spec form: resource limits", () => {
  it("sends only the limits set, sizes and cores parsed, 'none' as no process limit; a spec's limits come back the same", () => {
    expect(specFromForm({ ...emptyForm(), name: "a", image: "i" }).resources).toBeUndefined();
    const spec = specFromForm({ ...emptyForm(), name: "a", image: "i", memLimit: "512M", memSwap: "1G", cpus: "1.5", cpusetCpus: " 0-1 ", pidsLimit: "none", cpuShares: "512", blkioWeight: "300" });
    expect(spec.resources).toEqual({ memoryBytes: 512n * 1024n * 1024n, memorySwapBytes: 1024n ** 3n, cpus: 1.5, cpuShares: 512, cpusetCpus: "0-1", pidsLimit: -1n, blkioWeight: 300, diskQuotaBytes: 0n, stopOverDiskQuota: false });
    expect(specFromForm({ ...emptyForm(), name: "a", image: "i", diskQuota: "10G", stopOverDiskQuota: true }).resources).toMatchObject({ diskQuotaBytes: 10n * 1024n ** 3n, stopOverDiskQuota: true });
    const back = formFromSpec(create(ServerSpecSchema, spec as MessageInitShape<typeof ServerSpecSchema>));
    expect(back).toMatchObject({ memLimit: "512M", memSwap: "1G", cpus: "1.5", cpusetCpus: "0-1", pidsLimit: "none", cpuShares: "512", blkioWeight: "300" });
    // Swap equal to memory is no swap: shown empty.
    expect(formFromSpec(create(ServerSpecSchema, { resources: { memoryBytes: 1024n, memorySwapBytes: 1024n } })).memSwap).toBe("");
  });

  it("names every field it cannot read, and maps the manager's paths onto them", () => {
    try {
      specFromForm({ ...emptyForm(), name: "a", image: "i", memLimit: "lots", cpus: "half", pidsLimit: "12x" });
      expect.unreachable();
    } catch (err) {
      expect((err as FormError).problems.map((p) => p.field)).toEqual(["memLimit", "cpus", "pidsLimit"]);
    }
    expect(fieldOfPath("spec.resources.memory_bytes")).toBe("memLimit");
    expect(fieldOfPath("spec.resources.cpuset_cpus")).toBe("cpusetCpus");
    expect(fieldOfPath("spec.resources")).toBe("memSwap");
    expect(fieldLabel("pidsLimit")).toBe("Process limit");
    expect(compareFields("logMaxFiles", "memLimit")).toBeLessThan(0);
    expect(compareFields("blkioWeight", "capAdd")).toBeLessThan(0);
  });
});
