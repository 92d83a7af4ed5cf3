import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { file_buf_validate_validate as packaged } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { file_buf_validate_validate as vendored } from "@berth/proto/buf/validate/validate_pb.js";
import { ScheduleSpecSchema } from "@berth/proto/berth/v1/schedule_pb.js";
import { CreateServerRequestSchema, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { printValidateProto } from "../../../scripts/vendor-validate-proto.js";
import { invalidArgument, MAX_LISTED_PROBLEMS, ruleProblems } from "./protovalidate.js";

describe("the vendored buf/validate/validate.proto", () => {
  it("compiles to exactly the descriptor @bufbuild/protovalidate evaluates (re-run scripts/vendor-validate-proto.ts after an upgrade)", () => {
    expect(toBinary(FileDescriptorProtoSchema, vendored.proto)).toEqual(toBinary(FileDescriptorProtoSchema, packaged.proto));
  });

  it("is what the script prints today", () => {
    const committed = readFileSync(new URL("../../../proto/buf/validate/validate.proto", import.meta.url), "utf8");
    const version = /@bufbuild\/protovalidate (\S+) /.exec(committed)?.[1] ?? "?";
    expect(printValidateProto(packaged.proto, version)).toBe(committed);
  });
});

describe("ruleProblems", () => {
  it("lists every broken rule with its field path, not only the first", () => {
    const req = create(CreateServerRequestSchema, {
      spec: { name: "Bad Name", image: "busybox", env: { "1X": "v" }, ports: [{ hostPort: 80, containerPort: 70000 }] },
    });
    expect(ruleProblems(CreateServerRequestSchema, req).map((p) => p.field)).toEqual([
      "spec.name",
      'spec.env["1X"]',
      "spec.ports[0].container_port",
    ]);
  });

  it("labels: keys and values by their rules, on servers, ListServers and schedule selectors alike", () => {
    const spec = create(ServerSpecSchema, { name: "ok", image: "busybox", labels: { tier: "prod", "example.com/game": "mc-1.20", canary: "", Bad: "x", "-x": "y", ok: "has space", long: "v".repeat(64) } });
    expect(ruleProblems(ServerSpecSchema, spec)).toEqual([
      { field: 'labels["Bad"]', message: expect.stringContaining("a label key is 1-63 lowercase letters") },
      { field: 'labels["-x"]', message: expect.stringContaining("a label key is 1-63 lowercase letters") },
      { field: 'labels["ok"]', message: expect.stringContaining("a label value is at most 63") },
      { field: 'labels["long"]', message: expect.stringContaining("a label value is at most 63") },
    ]);
    const selector = create(ScheduleSpecSchema, { name: "s", cron: "@daily", target: { kind: { case: "selector", value: { labels: { "Tier": "prod" } } } } });
    expect(ruleProblems(ScheduleSpecSchema, selector).map((p) => p.field)).toContain('target.selector.labels["Tier"]');
  });

  it("prefixes paths for a message checked on its own", () => {
    const spec = create(ServerSpecSchema, { name: "ok", image: "busybox", command: ["a", "b\0"] });
    expect(ruleProblems(ServerSpecSchema, spec, "adopted")).toEqual([{ field: "adopted.command[1]", message: expect.stringMatching(/regex/) }]);
  });

  it("finds nothing wrong with a valid message", () => {
    expect(ruleProblems(ServerSpecSchema, create(ServerSpecSchema, { name: "ok", image: "busybox" }))).toEqual([]);
  });
});

describe("invalidArgument", () => {
  it("names every problem in one InvalidArgument, the first one's field first", () => {
    const err = invalidArgument([
      { field: "spec.name", message: "bad" },
      { field: "spec.ports[0].host_port", message: "too big" },
    ]);
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.field).toBe("spec.name");
    expect(err.message).toBe("spec.name: bad; spec.ports[0].host_port: too big");
  });

  it(`spells out at most ${MAX_LISTED_PROBLEMS} problems (the message travels in a header)`, () => {
    const problems = Array.from({ length: 250 }, (_, i) => ({ field: `spec.env["K${i}"]`, message: "bad" }));
    const message = invalidArgument(problems).message;
    expect(message.split("; ")).toHaveLength(MAX_LISTED_PROBLEMS + 1);
    expect(message).toMatch(/; and 230 more problems$/);
  });
});
