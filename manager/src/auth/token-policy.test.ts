import { describe, expect, it } from "vitest";
import type { Caller } from "./caller.js";
import { checkNewToken, parseRole } from "./token-policy.js";

const root: Caller = { tokenId: "tok_root", name: "root", role: "admin", project: null };
const webAdmin: Caller = { tokenId: "tok_w", name: "web-admin", role: "admin", project: "web" };

function err(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return "no error";
}

describe("checkNewToken", () => {
  it("needs a name and a role", () => {
    expect(err(() => checkNewToken({ name: " ", role: "viewer", project: "web" }, root))).toMatch(/^name: required/);
    expect(err(() => checkNewToken({ name: "x", role: undefined, project: "web" }, root))).toMatch(/^role: required/);
    expect(err(() => checkNewToken({ name: "a\nb", role: "viewer", project: "web" }, root))).toMatch(/control characters/);
    expect(err(() => checkNewToken({ name: "x".repeat(65), role: "viewer", project: "web" }, root))).toMatch(/at most 64/);
  });

  it("validates the project name", () => {
    expect(err(() => checkNewToken({ name: "x", role: "viewer", project: "Web Team" }, root))).toMatch(/^project: "Web Team" is not a valid project name/);
  });

  it("gives all-projects scope only to admin tokens made by an all-projects creator", () => {
    expect(checkNewToken({ name: "r2", role: "admin", project: "" }, root)).toEqual({ name: "r2", role: "admin", project: null });
    expect(checkNewToken({ name: "r2", role: "admin", project: "" }, undefined).project).toBeNull();
    expect(err(() => checkNewToken({ name: "v", role: "viewer", project: "" }, root))).toMatch(/^project: required for a viewer token/);
    expect(err(() => checkNewToken({ name: "o", role: "operator", project: "" }, undefined))).toMatch(/^project: required for an operator token/);
  });

  it("keeps a project-scoped admin's tokens in its project; another project answers NotFound", () => {
    expect(checkNewToken({ name: "a", role: "admin", project: "" }, webAdmin)).toEqual({ name: "a", role: "admin", project: "web" });
    expect(checkNewToken({ name: "v", role: "viewer", project: "web" }, webAdmin).project).toBe("web");
    expect(err(() => checkNewToken({ name: "v", role: "viewer", project: "games" }, webAdmin))).toMatch(/project "games" not found/);
  });
});

describe("parseRole", () => {
  it("knows the three roles", () => {
    expect(["viewer", "operator", "admin", "root", ""].map(parseRole)).toEqual(["viewer", "operator", "admin", undefined, undefined]);
  });
});
