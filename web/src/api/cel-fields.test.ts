import { describe, expect, it } from "vitest";
import { ServerSchema } from "@berth/proto/berth/v1/server_pb.js";
import { applySuggestion, celFields, errorPosition, fieldPaths, suggest, wordAt } from "./cel-fields.js";

describe("cel-fields", () => {
  it("lists a server's fields by their proto (snake_case) names, nested to depth 3, maps as [\"key\"]", () => {
    const f = celFields("server");
    expect(f).toContain("server.id");
    expect(f).toContain("server.create_time");
    expect(f).toContain("server.spec.labels");
    expect(f).toContain('server.spec.labels["key"]');
    expect(f).toContain("server.spec.resources.memory_bytes");
    expect(f).toContain("server.status.phase");
    expect(f).toContain("server.spec.ports");
    expect(f).toContain("now");
    // Well-known types are leaves; camelCase never appears.
    expect(f.some((p) => p.startsWith("server.create_time."))).toBe(false);
    expect(f.some((p) => /[A-Z]/.test(p.replace(/\["key"\]/, "")))).toBe(false);
    expect(f.every((p) => p === "now" || p.split(".").length <= 4)).toBe(true);
  });

  it("lists hosts' and events' fields", () => {
    expect(celFields("host")).toContain("host.draining");
    expect(celFields("host")).toContain("host.state");
    expect(celFields("event")).toEqual(expect.arrayContaining(["event.type", "event.actor", "event.payload_json", "event.time", "event.server_id"]));
  });

  it("stops at the depth asked", () => {
    const one = fieldPaths(ServerSchema, "s", 1);
    expect(one).toContain("s.spec");
    expect(one.some((p) => p.startsWith("s.spec."))).toBe(false);
  });

  it("finds the word under the cursor and completes it", () => {
    expect(wordAt('server.sp == "x"', 9)).toEqual({ start: 0, end: 9, word: "server.sp" });
    const s = suggest("a && server.status.ph", 21, celFields("server"));
    expect(s.options).toEqual(["server.status.phase"]);
    expect(applySuggestion("a && server.status.ph", s, s.options[0]!)).toEqual({ text: "a && server.status.phase", cursor: 24 });
    expect(suggest("", 0, celFields("server")).options).toEqual([]);
    // Not inside a string literal.
    expect(suggest('event.type == "server.', 22, celFields("event")).options).toEqual([]);
    expect(suggest("event.ty", 8, celFields("event")).options).toEqual(["event.type"]);
    expect(suggest("server.", 7, celFields("server"), 3).options).toHaveLength(3);
  });

  it("reads the line and column from the manager's message", () => {
    expect(errorPosition("filter: syntax error at line 1, column 20: mismatched input")).toEqual({ line: 1, column: 20 });
    expect(errorPosition("filter: the expression is of type string, not bool")).toBeUndefined();
  });
});
