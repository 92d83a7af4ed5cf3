import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { AggregateResponseSchema } from "@berth/proto/berth/v1/query_pb.js";
import { bucketTotals, chartData, groupLabel, niceCeiling, sparkPoints } from "./chart-data.js";

const response = (groups: { key: string[]; counts: number[] }[], buckets = 3, omitted = 0) =>
  create(AggregateResponseSchema, {
    bucketStarts: Array.from({ length: buckets }, (_, i) => ({ seconds: BigInt(1_700_000_000 + i * 3600) })),
    interval: { seconds: 3600n },
    groups: groups.map((g) => ({ key: g.key, counts: g.counts.map(BigInt), total: BigInt(g.counts.reduce((a, b) => a + b, 0)) })),
    groupsOmitted: omitted,
    matched: 10n,
    scanned: 40n,
  });

describe("chart data", () => {
  it("one series per group with its counts per bucket, largest total first, x in seconds", () => {
    const d = chartData(response([
      { key: ["StoppedByUser"], counts: [1, 0, 2] },
      { key: ["Crashed"], counts: [0, 3, 1] },
    ]));
    expect(d.x).toEqual([1_700_000_000, 1_700_003_600, 1_700_007_200]);
    expect(d.interval).toBe(3600);
    expect(d.series.map((s) => [s.label, s.counts, s.total])).toEqual([
      ["Crashed", [0, 3, 1], 4],
      ["StoppedByUser", [1, 0, 2], 3],
    ]);
    expect(d.rows).toEqual(d.series);
    expect(d).toMatchObject({ folded: 0, omitted: 0, matched: 10, scanned: 40 });
  });

  it("names groups by their key values; an empty value is (none); no grouping is all", () => {
    expect(groupLabel(["PHASE_RUNNING", "web"])).toBe("PHASE_RUNNING · web");
    expect(groupLabel(["", "x"])).toBe("(none) · x");
    expect(groupLabel([])).toBe("all");
  });

  it("names the ids the dashboard knows (a server id from event.server_id), leaves the rest as they are", () => {
    const names = new Map([["srv_1", "crashy"]]);
    const d = chartData(response([{ key: ["srv_1", "Crashed"], counts: [4, 0, 0] }, { key: ["srv_gone", "Crashed"], counts: [1, 0, 0] }]), 8, (v) => names.get(v));
    expect(d.rows.map((r) => r.label)).toEqual(["crashy · Crashed", "srv_gone · Crashed"]);
  });

  it("counts missing for a bucket are 0; extra counts are dropped", () => {
    const d = chartData(response([{ key: ["a"], counts: [5] }], 3));
    expect(d.series[0]!.counts).toEqual([5, 0, 0]);
    const e = chartData(response([{ key: ["a"], counts: [1, 2, 3, 4] }], 2));
    expect(e.series[0]!.counts).toEqual([1, 2]);
  });

  it("beyond the most lines, the smallest groups are summed into one 'other' line; the table keeps them all", () => {
    const groups = Array.from({ length: 6 }, (_, i) => ({ key: [`g${i}`], counts: [6 - i, 1] }));
    const d = chartData(response(groups, 2, 7), 4);
    expect(d.series.map((s) => s.label)).toEqual(["g0", "g1", "g2", "other (3 groups)"]);
    expect(d.series[3]!.counts).toEqual([3 + 2 + 1, 3]);
    expect(d.series[3]!.total).toBe(9);
    expect(d.rows).toHaveLength(6);
    expect(d.folded).toBe(3);
    expect(d.omitted).toBe(7);
  });

  it("bucket totals sum the groups; nice ceilings; sparkline points", () => {
    const d = chartData(response([{ key: ["a"], counts: [1, 2, 3] }, { key: ["b"], counts: [1, 0, 1] }]));
    expect(bucketTotals(d)).toEqual([2, 2, 4]);
    expect([0, 1, 3, 10, 11, 47, 180].map(niceCeiling)).toEqual([1, 1, 5, 10, 20, 50, 200]);
    expect(sparkPoints([0, 2, 4], 100, 20)).toBe("0,20 50,10 100,0");
    expect(sparkPoints([], 100, 20)).toBe("");
  });
});
