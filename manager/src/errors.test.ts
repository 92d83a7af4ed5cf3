import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { InvalidArgumentError, MAX_ERROR_MESSAGE, MAX_VIOLATION_CHARS, NotFoundError, toConnectError } from "./errors.js";

describe("toConnectError", () => {
  it("keeps the code and caps the message: a quoted 70 kB id must not overflow gRPC's trailer", () => {
    const e = toConnectError(new NotFoundError("alert", "c".repeat(70_000)));
    expect(e.code).toBe(Code.NotFound);
    expect(e.rawMessage.length).toBe(MAX_ERROR_MESSAGE);
    expect(e.rawMessage).toMatch(/^alert "c+…$/);
    const passthrough = toConnectError(new ConnectError("x".repeat(5000), Code.ResourceExhausted));
    expect(passthrough.code).toBe(Code.ResourceExhausted);
    expect(passthrough.rawMessage.length).toBe(MAX_ERROR_MESSAGE);
    expect(toConnectError(new NotFoundError("server", "a")).rawMessage).toBe('server "a" not found');
  });

  it("a full disk is Unavailable with what to do; anything unexpected is Internal without details", () => {
    const full = Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
    expect(toConnectError(full)).toMatchObject({ code: Code.Unavailable, rawMessage: "the manager's database disk is full; free space on it and retry" });
    expect(toConnectError(new Error("secret detail"))).toMatchObject({ code: Code.Internal, rawMessage: "internal error; see the manager log" });
  });

  it("InvalidArgument carries its field violations as a google.rpc.BadRequest, bounded like the message", () => {
    const one = toConnectError(new InvalidArgumentError("page_size", "must not be negative"));
    expect(one.findDetails(BadRequestSchema).map((d) => d.fieldViolations.map((v) => [v.field, v.description]))).toEqual([[["page_size", "must not be negative"]]]);

    // 300 long problems: the message is clipped, the detail keeps the first ones that fit (never none).
    const many = Array.from({ length: 300 }, (_, i) => ({ field: `spec.env["K${i}"]`, description: "x".repeat(100) }));
    const e = toConnectError(new InvalidArgumentError(many[0]!.field, many.map((v) => `${v.field}: ${v.description}`).join("; "), many));
    expect(e.rawMessage.length).toBe(MAX_ERROR_MESSAGE);
    const sent = e.findDetails(BadRequestSchema)[0]!.fieldViolations;
    expect(sent.length).toBeGreaterThan(10);
    expect(sent.length).toBeLessThan(many.length);
    expect(sent.map((v) => v.field)).toEqual(many.slice(0, sent.length).map((v) => v.field));
    expect(sent.reduce((n, v) => n + v.field.length + v.description.length, 0)).toBeLessThanOrEqual(MAX_VIOLATION_CHARS);
    const huge = toConnectError(new InvalidArgumentError("id", "y".repeat(50_000)));
    expect(huge.findDetails(BadRequestSchema)[0]!.fieldViolations[0]!.description.length).toBe(MAX_VIOLATION_CHARS / 4);
  });

  it("never sends half of a surrogate pair: a clip keeps whole emoji, a lone surrogate becomes U+FFFD", () => {
    const wellFormed = (t: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(t);
    // The emoji straddles the clip point (code units MAX-2 and MAX-1): dropped whole.
    const straddling = toConnectError(new ConnectError(`${"a".repeat(MAX_ERROR_MESSAGE - 2)}💥💥 and more`, Code.InvalidArgument));
    expect(wellFormed(straddling.rawMessage)).toBe(true);
    expect(straddling.rawMessage).toBe(`${"a".repeat(MAX_ERROR_MESSAGE - 2)}…`);
    // One code unit earlier it fits whole.
    const fitting = toConnectError(new ConnectError(`${"a".repeat(MAX_ERROR_MESSAGE - 3)}💥💥 and more`, Code.InvalidArgument));
    expect(fitting.rawMessage).toBe(`${"a".repeat(MAX_ERROR_MESSAGE - 3)}💥…`);
    expect(toConnectError(new NotFoundError("server", "x\ud800y\udc00")).rawMessage).toBe('server "x\ufffdy\ufffd" not found');
    // Every length: whatever the clip point, the message stays well-formed and within bounds.
    for (let pad = 0; pad < 4; pad++) {
      const e = toConnectError(new InvalidArgumentError("f", `${"b".repeat(pad)}${"😀".repeat(MAX_ERROR_MESSAGE)}`));
      expect(wellFormed(e.rawMessage)).toBe(true);
      expect(e.rawMessage.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE);
      expect(() => encodeURIComponent(e.rawMessage)).not.toThrow();
      for (const v of e.findDetails(BadRequestSchema)[0]!.fieldViolations) expect(wellFormed(v.description)).toBe(true);
    }
  });
});
