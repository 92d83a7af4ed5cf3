/**
 * One program's esbuild bundle: its entry and each worker thread's entry as
 * <name>.mjs in `outdir`, ESM for node 20, with a linked source map. Shared by
 * `npm run build` (scripts/build.mjs: the packages) and the integration tests
 * (test/harness/bundles.ts: the programs they spawn, without tsx).
 *
 * `external(path, importer)` decides each bare import: true keeps it an
 * import, a string fails the build with that message, undefined bundles it.
 * `write: false` returns the files instead of writing them.
 */
import { build } from "esbuild";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

export const PROGRAMS = {
  manager: { entry: "manager/src/main.ts", out: "manager/dist/berth-manager.mjs", workers: ["manager/src/store/sqlite/wal-checkpoint-worker.ts"] },
  agent: { entry: "agent/src/main.ts", out: "agent/dist/berth-agent.mjs", workers: [] },
};

/** Types: bundle.d.mts. */
export function bundle(o) {
  const { program: p } = o;
  return build({
    entryPoints: [p.out, ...p.workers].map((f, i) => ({ in: join(ROOT, i === 0 ? p.entry : f), out: basename(f).replace(/\.[^.]+$/, "") })),
    outdir: o.outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    sourcemap: "linked",
    sourcesContent: false,
    legalComments: "none",
    logLevel: "warning",
    write: o.write ?? true,
    ...(o.banner ? { banner: { js: o.banner } } : {}),
    plugins: [
      {
        name: "external",
        setup(b) {
          b.onResolve({ filter: /^[^./]/ }, (args) => {
            const verdict = o.external(args.path, args.importer);
            if (verdict === true) return { external: true };
            if (typeof verdict === "string") return { errors: [{ text: verdict }] };
            return undefined;
          });
        },
      },
    ],
  });
}
