import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { MAX_ERROR_MESSAGE, NotFoundError, toConnectError } from "./errors.js";

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
});
