import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MIGRATIONS } from "./migrations.js";

// SQLite databases in the field are at some version between 1 and 7 and migrate
// from there with these texts: a shipped text that changed would leave two
// databases at one version with different schemas. These are the hashes of the
// texts as they shipped (before the list gained a PostgreSQL dialect).
const SHIPPED_SQLITE_SHA256 = [
  "3c2f2fea3a3f3eeba80018877f3ef2034aa1cf24f5352c981f8e7e3daaba6533",
  "519d775e7ecfb45fd4aa46e2cedd7e1806a925e9810d11a4a49e49d012d29399",
  "1ff3eb58030f83ff589dfe154a5dc1313844a0503d9aa2e99dbf1c535f3f51db",
  "0069239a1c70a6288cd9b004024ebd2205e86567bc4066bbf5a84af48a80843c",
  "3fb91214454a73ddc6c541d982d4d69d446319284d2ee9c38c02102246859203",
  "1fb0223105d13db558c29d4271e9b105b02fb00bbf13f381291769341ced318f",
  "7ab55d53c50053025f028192e1d7abbc9f6aa4e83798df4b86903061df266c14",
];

describe("the numbered migration list", () => {
  it("keeps every shipped SQLite migration byte for byte (add a new migration instead of editing one)", () => {
    const shipped = MIGRATIONS.slice(0, SHIPPED_SQLITE_SHA256.length).map((m) => createHash("sha256").update(m.sqlite).digest("hex"));
    expect(shipped).toEqual(SHIPPED_SQLITE_SHA256);
  });

  it("gives every version both dialects and a description", () => {
    for (const [i, m] of MIGRATIONS.entries()) {
      expect(m.description, `migration ${i + 1}`).not.toBe("");
      expect(m.sqlite.trim(), `migration ${i + 1} sqlite`).not.toBe("");
      expect(m.postgres.trim(), `migration ${i + 1} postgres`).not.toBe("");
    }
  });
});
