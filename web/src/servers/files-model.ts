/**
 * The Files tab's decisions, without I/O: paths and breadcrumbs (relative to
 * the data directory, "" being the directory itself), folders-first order,
 * sizes and rwx modes, octal mode input, the 1 MiB chunks of an upload, what
 * may be opened as text, and the words for a refused save. Pure.
 */
import { FileType, type FileInfo } from "@berth/proto/berth/v1/file_pb.js";

/** WriteFile takes at most this much per chunk (file.proto). */
export const CHUNK_BYTES = 1024 * 1024;
/** The editor opens files up to this size; larger ones are downloaded. */
export const MAX_EDIT_BYTES = 1024 * 1024;

/** "/a//b/./c/" → "a/b/c"; "" / "/" / "." → "" (the data directory). ".." is kept: the manager refuses it with its message. */
export function normalizePath(p: string): string {
  return p
    .split("/")
    .filter((c) => c !== "" && c !== ".")
    .join("/");
}

export function joinPath(dir: string, name: string): string {
  const d = normalizePath(dir);
  const n = normalizePath(name);
  return d === "" ? n : n === "" ? d : `${d}/${n}`;
}

/** The directory holding `path` ("" for an entry of the data directory). */
export function parentOf(path: string): string {
  const p = normalizePath(path);
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

export function baseName(path: string): string {
  const p = normalizePath(path);
  return p.slice(p.lastIndexOf("/") + 1);
}

/** As shown to people: "/" for the data directory, "/a/b" below it. */
export function displayPath(path: string): string {
  return `/${normalizePath(path)}`;
}

export interface Crumb {
  label: string;
  path: string;
}

/** The data directory first ("data"), then each directory on the way to `path`. */
export function breadcrumbs(path: string): Crumb[] {
  const parts = normalizePath(path).split("/").filter(Boolean);
  return [{ label: "data", path: "" }, ...parts.map((label, i) => ({ label, path: parts.slice(0, i + 1).join("/") }))];
}

/** A single new name typed into a directory: one component, not "." or "..", no NUL. Undefined when fine. */
export function nameProblem(name: string): string | undefined {
  if (name.trim() === "") return "Type a name.";
  if (name.includes("/")) return "A name cannot hold “/”.";
  if (name === "." || name === "..") return `“${name}” is not a name.`;
  if (name.includes("\0")) return "A name cannot hold a NUL character.";
  if (new TextEncoder().encode(name).length > 255) return "A name may be at most 255 bytes.";
  return undefined;
}

/** Directories first, then by name (the manager's plain string order), so a page appended keeps the order. */
export function sortEntries(entries: readonly FileInfo[]): FileInfo[] {
  const dir = (e: FileInfo) => (e.type === FileType.DIRECTORY ? 0 : 1);
  return [...entries].sort((a, b) => dir(a) - dir(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Adds a page to what is listed; an entry listed again (the directory changed between pages) replaces the old one. */
export function mergePage(listed: readonly FileInfo[], page: readonly FileInfo[]): FileInfo[] {
  const byName = new Map(listed.map((e) => [e.name, e]));
  for (const e of page) byName.set(e.name, e);
  return sortEntries([...byName.values()]);
}

const TYPE_CHAR: Record<FileType, string> = {
  [FileType.UNSPECIFIED]: "?",
  [FileType.FILE]: "-",
  [FileType.DIRECTORY]: "d",
  [FileType.SYMLINK]: "l",
  [FileType.OTHER]: "s",
};

/** `ls -l` style: "drwxr-xr-x", "-rw-r--r--", setuid/setgid/sticky as s/S and t/T. */
export function formatMode(mode: number, type: FileType = FileType.FILE): string {
  const triple = (shift: number, special: boolean, specialChar: string) => {
    const r = mode & (4 << shift) ? "r" : "-";
    const w = mode & (2 << shift) ? "w" : "-";
    const x = (mode & (1 << shift)) !== 0;
    const last = special ? (x ? specialChar : specialChar.toUpperCase()) : x ? "x" : "-";
    return r + w + last;
  };
  return TYPE_CHAR[type] + triple(6, (mode & 0o4000) !== 0, "s") + triple(3, (mode & 0o2000) !== 0, "s") + triple(0, (mode & 0o1000) !== 0, "t");
}

/** "0644", "0755": four octal digits. */
export function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** An operator's octal input ("644", "0755", "0o600") → permission bits, or the problem with it. */
export function parseOctalMode(text: string): { mode: number } | { problem: string } {
  const t = text.trim().replace(/^0o/i, "");
  if (!/^[0-7]{1,4}$/.test(t)) return { problem: "Type the mode in octal, 3 or 4 digits from 0 to 7 (e.g. 644 or 0755)." };
  const mode = parseInt(t, 8);
  if (mode & 0o6000) return { problem: "setuid and setgid (4000, 2000) are refused; the sticky bit (1000) is allowed." };
  return { mode };
}

export interface Chunk {
  offset: number;
  end: number;
  last: boolean;
}

/** The chunks an upload of `size` bytes is sent in, in order; an empty file is one empty, last chunk. */
export function chunksOf(size: number, chunk = CHUNK_BYTES): Chunk[] {
  if (size === 0) return [{ offset: 0, end: 0, last: true }];
  const out: Chunk[] = [];
  for (let offset = 0; offset < size; offset += chunk) {
    const end = Math.min(size, offset + chunk);
    out.push({ offset, end, last: end === size });
  }
  return out;
}

/** Whole percent done, 0 for an unknown total. */
export function percent(done: number, total: number): number {
  if (total <= 0) return done > 0 ? 100 : 0;
  return Math.min(100, Math.floor((done * 100) / total));
}

/** Why `entry` cannot be opened in the editor, or undefined. Binary content is found once read (`textOf`). */
export function notEditable(entry: FileInfo): string | undefined {
  if (entry.type === FileType.DIRECTORY) return "A directory is opened by its name.";
  if (entry.type !== FileType.FILE) return "Only regular files can be opened; a symlink or a special file is never read.";
  if (entry.size > BigInt(MAX_EDIT_BYTES)) return `Too large to open here (over 1 MiB). Download it instead.`;
  return undefined;
}

/** The bytes as text, or undefined when they are not text (a NUL, or not UTF-8). */
export function textOf(bytes: Uint8Array): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

const EXTRACTABLE = [".tar.gz", ".tgz", ".tar.zst", ".tar", ".zip"];

/** Whether ExtractArchive takes this file (by its name, as the manager decides). */
export function isArchive(name: string): boolean {
  const n = name.toLowerCase();
  return EXTRACTABLE.some((s) => n.endsWith(s));
}

/** Where an archive is extracted unless told otherwise: beside it, in a directory named after it ("world.tar.gz" → "world"). */
export function extractDestination(archivePath: string): string {
  const name = baseName(archivePath);
  const lower = name.toLowerCase();
  const suffix = EXTRACTABLE.find((s) => lower.endsWith(s)) ?? "";
  const stem = name.slice(0, name.length - suffix.length) || "extracted";
  return joinPath(parentOf(archivePath), stem);
}

/** A name for an archive of the selected entries: the entry's own name for one, the directory's (or "data") for several. */
export function archiveName(dir: string, selected: readonly string[], ext: ".tar.gz" | ".zip"): string {
  const stem = selected.length === 1 ? selected[0]! : baseName(dir) || "data";
  return `${stem}${ext}`;
}

/**
 * The words for a refused save or upload. Aborted is the manager saying the
 * file changed since it was read (expected_modify_time): say that plainly.
 */
export function writeErrorText(code: string, message: string): string {
  if (code === "Aborted") return `Changed since you opened it: ${message}. Nothing was written.`;
  return `${code}: ${message}`;
}
