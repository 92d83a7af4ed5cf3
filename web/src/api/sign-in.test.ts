import { describe, expect, it } from "vitest";
import { signInError } from "./sign-in.js";

describe("signInError", () => {
  it("turns the manager's Unauthenticated message into what to do, keeping its reason", () => {
    const m = signInError("Unauthenticated: unknown or revoked token");
    expect(m).toMatch(/^That token was not accepted \(unknown or revoked token\)\. Paste a whole token as printed/);
    expect(m).toContain("Tokens page");
    expect(signInError("Unavailable: the manager is not answering")).toBe("Unavailable: the manager is not answering");
  });
});
