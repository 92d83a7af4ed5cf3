import { describe, expect, it } from "vitest";
import { hostRanges } from "./pages.js";

/** Which range each id falls in (every id must fall in exactly one). */
function place(ranges: { from: string; to?: string }[], id: string): number[] {
  return ranges.flatMap((r, i) => (id >= r.from && (r.to === undefined || id < r.to) ? [i] : []));
}

describe("hostRanges", () => {
  it("cuts at every perRange-th known id, and covers ids nobody listed", () => {
    const ids = ["host_e", "host_a", "host_c", "host_b", "host_d", "host_a"];
    const ranges = hostRanges(ids, 2);
    expect(ranges).toEqual([{ from: "", to: "host_c" }, { from: "host_c", to: "host_e" }, { from: "host_e" }]);
    for (const id of [...ids, "", "host_0", "host_bb", "host_z", "zzz"]) expect(place(ranges, id)).toHaveLength(1);
    expect(ranges.map((r) => ids.filter((id) => place([r], id).length === 1).length)).toEqual([3, 2, 1]);
  });

  it("one open range for few hosts or none", () => {
    expect(hostRanges([], 50)).toEqual([{ from: "" }]);
    expect(hostRanges(["host_a", "host_b"], 2)).toEqual([{ from: "" }]);
  });
});
