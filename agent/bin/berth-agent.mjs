#!/usr/bin/env node
// berth ships TypeScript sources; tsx compiles them on load (no build step).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
