/**
 * Issue 18's data throughput: berth's backup archive (agent/src/data/archive.ts,
 * as the backup job runs it into a directory target) against the raw
 * pipelines an operator would use on the same machine:
 *
 *   pack      createArchive → BackupDirs.writeAtomic   vs  tar -cf - . | zstd -1 (| gzip -1) > file
 *             (zstd, what a backup uses; and gzip, what it used before)
 *   restore   extractArchive, checking the sha256       vs  zstd -dc (gzip -dc) file | tar -x
 *             on the way through (what RESTORE_DATA runs)
 *   transfer  pack into a shared directory + restore    vs  cp -a, tar -cf - . | tar -x,
 *             on the other side (TransferServer moves     tar | zstd -1 > file; zstd -dc file | tar -x
 *             data through a target both hosts reach),
 *             with zstd level 1, and gzip level 0 (stored)
 *
 * Every figure is MB/s of the tree's file bytes (1 MB = 10^6 bytes), so a
 * faster pipeline is a bigger number whatever it writes; ratios are berth's
 * MB/s over the raw one's (the issue's goal: >= 0.8). Every archive written is
 * fsynced before its clock stops (berth's writeAtomic does; the raw pipelines
 * get a `sync FILE`). The tree is generated once per run into a temporary
 * directory: a few large files, half random bytes and half text, plus many
 * small text-like files, so gzip has some work to do without it being a
 * text-only best case.
 *
 * `npm run bench -- --only data` (or `--full`, which adds this suite), or
 * directly: `node --import tsx bench/data-bench.ts [--size-mib N] [--rounds N] [--keep]`.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs, promisify } from "node:util";
import { createArchive, extractArchive, openArchive, type ArchiveStats } from "../agent/src/data/archive.js";
import { BackupDirs } from "../agent/src/data/backup-dir.js";
import { loadAverage } from "./lib/proc-stats.js";
import type { Report } from "./lib/report.js";

const run = promisify(execFile);
const MIB = 2 ** 20;

export interface DataBenchOptions {
  /** Size of the generated tree (default 1024 MiB). */
  sizeMiB: number;
  /** Measured rounds per operation (default 1: one round of everything moves ~10 GB). */
  rounds: number;
  keep: boolean;
  log: (line: string) => void;
}

interface Tree {
  dir: string;
  bytes: number;
  files: number;
}

/** 512 KiB of word salad: what config files, logs and source look like to gzip. */
function textPool(): Buffer {
  const words = Array.from({ length: 4000 }, () => randomBytes(2 + (randomBytes(1)[0]! % 8)).toString("base64url"));
  const parts: string[] = [];
  let n = 0;
  while (n < 512 * 1024) {
    const line = Array.from({ length: 8 + (n % 7) }, (_, i) => words[(n * 31 + i * 97 + (randomBytes(2).readUInt16LE() % 4000)) % 4000]).join(" ");
    const s = n % 5 === 0 ? `{"key_${n % 300}": "${line}", "n": ${n}}\n` : `${line}\n`;
    parts.push(s);
    n += s.length;
  }
  return Buffer.from(parts.join(""));
}

/** `len` bytes of text cut from the pool at a random offset. */
function textChunk(pool: Buffer, len: number): Buffer {
  const out = Buffer.allocUnsafe(len);
  let o = 0;
  while (o < len) {
    const start = randomBytes(4).readUInt32LE() % pool.length;
    o += pool.copy(out, o, start, Math.min(pool.length, start + (len - o)));
  }
  return out;
}

/**
 * The tree: 3/4 of `sizeMiB` in four large files (1 MiB blocks alternating
 * random and text), 1/4 in 32 KiB text files, 128 per directory.
 */
export async function generateTree(dir: string, sizeMiB: number): Promise<Tree> {
  const pool = textPool();
  const largeMiB = Math.floor((sizeMiB * 3) / 4 / 4);
  let bytes = 0;
  let files = 0;
  await mkdir(join(dir, "world"), { recursive: true });
  for (let f = 0; f < 4; f++) {
    const out = createWriteStream(join(dir, "world", `region-${f}.bin`));
    for (let b = 0; b < largeMiB; b++) {
      const block = b % 2 === 0 ? randomBytes(MIB) : textChunk(pool, MIB);
      if (!out.write(block)) await new Promise<void>((r) => out.once("drain", () => r()));
      bytes += MIB;
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    files++;
  }
  const small = 32 * 1024;
  const smallCount = Math.floor(((sizeMiB - largeMiB * 4) * MIB) / small);
  for (let i = 0; i < smallCount; i++) {
    const sub = join(dir, "config", `d${Math.floor(i / 128)}`);
    if (i % 128 === 0) await mkdir(sub, { recursive: true });
    await writeFile(join(sub, `f${i}.json`), textChunk(pool, small));
    bytes += small;
    files++;
  }
  return { dir, bytes, files };
}

/** Runs a shell pipeline (the tools' own defaults; `set -o pipefail` so a failing stage counts). */
async function sh(script: string): Promise<void> {
  await run("bash", ["-c", `set -euo pipefail; ${script}`], { maxBuffer: 16 * MIB });
}

async function haveZstd(): Promise<boolean> {
  return run("bash", ["-c", "command -v zstd"]).then(
    () => true,
    () => false,
  );
}

/** Seconds `fn` took. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

/** Bytes and files of an extracted tree, to check a restore brought everything back. */
async function treeSize(dir: string): Promise<{ bytes: number; files: number }> {
  const { stdout } = await run("bash", ["-c", `find ${JSON.stringify(dir)} -type f -printf '%s\\n' | awk '{n++; s+=$1} END {print n, s}'`]);
  const [files, bytes] = stdout.trim().split(" ").map(Number);
  return { files: files ?? 0, bytes: bytes ?? 0 };
}

interface Row {
  op: string;
  how: string;
  seconds: number[];
  /** Archive bytes, when the row writes one. */
  archiveBytes?: number;
  /** The row its ratio is against (berth's rows only). */
  against?: string[];
}

/** Runs the suite; figures go into `report` (suite "data") and a table with ratios is printed. */
export async function runDataBench(report: Report, opts: DataBenchOptions): Promise<void> {
  const { log } = opts;
  const root = await mkdtemp(join(tmpdir(), "berth-data-bench-"));
  const src = join(root, "src");
  const shared = join(root, "shared");
  await mkdir(shared);
  const zstd = await haveZstd();
  try {
    log(`generating ${opts.sizeMiB} MiB in ${src} ...`);
    const gen = await timed(async () => generateTree(src, opts.sizeMiB));
    const tree = await treeSize(src);
    report.note(`data suite: load average ${loadAverage().toFixed(1)} at its start (other processes share this machine's ${cpus().length} cores)`);
    log(`generated ${tree.files} files, ${(tree.bytes / 1e6).toFixed(0)} MB in ${gen.toFixed(1)} s`);
    report.sizes["data tree"] = `${tree.files} files, ${(tree.bytes / 1e6).toFixed(0)} MB (3/4 in 4 files half random half text, 1/4 in 32 KiB text files)`;

    const dirs = new BackupDirs([shared]);
    const rows = new Map<string, Row>();
    const add = (op: string, how: string, s: number, extra: Partial<Row> = {}) => {
      const key = `${op} ${how}`;
      const r = rows.get(key) ?? { op, how, seconds: [], ...extra };
      r.seconds.push(s);
      rows.set(key, r);
      log(`${key}: ${s.toFixed(2)} s (${(tree.bytes / 1e6 / s).toFixed(0)} MB/s)`);
    };
    let stats: ArchiveStats | undefined;
    const berthArchive = join(shared, "bk.tar.zst");
    const berthGzip = join(shared, "bk.tar.gz");
    let gzipStats: ArchiveStats | undefined;
    const dest = join(root, "dest");
    const fresh = async () => rm(dest, { recursive: true, force: true });
    const berthPack = async () => {
      stats = await dirs.writeAtomic(shared, "bk.tar.zst", (out) => createArchive(src, out, { compression: "zstd" }));
    };
    /** What RESTORE_DATA runs (agent/src/data/backup-jobs.ts): the sha256 checked on the way through, at most the recorded bytes. */
    const berthRestore = async (file = berthArchive, made = stats!) => {
      await extractArchive(await openArchive(file), dest, { sha256: made.sha256, bytesTotal: made.rawBytes });
    };
    const q = JSON.stringify;

    for (let round = 0; round < opts.rounds; round++) {
      // pack
      add("pack", "berth createArchive (zstd 1)", await timed(berthPack), { against: ["pack tar | zstd -1", "pack tar | gzip -1"] });
      rows.get("pack berth createArchive (zstd 1)")!.archiveBytes = stats!.archiveBytes;
      add(
        "pack",
        "berth createArchive (gzip 1, before zstd)",
        await timed(async () => {
          gzipStats = await dirs.writeAtomic(shared, "bk.tar.gz", (out) => createArchive(src, out, { compression: "gzip" }));
        }),
        { against: ["pack tar | gzip -1"] },
      );
      rows.get("pack berth createArchive (gzip 1, before zstd)")!.archiveBytes = gzipStats!.archiveBytes;
      const gz = join(shared, "raw.tar.gz");
      add("pack", "tar | gzip -1", await timed(() => sh(`tar -C ${q(src)} -cf - . | gzip -1 > ${q(gz)}; sync ${q(gz)}`)));
      const zst = join(shared, "raw.tar.zst");
      if (zstd) add("pack", "tar | zstd -1", await timed(() => sh(`tar -C ${q(src)} -cf - . | zstd -q -1 > ${q(zst)}; sync ${q(zst)}`)));
      const sizes = await run("stat", ["-c", "%s", gz, ...(zstd ? [zst] : [])]);
      const [gzBytes, zstBytes] = sizes.stdout.trim().split("\n").map(Number);
      rows.get("pack tar | gzip -1")!.archiveBytes = gzBytes;
      if (zstd) rows.get("pack tar | zstd -1")!.archiveBytes = zstBytes;

      // restore
      await fresh();
      add("restore", "berth extract + sha256 (zstd)", await timed(() => berthRestore()), { against: ["restore zstd -dc | tar -x", "restore gzip -dc | tar -x"] });
      const got = await treeSize(dest);
      if (got.files !== tree.files || got.bytes !== tree.bytes) throw new Error(`berth's restore brought back ${got.files} files, ${got.bytes} bytes of ${tree.files}, ${tree.bytes}`);
      await fresh();
      add("restore", "berth extract, no sha256 (zstd)", await timed(async () => extractArchive(await openArchive(berthArchive), dest)));
      await fresh();
      add("restore", "berth extract + sha256 (gzip, before zstd)", await timed(() => berthRestore(berthGzip, gzipStats!)), { against: ["restore gzip -dc | tar -x"] });
      await fresh();
      await rm(berthGzip, { force: true });
      await fresh();
      add("restore", "gzip -dc | tar -x", await timed(() => sh(`mkdir ${q(dest)} && gzip -dc ${q(gz)} | tar -C ${q(dest)} -xf -`)));
      await fresh();
      if (zstd) add("restore", "zstd -dc | tar -x", await timed(() => sh(`mkdir ${q(dest)} && zstd -q -dc ${q(zst)} | tar -C ${q(dest)} -xf -`)));
      await fresh();

      // transfer: through the shared target, or copied straight
      await rm(berthArchive, { force: true });
      add(
        "transfer",
        "berth pack + extract (zstd 1)",
        await timed(async () => {
          await berthPack();
          await berthRestore();
        }),
        { against: ["transfer cp -a", "transfer tar | tar", "transfer tar | zstd -1 + zstd -dc | tar"] },
      );
      await fresh();
      await rm(berthArchive, { force: true });
      // What a transfer could do without compressing: the same archive, gzip level 0 (stored blocks).
      add(
        "transfer",
        "berth gzip level 0 pack + extract",
        await timed(async () => {
          gzipStats = await dirs.writeAtomic(shared, "bk.tar.gz", (out) => createArchive(src, out, { compression: "gzip", level: 0 }));
          await berthRestore(berthGzip, gzipStats);
        }),
        { against: ["transfer cp -a", "transfer tar | tar"] },
      );
      await fresh();
      add("transfer", "cp -a", await timed(() => sh(`cp -a ${q(src)} ${q(dest)}`)));
      await fresh();
      add("transfer", "tar | tar", await timed(() => sh(`mkdir ${q(dest)} && tar -C ${q(src)} -cf - . | tar -C ${q(dest)} -xf -`)));
      await fresh();
      if (zstd) {
        add(
          "transfer",
          "tar | zstd -1 + zstd -dc | tar",
          await timed(() => sh(`tar -C ${q(src)} -cf - . | zstd -q -1 > ${q(zst)}; sync ${q(zst)}; mkdir ${q(dest)} && zstd -q -dc ${q(zst)} | tar -C ${q(dest)} -xf -`)),
        );
        await fresh();
      }
      await rm(berthArchive, { force: true });
      await rm(berthGzip, { force: true });
    }

    const mbps = (r: Row) => tree.bytes / 1e6 / median(r.seconds);
    const berthRows = [...rows.values()].filter((r) => r.against);
    // One ratio column per berth row of an operation (zstd, then gzip).
    const lines: string[][] = [["op", "how", "s (median)", "MB/s", "archive % of raw", "berth ÷ this (per berth row of the op, in order)"]];
    for (const r of rows.values()) {
      const ratios: string[] = [];
      for (const b of berthRows) {
        if (r.against || b.op !== r.op || !b.against!.includes(`${r.op} ${r.how}`)) continue;
        ratios.push((mbps(b) / mbps(r)).toFixed(2));
        report.figure("data", `${r.op}: ${b.how} ÷ ${r.how}`, "ratio", [mbps(b) / mbps(r)]);
      }
      lines.push([r.op, r.how, median(r.seconds).toFixed(2), mbps(r).toFixed(0), r.archiveBytes ? `${((100 * r.archiveBytes) / tree.bytes).toFixed(1)} %` : "", ratios.join(" / ")]);
      report.figure("data", `${r.op}: ${r.how}`, "MB/s", r.seconds.map((s) => tree.bytes / 1e6 / s));
    }
    for (const b of berthRows) {
      const raw = rows.get(b.against![0]!);
      if (raw) {
        const ratio = mbps(b) / mbps(raw);
        report.target(`data ${b.op} (${b.how}) vs ${raw.how}`, ">= 0.8", ratio.toFixed(2), ratio >= 0.8);
      }
    }
    log(`\n${table(lines)}`);
    report.note(`data suite: ${opts.rounds} round(s) on a ${(tree.bytes / 1e6).toFixed(0)} MB tree in ${root}; the tree and archives fit in the page cache, so this measures CPU and the pipelines, not the disk${zstd ? "" : "; zstd is not installed: no zstd rows"}`);
  } finally {
    if (opts.keep) log(`kept ${root}`);
    else await rm(root, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

// Run directly: node --import tsx bench/data-bench.ts
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({ options: { "size-mib": { type: "string", default: "1024" }, rounds: { type: "string", default: "1" }, keep: { type: "boolean", default: false } } });
  const { Report } = await import("./lib/report.js");
  const report = new Report();
  await runDataBench(report, { sizeMiB: Number(values["size-mib"]), rounds: Number(values.rounds), keep: values.keep, log: (s) => process.stdout.write(`[data] ${s}\n`) });
  process.stdout.write("\n" + report.render());
}
