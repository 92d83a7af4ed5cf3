import { createReadStream, statSync } from "node:fs";
import { extname, join, normalize, resolve, sep } from "node:path";
import { pipeline } from "node:stream";
import type { Handler } from "./listen.js";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".json": "application/json",
  ".ico": "image/x-icon",
  ".map": "application/json",
  ".woff2": "font/woff2",
};

/**
 * The file under `base` a request path names, or undefined when the path
 * cannot be decoded (a lone "%", overlong UTF-8 such as %c0%ae): such a path
 * names no file, and decodeURIComponent's URIError must not escape (it ended
 * the process once). Paths never escape `base`: ".." and encoded ".." stop
 * at it.
 */
export function resolveStaticPath(base: string, url: string): string | undefined {
  let pathname: string;
  try {
    pathname = decodeURIComponent(new URL(url, "http://x").pathname);
  } catch {
    return undefined;
  }
  // A NUL names no file (and fs calls throw on it).
  if (pathname.includes("\0")) return undefined;
  const path = normalize(join(base, pathname));
  return path === base || path.startsWith(base + sep) ? path : base;
}

/** Is `path` a regular file (not a directory, not missing, readable to stat)? */
function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Serves the dashboard's built files; unknown paths get index.html so the
 * single-page app can route. Paths never escape `root`.
 */
export function staticFiles(root: string) {
  const base = resolve(root);
  return ((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
      return;
    }
    let path = resolveStaticPath(base, req.url ?? "/");
    if (path === undefined) {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end("bad request: the path is not valid percent-encoded UTF-8\n");
      return;
    }
    if (!isFile(path)) path = join(base, "index.html");
    if (!isFile(path)) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("dashboard not built\n");
      return;
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(path)] ?? "application/octet-stream",
      "cache-control": path.includes(`${sep}assets${sep}`) ? "public, max-age=31536000, immutable" : "no-cache",
      // The dashboard talks only to its own origin and is never framed.
      "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    // pipeline, not pipe: a read error (file replaced mid-read) ends the response instead of throwing.
    pipeline(createReadStream(path), res as NodeJS.WritableStream, () => {});
  }) satisfies Handler;
}
