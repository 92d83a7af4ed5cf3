#!/usr/bin/env node
// The root package's postinstall (npm ci, npm install): builds better-sqlite3,
// the SQLite driver, from source, saying so first: it takes about a minute,
// once, and npm would otherwise show nothing while it runs. npm itself does not
// run better-sqlite3's install script (package.json allowScripts: false), whose
// first step tries to download a prebuilt binary from GitHub.
//
// Does nothing when the driver already loads (a later npm install, or a Node
// upgrade's rebuild done). Plain Node, no dependencies.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(root, "manager", "package.json"));

function loads() {
  try {
    const Database = require("better-sqlite3");
    new Database(":memory:").close();
    return true;
  } catch {
    return false;
  }
}

/** npm's own node-gyp: npm names it to scripts, else it sits beside npm-cli.js. */
function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp, process.env.npm_execpath && join(dirname(process.env.npm_execpath), "..", "node_modules", "node-gyp", "bin", "node-gyp.js")];
  return candidates.find((c) => c && c.endsWith(".js") && existsSync(c));
}

let pkgDir;
try {
  pkgDir = dirname(require.resolve("better-sqlite3/package.json"));
} catch {
  process.exit(0); // not installed (e.g. npm install --omit of the manager): nothing to build
}
if (loads()) process.exit(0);

const gyp = nodeGyp();
if (!gyp) {
  console.error("[berth] cannot find npm's node-gyp to build the SQLite driver; run: npm rebuild better-sqlite3 --allow-scripts=better-sqlite3");
  process.exit(1);
}
console.log("[berth] building the SQLite driver (better-sqlite3) from source: about a minute, once. It needs python3, make and g++.");
const t0 = Date.now();
const out = [];
const child = spawn(process.execPath, [gyp, "rebuild", "--release"], { cwd: pkgDir, stdio: ["ignore", "pipe", "pipe"] });
child.stdout.on("data", (b) => out.push(b));
child.stderr.on("data", (b) => out.push(b));
child.on("close", (code) => {
  if (code === 0 && loads()) {
    console.log(`[berth] the SQLite driver is built (${Math.round((Date.now() - t0) / 1000)} s).`);
    return;
  }
  process.stderr.write(Buffer.concat(out));
  console.error(`[berth] building the SQLite driver failed (node-gyp exit ${code}); its output is above. Install python3, make and g++, then run npm install again.`);
  process.exit(1);
});
