import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FileInfoSchema, FileType } from "@berth/proto/berth/v1/file_pb.js";
import {
  archiveName,
  breadcrumbs,
  CHUNK_BYTES,
  chunksOf,
  displayPath,
  extractDestination,
  formatMode,
  isArchive,
  joinPath,
  mergePage,
  nameProblem,
  normalizePath,
  notEditable,
  octalMode,
  parentOf,
  parseOctalMode,
  percent,
  sortEntries,
  textOf,
  writeErrorText,
} from "./files-model.js";

const file = (name: string, size = 10, type = FileType.FILE) => create(FileInfoSchema, { name, type, size: BigInt(size), mode: 0o644 });
const dir = (name: string) => create(FileInfoSchema, { name, type: FileType.DIRECTORY, mode: 0o755 });

describe("paths", () => {
  it("are relative to the data directory: slashes, '.' and empty parts dropped, '' is the directory itself", () => {
    expect(normalizePath("/a//b/./c/")).toBe("a/b/c");
    expect(normalizePath("/")).toBe("");
    expect(normalizePath(".")).toBe("");
    // ".." is left for the manager to refuse with its own message, never resolved here.
    expect(normalizePath("a/../b")).toBe("a/../b");
    expect(joinPath("", "x.txt")).toBe("x.txt");
    expect(joinPath("world/region", "r.0.0.mca")).toBe("world/region/r.0.0.mca");
    expect(joinPath("/world/", "")).toBe("world");
    expect(parentOf("world/region/r.mca")).toBe("world/region");
    expect(parentOf("top.txt")).toBe("");
    expect(displayPath("")).toBe("/");
    expect(displayPath("world/region")).toBe("/world/region");
  });

  it("breadcrumbs start at the data directory and lead to each folder on the way", () => {
    expect(breadcrumbs("")).toEqual([{ label: "data", path: "" }]);
    expect(breadcrumbs("/world/region/")).toEqual([
      { label: "data", path: "" },
      { label: "world", path: "world" },
      { label: "region", path: "world/region" },
    ]);
  });

  it("a new name is one component", () => {
    expect(nameProblem("logs")).toBeUndefined();
    expect(nameProblem(" ")).toMatch(/Type a name/);
    expect(nameProblem("a/b")).toMatch(/“\/”/);
    expect(nameProblem("..")).toMatch(/not a name/);
    expect(nameProblem("x".repeat(256))).toMatch(/255 bytes/);
    // 86 three-byte characters are 258 bytes.
    expect(nameProblem("€".repeat(86))).toMatch(/255 bytes/);
  });
});

describe("listing order", () => {
  it("puts folders first, then names in the manager's plain string order", () => {
    const sorted = sortEntries([file("b.txt"), dir("zeta"), file("A.txt"), dir("alpha"), file("a.txt")]);
    expect(sorted.map((e) => e.name)).toEqual(["alpha", "zeta", "A.txt", "a.txt", "b.txt"]);
  });

  it("a page loaded later joins in order, and an entry listed twice (changed between pages) is shown once, as last seen", () => {
    const merged = mergePage([dir("b"), file("c", 1)], [dir("a"), file("c", 2), file("d")]);
    expect(merged.map((e) => e.name)).toEqual(["a", "b", "c", "d"]);
    expect(merged.find((e) => e.name === "c")!.size).toBe(2n);
  });
});

describe("modes", () => {
  it("read like ls -l, setuid/setgid/sticky included", () => {
    expect(formatMode(0o755, FileType.DIRECTORY)).toBe("drwxr-xr-x");
    expect(formatMode(0o644)).toBe("-rw-r--r--");
    expect(formatMode(0o600, FileType.SYMLINK)).toBe("lrw-------");
    expect(formatMode(0o1777, FileType.DIRECTORY)).toBe("drwxrwxrwt");
    expect(formatMode(0o4644)).toBe("-rwSr--r--");
    expect(formatMode(0o2755)).toBe("-rwxr-sr-x");
    expect(octalMode(0o644)).toBe("0644");
    expect(octalMode(0o1777)).toBe("1777");
  });

  it("octal input takes 644, 0755 and 0o600; refuses other digits and setuid/setgid, as the manager would", () => {
    expect(parseOctalMode("644")).toEqual({ mode: 0o644 });
    expect(parseOctalMode(" 0755 ")).toEqual({ mode: 0o755 });
    expect(parseOctalMode("0o600")).toEqual({ mode: 0o600 });
    expect(parseOctalMode("1777")).toEqual({ mode: 0o1777 });
    expect(parseOctalMode("rw-r--r--")).toHaveProperty("problem");
    expect(parseOctalMode("648")).toHaveProperty("problem");
    expect(parseOctalMode("75555")).toHaveProperty("problem");
    expect(parseOctalMode("4755")).toEqual({ problem: expect.stringMatching(/setuid and setgid/) });
    expect(parseOctalMode("2755")).toHaveProperty("problem");
  });
});

describe("upload chunks", () => {
  it("cover the file in order, 1 MiB each, the last one marked", () => {
    const size = 2 * CHUNK_BYTES + 5;
    const chunks = chunksOf(size);
    expect(chunks).toEqual([
      { offset: 0, end: CHUNK_BYTES, last: false },
      { offset: CHUNK_BYTES, end: 2 * CHUNK_BYTES, last: false },
      { offset: 2 * CHUNK_BYTES, end: size, last: true },
    ]);
    expect(chunksOf(CHUNK_BYTES)).toEqual([{ offset: 0, end: CHUNK_BYTES, last: true }]);
  });

  it("an empty file is one empty last chunk (it still creates the file)", () => {
    expect(chunksOf(0)).toEqual([{ offset: 0, end: 0, last: true }]);
  });

  it("progress is whole percent, never past 100", () => {
    expect(percent(0, 0)).toBe(0);
    expect(percent(1, 3)).toBe(33);
    expect(percent(5, 4)).toBe(100);
  });
});

describe("what the editor opens", () => {
  it("regular files up to 1 MiB; larger ones, folders, symlinks and special files are refused with a reason", () => {
    expect(notEditable(file("ok.txt", 1024 * 1024))).toBeUndefined();
    expect(notEditable(file("big.log", 1024 * 1024 + 1))).toMatch(/Too large.*Download/);
    expect(notEditable(dir("d"))).toMatch(/directory/);
    expect(notEditable(file("l", 3, FileType.SYMLINK))).toMatch(/symlink/);
  });

  it("text is UTF-8 without NUL bytes", () => {
    expect(textOf(new TextEncoder().encode("motd=hé\n"))).toBe("motd=hé\n");
    expect(textOf(new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0x00]))).toBeUndefined();
    expect(textOf(new Uint8Array([0xff, 0xfe, 0x41]))).toBeUndefined();
    expect(textOf(new Uint8Array())).toBe("");
  });

  it("a refused save because of a concurrent change says so; others keep the manager's code and words", () => {
    expect(writeErrorText("Aborted", "server.properties changed since it was read")).toMatch(/^Changed since you opened it: server.properties changed/);
    expect(writeErrorText("ResourceExhausted", "file over the 8 GiB cap")).toBe("ResourceExhausted: file over the 8 GiB cap");
  });
});

describe("archives", () => {
  it("are recognised by name as the manager extracts them", () => {
    for (const n of ["w.tar.gz", "W.TGZ", "w.tar.zst", "w.tar", "w.zip"]) expect(isArchive(n)).toBe(true);
    for (const n of ["w.gz", "w.7z", "tar"]) expect(isArchive(n)).toBe(false);
  });

  it("extract beside themselves into a folder named after them", () => {
    expect(extractDestination("backups/world.tar.gz")).toBe("backups/world");
    expect(extractDestination("pack.zip")).toBe("pack");
    expect(extractDestination(".tar")).toBe("extracted");
  });

  it("are named after the one entry archived, or the folder for several", () => {
    expect(archiveName("", ["world"], ".tar.gz")).toBe("world.tar.gz");
    expect(archiveName("plugins", ["a.jar", "b.jar"], ".zip")).toBe("plugins.zip");
    expect(archiveName("", ["a", "b"], ".zip")).toBe("data.zip");
  });
});
