import { lstat, readdir } from "node:fs/promises";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { pino, type Logger } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DataRoot, type WalkPace } from "./data-root.js";
import { DirSizes } from "./dir-sizes.js";

// Counts the walk's lstat calls (DataRoot lstat's every file it sizes) and the root's listings.
vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  return { ...actual, lstat: vi.fn(actual.lstat), readdir: vi.fn(actual.readdir) };
});

const A = "srv_aaaa";
const B = "srv_bbbb";
const C = "srv_cccc";
const D = "srv_dddd";

/** lstat calls on paths inside `dir` so far. */
function lstatsInside(dir: string): number {
  return vi.mocked(lstat).mock.calls.filter(([p]) => String(p).startsWith(dir + sep)).length;
}

/** readdir calls on `dir` itself so far (the sizer listing the data root). */
function listingsOf(dir: string): number {
  return vi.mocked(readdir).mock.calls.filter(([p]) => String(p) === dir).length;
}

async function fill(dir: string, files: number, bytes = 10): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(dir, `f${i}`), "x".repeat(bytes));
}

const silent = pino({ level: "silent" });
/** Resolves at once: the tests drive the sizer step by step. */
const noSleep = () => Promise.resolve();

describe("DirSizes and the inventory's cached check", () => {
  let base: string;
  let clock: number;
  let root: DataRoot;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "berth-dirsizes-"));
    clock = 1_000_000;
    root = new DataRoot(join(base, "root"), { now: () => clock });
    await root.init();
    vi.mocked(lstat).mockClear();
    vi.mocked(readdir).mockClear();
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it("the inventory's check does not walk a directory; the sizer does, and the inventory then reports its size", async () => {
    const dir = join(root.root, A);
    await fill(dir, 300);
    const sizes = new DirSizes(root, silent, { sleep: noSleep });

    const before = await root.checkCached(A);
    expect(before).toMatchObject({ serverId: A, exists: true, sizeBytes: 0, sizeUnknown: true });
    expect(before.modifyTimeMs).toBeGreaterThan(0);
    expect(lstatsInside(dir)).toBe(0);

    expect(await sizes.measureNext()).toBe(true);
    expect(lstatsInside(dir)).toBe(300);

    vi.mocked(lstat).mockClear();
    const after = await root.checkCached(A);
    expect(after).toMatchObject({ exists: true, sizeBytes: 3000 });
    expect(after.sizeUnknown).toBeUndefined();
    expect(lstatsInside(dir)).toBe(0);
  });

  it("an on-demand check walks and updates what the inventory reports", async () => {
    const dir = join(root.root, A);
    await fill(dir, 2, 5);
    expect(await root.check(A)).toMatchObject({ exists: true, sizeBytes: 10 });
    expect(root.measuredAt(A)).toBe(clock);
    await writeFile(join(dir, "more"), "x".repeat(90));
    expect((await root.checkCached(A)).sizeBytes).toBe(10);
    clock += 1;
    expect((await root.check(A)).sizeBytes).toBe(100);
    expect(root.measuredAt(A)).toBe(clock);
    expect((await root.checkCached(A)).sizeBytes).toBe(100);
  });

  it("spends at most a tick's share of entries between pauses", async () => {
    const dir = join(root.root, A);
    await fill(dir, 300);
    // 500 entries per second in 100 ms ticks: 50 entries, then a pause.
    const lstatsAtPause: number[] = [];
    const sizes = new DirSizes(root, silent, {
      entriesPerSecond: 500,
      sleep: async (ms) => {
        expect(ms).toBe(100);
        lstatsAtPause.push(lstatsInside(dir));
      },
    });
    await sizes.measureNext();
    expect(await root.checkCached(A)).toMatchObject({ sizeBytes: 3000 });
    // 301 entries (one readdir, 300 files): six full ticks.
    expect(lstatsAtPause.length).toBe(6);
    const marks = [0, ...lstatsAtPause, lstatsInside(dir)];
    for (let i = 1; i < marks.length; i++) expect(marks[i]! - marks[i - 1]!).toBeLessThanOrEqual(50);
  });

  it("measures never-measured directories first, then dirty ones, then the oldest once it is due", async () => {
    for (const id of [A, B, C, D]) await mkdir(join(root.root, id));
    const sizes = new DirSizes(root, silent, { sleep: noSleep, now: () => clock, refreshMs: 10_000, minRemeasureMs: 1_000 });
    for (const id of [C, B, D]) {
      await root.check(id);
      clock += 1_000;
    }
    // C measured longest ago, then B, then D; A never.
    sizes.markDirty(D);
    sizes.markDirty(A);
    expect(await sizes.next()).toBe(A);
    await sizes.measureNext();
    expect(await sizes.next()).toBe(D);
    await sizes.measureNext();
    // A was measured just now and marked dirty before: measured, no longer dirty. Nothing else is due yet.
    expect(await sizes.next()).toBeUndefined();

    // Dirty again right after its measurement: not before minRemeasureMs.
    sizes.markDirty(D);
    expect(await sizes.next()).toBeUndefined();
    clock += 1_000;
    expect(await sizes.next()).toBe(D);
    await sizes.measureNext();

    // All due again: a dirty one first (D, measured last), then the oldest first.
    clock += 10_000;
    sizes.markDirty(D);
    const order: string[] = [];
    for (let id = await sizes.next(); id !== undefined; id = await sizes.next()) {
      order.push(id);
      await sizes.measureNext();
    }
    expect(order).toEqual([D, C, B, A]);
  });

  it("forgets directories that are gone; one that comes back is never-measured again", async () => {
    await fill(join(root.root, A), 1);
    await fill(join(root.root, B), 1);
    const sizes = new DirSizes(root, silent, { sleep: noSleep, now: () => clock });
    await sizes.measureNext();
    await sizes.measureNext();
    expect(root.measuredAt(A)).toBe(clock);
    await rm(join(root.root, A), { recursive: true });
    clock += 1;
    expect(await sizes.next()).toBeUndefined();
    expect(root.measuredAt(A)).toBeUndefined();
    expect(root.measuredAt(B)).toBeDefined();

    await mkdir(join(root.root, A));
    expect(await root.checkCached(A)).toMatchObject({ exists: true, sizeBytes: 0, sizeUnknown: true });
    expect(await sizes.next()).toBe(A);
  });

  it("skips a directory it cannot measure, logs it once, and goes on with the others", async () => {
    await fill(join(root.root, A), 1);
    await fill(join(root.root, B), 1);
    class FailingRoot extends DataRoot {
      override check(id: string, pace?: WalkPace) {
        return id === A ? Promise.reject(new Error("EIO reading it")) : super.check(id, pace);
      }
    }
    const failing = new FailingRoot(root.root, { now: () => clock });
    const warn = vi.fn();
    const log = { warn } as unknown as Logger;
    const sizes = new DirSizes(failing, log, { sleep: noSleep, now: () => clock, refreshMs: 10_000 });
    expect(await sizes.measureNext()).toBe(true);
    expect(await sizes.measureNext()).toBe(true);
    expect(failing.measuredAt(B)).toBe(clock);
    expect(await sizes.next()).toBeUndefined();
    clock += 10_000;
    expect(await sizes.measureNext()).toBe(true);
    expect(await sizes.measureNext()).toBe(true);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatchObject({ server: A, err: "EIO reading it" });
  });

  it("stops in the middle of a walk, leaving the directory unmeasured", async () => {
    await fill(join(root.root, A), 50);
    // One entry per tick at most: the walk spends nearly all its time paused.
    const sizes = new DirSizes(root, silent, { entriesPerSecond: 10 });
    sizes.start();
    await vi.waitFor(() => expect(lstatsInside(join(root.root, A))).toBeGreaterThan(0));
    await sizes.stop();
    const walked = lstatsInside(join(root.root, A));
    expect(walked).toBeLessThan(50);
    expect(root.measuredAt(A)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 250));
    expect(lstatsInside(join(root.root, A))).toBe(walked);
  });

  it("lists the root once per pass, not once per directory, and measures in the same order", async () => {
    const letters = "abcdefghijklmnopqrstuvwxyz";
    const ids = Array.from({ length: 50 }, (_, i) => `srv_aa${letters[Math.floor(i / 26)]}${letters[i % 26]}`);
    // Created in reverse: the order measured is the sizer's, not the directory's.
    for (const id of [...ids].reverse()) await mkdir(join(root.root, id));
    const sizes = new DirSizes(root, silent, { sleep: noSleep, now: () => clock });

    const order: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      order.push((await sizes.next())!);
      expect(await sizes.measureNext()).toBe(true);
    }
    expect(order).toEqual([...ids].sort());
    for (const id of ids) expect(root.measuredAt(id)).toBe(clock);
    expect(listingsOf(root.root)).toBe(1);

    // The pass is spent: the next call lists again, and nothing is due.
    expect(await sizes.measureNext()).toBe(false);
    expect(listingsOf(root.root)).toBe(2);
  });

  it("mid-pass: a removed directory is skipped and forgotten, a new one waits for the next pass unless marked dirty", async () => {
    const M = "srv_mmmm";
    const N = "srv_nnnn";
    for (const id of [A, B, C]) await fill(join(root.root, id), 1);
    const warn = vi.fn();
    const sizes = new DirSizes(root, { warn } as unknown as Logger, { sleep: noSleep, now: () => clock, refreshMs: 10_000 });
    while (await sizes.measureNext());
    clock += 10_000;
    const listed = listingsOf(root.root);

    // A pass of A, B, C (all due for their refresh) begins.
    expect(await sizes.measureNext()).toBe(true);
    expect(root.measuredAt(A)).toBe(clock);
    await rm(join(root.root, B), { recursive: true });
    await fill(join(root.root, M), 1);
    await fill(join(root.root, N), 1);
    sizes.markDirty(N);

    // Each measurement one millisecond apart: measuredAt shows the order.
    const start = clock;
    for (let i = 0; i < 10 && (await sizes.measureNext()); i++) clock += 1;
    expect(root.measuredAt(B)).toBeUndefined();
    expect(await root.checkCached(B)).toMatchObject({ exists: false });
    expect(warn).not.toHaveBeenCalled();
    // N, dirty, before the rest of the pass; M, unmarked, after it (the next listing).
    const n = root.measuredAt(N)!;
    const c = root.measuredAt(C)!;
    const m = root.measuredAt(M)!;
    expect(n).toBe(start);
    expect(c).toBeGreaterThan(n);
    expect(m).toBeGreaterThan(c);
    expect(await root.checkCached(M)).toMatchObject({ sizeBytes: 10 });
    // This pass's listing, the next pass's (which found M), and the one that found nothing due.
    expect(listingsOf(root.root) - listed).toBe(3);
  });
});
