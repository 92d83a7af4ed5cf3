// Runs before `npm start` and `npm test` (plain Node, no dependencies): installs
// the npm packages when they are missing or stale, so both commands work on a
// fresh clone. System packages (docker.io, busybox-static, chromium, postgresql)
// are installed by the code that needs them: the test harness apt-installs each
// one only when it is missing (test/harness/docker-engine.ts, postgres.ts,
// test/browser/browser.ts), so `npm start` never pulls in test-only packages.
import { execSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const marker = join(root, "node_modules", ".package-lock.json");
const lock = join(root, "package-lock.json");

function sh(cmd) {
  console.log(`[berth] ${cmd}`);
  execSync(cmd, { cwd: root, stdio: "inherit" });
}

const stale = !existsSync(marker) || statSync(lock).mtimeMs > statSync(marker).mtimeMs;
if (stale) {
  console.log("[berth] installing the npm packages: a minute or two the first time, then only when package-lock.json changes");
  sh("npm ci --no-audit --no-fund");
}

// better-sqlite3 is a native addon built from source; a Node upgrade needs a rebuild.
const require = createRequire(join(root, "manager", "package.json"));
try {
  const Database = require("better-sqlite3");
  new Database(":memory:").close();
} catch (err) {
  console.log(`[berth] better-sqlite3 does not load (${err.message.split("\n")[0]}); rebuilding it`);
  sh("node scripts/build-sqlite-driver.mjs");
}
