import { describe, expect, it } from "vitest";
import { pageTokenAfter, positionOfPageToken } from "./page-token.js";

describe("keyset page tokens", () => {
  it("round-trips the last row's position, and is empty without a next page", () => {
    const t = pageTokenAfter({ createdAt: 1_700_000_000_123, id: "bk_abcd2345" }, true);
    expect(positionOfPageToken(t, "bk", "ListBackups")).toEqual({ createdAt: 1_700_000_000_123, id: "bk_abcd2345" });
    expect(pageTokenAfter({ createdAt: 1, id: "bk_x" }, false)).toBe("");
    expect(positionOfPageToken("", "bk", "ListBackups")).toBeUndefined();
  });

  it("refuses a token of another list or garbage, naming the RPC", () => {
    const servers = pageTokenAfter({ createdAt: 5, id: "srv_abcd" }, true);
    expect(() => positionOfPageToken(servers, "bk", "ListBackups")).toThrow(/not a token returned by ListBackups/);
    expect(() => positionOfPageToken("%%%", "srv", "ListServers")).toThrow(/page_token|ListServers/);
  });
});
