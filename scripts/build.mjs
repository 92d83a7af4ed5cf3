#!/usr/bin/env node
/**
 * `npm run build`: bundles each program into one ESM file that plain `node`
 * runs (no tsx, no TypeScript at run time):
 *
 *   manager/dist/berth-manager.mjs  (+ dist/web: the dashboard's files, and
 *     dist/wal-checkpoint-worker.mjs: a worker thread's entry, run from beside it)
 *   agent/dist/berth-agent.mjs
 *
 * plus each program's systemd unit from deploy/systemd/ in its dist/.
 *
 * Our TypeScript and the generated contract (@berth/proto, a private
 * workspace) go into the bundle; every package listed in the program's
 * `dependencies` stays an import that `npm install` satisfies (better-sqlite3
 * is native and must). Importing anything else fails the build, so the
 * packed package never lacks a dependency.
 *
 * Usage: node scripts/build.mjs [manager] [agent]   (default: both)
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { isBuiltin } from "node:module";
import { dirname, join, relative } from "node:path";
import { bundle, PROGRAMS, ROOT as root } from "./bundle.mjs";

/** Bundled, not installed: workspace packages that are never published. */
const BUNDLED = new Set(["@berth/proto"]);

const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(PROGRAMS)) {
  const p = PROGRAMS[name];
  if (!p) {
    console.error(`build: unknown program "${name}" (manager, agent)`);
    process.exit(2);
  }
  const pkgDir = join(root, name);
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  const deps = new Set(Object.keys(pkg.dependencies ?? {}));
  rmSync(join(pkgDir, "dist"), { recursive: true, force: true });
  const t0 = Date.now();
  await bundle({
    program: p,
    outdir: join(root, dirname(p.out)),
    banner: `// ${pkg.name} ${pkg.version}: bundled by scripts/build.mjs from ${p.entry}; do not edit.`,
    external: (path, importer) => {
      if (isBuiltin(path)) return true;
      const parts = path.split("/");
      const pkgName = path.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
      if (BUNDLED.has(pkgName)) return undefined;
      if (deps.has(pkgName)) return true;
      return `"${path}" (imported by ${relative(root, importer)}) is not in ${name}/package.json "dependencies"; add it there`;
    },
  });
  // The systemd unit travels with the package (docs/install.md copies it from there).
  const unit = join(root, `deploy/systemd/berth-${name}.service`);
  if (existsSync(unit)) cpSync(unit, join(pkgDir, "dist", `berth-${name}.service`));
  if (name === "manager") {
    // The dashboard: the built one when there is one, else the placeholder page.
    const web = ["web/dist", "web/public"].map((d) => join(root, d)).find((d) => existsSync(join(d, "index.html")));
    if (web) {
      mkdirSync(join(pkgDir, "dist"), { recursive: true });
      // Source maps of the dashboard stay out: they triple the package for no operator's use.
      cpSync(web, join(dirname(join(root, p.out)), "web"), { recursive: true, filter: (src) => !src.endsWith(".map") });
    }
  }
  console.log(`built ${p.out} in ${Date.now() - t0} ms`);
}
