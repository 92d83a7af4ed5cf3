import { createReadStream, existsSync, statSync } from "node:fs";
import type { Handler } from "./listen.js";
import { extname, join, normalize, resolve, sep } from "node:path";

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
    const url = new URL(req.url ?? "/", "http://x");
    let path = normalize(join(base, decodeURIComponent(url.pathname)));
    if (path !== base && !path.startsWith(base + sep)) path = base;
    if (!existsSync(path) || statSync(path).isDirectory()) path = join(base, "index.html");
    if (!existsSync(path)) {
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
    createReadStream(path).pipe(res as NodeJS.WritableStream);
  }) satisfies Handler;
}
