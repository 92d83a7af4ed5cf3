import { describe, expect, it } from "vitest";
import type { BackupRecord } from "../domain/records.js";
import { retentionVictims } from "./retention.js";

const NOW = 1_700_000_000_000;
const DAY = 86_400_000;

/** Backups newest first, one a day: index i was made i days ago. */
function daily(n: number, locked: number[] = []): BackupRecord[] {
  return Array.from({ length: n }, (_, i) => ({ id: `bk_${i}`, createdAt: NOW - i * DAY - 1, locked: locked.includes(i) }) as BackupRecord);
}
const ids = (bs: BackupRecord[]) => bs.map((b) => b.id);

describe("retentionVictims", () => {
  it("keeps everything without a rule", () => {
    expect(retentionVictims(daily(5), undefined, NOW)).toEqual([]);
    expect(retentionVictims(daily(5), { keepLast: 0, keepDays: 0 }, NOW)).toEqual([]);
  });

  it("keep_last: the newest N stay", () => {
    expect(ids(retentionVictims(daily(5), { keepLast: 2, keepDays: 0 }, NOW))).toEqual(["bk_2", "bk_3", "bk_4"]);
  });

  it("keep_days: those newer than D days stay", () => {
    expect(ids(retentionVictims(daily(5), { keepLast: 0, keepDays: 3 }, NOW))).toEqual(["bk_3", "bk_4"]);
  });

  it("both: a backup is kept when either rule keeps it", () => {
    expect(ids(retentionVictims(daily(6), { keepLast: 4, keepDays: 2 }, NOW))).toEqual(["bk_4", "bk_5"]);
    expect(ids(retentionVictims(daily(6), { keepLast: 1, keepDays: 3 }, NOW))).toEqual(["bk_3", "bk_4", "bk_5"]);
  });

  it("never the newest successful one, never a locked one", () => {
    // Every backup is older than the age rule: the newest still stays.
    const old = daily(4).map((b) => ({ ...b, createdAt: b.createdAt - 30 * DAY }));
    expect(ids(retentionVictims(old, { keepLast: 0, keepDays: 1 }, NOW))).toEqual(["bk_1", "bk_2", "bk_3"]);
    expect(ids(retentionVictims(daily(5, [3]), { keepLast: 1, keepDays: 0 }, NOW))).toEqual(["bk_1", "bk_2", "bk_4"]);
  });
});
