/**
 * Test scaffolding for the file service's unit tests: a temp base holding
 * the data directory, the agent's work directory and an "outside" tree of
 * sentinels, and a snapshot of that tree to prove nothing outside changed.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readlinkSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "vitest";
import { FileOpError, type FileOpErrorCode } from "../src/files/errors.js";
import { ServerFiles, type ServerFilesOptions } from "../src/files/server-files.js";

export interface Fixture {
  base: string;
  /** The server's data directory. */
  data: string;
  work: string;
  /** Outside the data directory: sentinel files that must never change. */
  outside: string;
  files: ServerFiles;
  /** Every entry under `base` but the data and work directories, with its type, mode and content hash. */
  outsideSnapshot(): Promise<string[]>;
  cleanup(): Promise<void>;
}

export async function makeFixture(opts: Partial<ServerFilesOptions> = {}): Promise<Fixture> {
  const base = await mkdtemp(join(tmpdir(), "berth-files-"));
  const data = join(base, "data");
  const work = join(base, "work");
  const outside = join(base, "outside");
  await mkdir(data, { mode: 0o755 });
  await mkdir(join(outside, "dir"), { recursive: true });
  await writeFile(join(outside, "secret"), "outside secret");
  await writeFile(join(outside, "dir", "inner"), "outside inner");
  const files = new ServerFiles({ root: data, workDir: work, ...opts });
  return {
    base,
    data,
    work,
    outside,
    files,
    outsideSnapshot: () => snapshot(base, [data, work]),
    cleanup: () => rm(base, { recursive: true, force: true }),
  };
}

/** Every entry under `dir` (but `skip`), one line each: path, type, mode, size, and a content hash for files. */
export async function snapshot(dir: string, skip: string[] = []): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const name of (await readdir(d)).sort()) {
      const p = join(d, name);
      if (skip.includes(p)) continue;
      const st = await lstat(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.push(`${p} dir ${mode}`);
        await walk(p);
      } else if (st.isSymbolicLink()) out.push(`${p} -> ${await readlink(p)}`);
      else if (st.isFile()) out.push(`${p} file ${mode} ${createHash("sha256").update(await readFile(p)).digest("hex")}`);
      else out.push(`${p} other ${mode}`);
    }
  };
  await walk(dir);
  return out;
}

/** Expects `p` to reject with a FileOpError of `code` (and a message matching `message`). */
export async function expectCode(p: Promise<unknown>, code: FileOpErrorCode, message?: RegExp): Promise<FileOpError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a FileOpError "${code}"`).toBeInstanceOf(FileOpError);
  expect((err as FileOpError).code, (err as Error).message).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
  return err as FileOpError;
}

/** What this process holds open under `dir` (/proc/self/fd): a test leaves nothing open. */
export function openFilesUnder(dir: string): string[] {
  return readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith(dir) ? [target] : [];
    } catch {
      return [];
    }
  });
}

export async function mkfifo(path: string): Promise<void> {
  await promisify(execFile)("mkfifo", [path]);
}

/** An async iterable of `chunks`, optionally throwing or running `between` after chunk i. */
export async function* chunksOf(chunks: Array<Buffer | string>, between?: (i: number) => Promise<void>): AsyncGenerator<Buffer> {
  for (let i = 0; i < chunks.length; i++) {
    yield Buffer.from(chunks[i]!);
    if (between) await between(i);
  }
}

export async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}
