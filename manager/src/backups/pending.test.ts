import { describe, expect, it } from "vitest";
import { backupKey, pendingBackup } from "./pending.js";

describe("pendingBackup", () => {
  it("names a new backup's archive .tar.zst and records zstd: the agent compresses by the key's suffix", () => {
    const b = pendingBackup({ id: "srv_a", name: "world", project: "default", hostId: "host_1" }, "btg_1", "bk_1", 1_000, "token:t", { live: false, message: "" });
    expect(b.key).toBe("srv_a/bk_1.tar.zst");
    expect(b.key).toBe(backupKey("srv_a", "bk_1"));
    expect(b.compression).toBe("zstd");
  });
});
