#!/usr/bin/env node
// berth-manager. An installed package runs the bundle in dist/ (npm run build)
// with plain node; a checkout of the repository runs the TypeScript sources
// through tsx, so it never runs a stale build.
import { existsSync } from "node:fs";

const source = new URL("../src/main.ts", import.meta.url);
const bundle = new URL("../dist/berth-manager.mjs", import.meta.url);
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(source.href);
} else {
  process.setSourceMapsEnabled(true);
  await import(bundle.href);
}
