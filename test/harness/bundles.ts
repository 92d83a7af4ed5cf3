/**
 * The manager and the agent the integration tests spawn, bundled by the
 * integration projects' global setup (global-setup.ts) into
 * manager/test-dist and agent/test-dist: started through tsx, each program
 * spent 2-3 s of CPU compiling TypeScript (manager 3.0 s, agent 1.9 s user
 * time for `--help` here) before doing anything, hundreds of times per run;
 * the bundle starts in about 1 s. The bundles sit two levels under the
 * repository like the sources, so what they find beside them (../../web/dist,
 * the checkout's agent) is the same; every package stays an import from
 * node_modules, only the workspace's own @berth/* code is bundled.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle, PROGRAMS } from "../../scripts/bundle.mjs";

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The bundle a test spawns for each program (what `node <it>` runs). */
export const MANAGER_BUNDLE = join(REPO_ROOT, "manager/test-dist/berth-manager.mjs");
export const AGENT_BUNDLE = join(REPO_ROOT, "agent/test-dist/berth-agent.mjs");

let bundling: Promise<void> | undefined;

/**
 * Bundles both programs from the current sources, once per Vitest process
 * (both integration projects' global setups run in it and ask). Each file is
 * written beside its final name and renamed over it, so a program another run
 * is starting meanwhile reads a whole bundle, old or new, never half of one.
 */
export function bundleForTests(): Promise<void> {
  bundling ??= bundleBoth();
  return bundling;
}

async function bundleBoth(): Promise<void> {
  for (const [program, out] of [[PROGRAMS.manager, MANAGER_BUNDLE], [PROGRAMS.agent, AGENT_BUNDLE]] as const) {
    const outdir = dirname(out);
    const result = await bundle({
      program,
      outdir,
      write: false,
      external: (path) => (path.startsWith("@berth/") ? undefined : true),
    });
    mkdirSync(outdir, { recursive: true });
    for (const f of result.outputFiles ?? []) {
      const tmp = `${f.path}.${process.pid}.tmp`;
      writeFileSync(tmp, f.contents);
      renameSync(tmp, f.path);
    }
  }
}
