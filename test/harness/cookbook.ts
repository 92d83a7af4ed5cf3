/**
 * Reads docs/grpcurl.md into its shell blocks and the `<!-- run … -->`
 * directives in front of them, so test/cookbook.test.ts can execute the page.
 *
 * Directive words (after `run`, separated by spaces):
 *   expect=a.b,c.0.d=value   paths that must exist in the JSON answer (optionally with a value)
 *   expect-text=x,y          substrings the output must contain
 *   save=VAR=path            remember a value for later blocks (as an environment variable)
 *   wait=name:PHASE|PHASE    then wait until the server reaches a phase (settled), or `name:gone`
 *   stream=S                 a streaming RPC: read it for at most S seconds
 *   retry=S                  run again (every second) until the expectations hold, for at most S seconds
 *   codes=a,b                the error codes this example answers with (made-up ids);
 *                            `unimplemented` is refused: every documented RPC exists
 */
import { spawn } from "node:child_process";
import { REPO_ROOT } from "./processes.js";

export interface Directive {
  expect: { path: string; value?: string }[];
  expectText: string[];
  save: { name: string; path: string }[];
  wait?: { server: string; phases: string[] | "gone" };
  streamSeconds?: number;
  retrySeconds?: number;
  codes: string[];
}

export type Tool = "grpcurl" | "buf" | "curl" | "other";

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  tool: Tool;
  /** "berth.v1.ServerService/GetServer" when the block calls one RPC. */
  rpc?: string;
  directive?: Directive;
}

export function parseDirective(text: string): Directive {
  const d: Directive = { expect: [], expectText: [], save: [], codes: [] };
  for (const word of text.trim().split(/\s+/).slice(1)) {
    const eq = word.indexOf("=");
    const key = eq < 0 ? word : word.slice(0, eq);
    const value = eq < 0 ? "" : word.slice(eq + 1);
    switch (key) {
      case "expect":
        for (const item of value.split(",")) {
          const i = item.indexOf("=");
          d.expect.push(i < 0 ? { path: item } : { path: item.slice(0, i), value: item.slice(i + 1) });
        }
        break;
      case "expect-text":
        d.expectText.push(...value.split(","));
        break;
      case "save": {
        const i = value.indexOf("=");
        if (i < 0) throw new Error(`save needs VAR=path: "${word}"`);
        d.save.push({ name: value.slice(0, i), path: value.slice(i + 1) });
        break;
      }
      case "wait": {
        const [server, phases] = value.split(":");
        if (!server || !phases) throw new Error(`wait needs name:PHASE: "${word}"`);
        d.wait = { server, phases: phases === "gone" ? "gone" : phases.split("|") };
        break;
      }
      case "stream":
        d.streamSeconds = Number(value);
        break;
      case "retry":
        d.retrySeconds = Number(value);
        break;
      case "codes":
        for (const code of value.split(",")) {
          // A cookbook block documents a feature that exists: "not built yet" is never an answer.
          if (code === "unimplemented") throw new Error(`directive "${text.trim()}": unimplemented is never an accepted answer`);
          d.codes.push(code);
        }
        break;
      default:
        throw new Error(`unknown directive word "${word}"`);
    }
  }
  return d;
}

/** The shell blocks of a Markdown page, each with the `<!-- run … -->` directly above it, if any. */
export function parseCookbook(markdown: string): Block[] {
  const lines = markdown.split("\n");
  const blocks: Block[] = [];
  let pending: { text: string; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const comment = /^<!--\s*(run\b.*?)\s*-->\s*$/.exec(line);
    if (comment) {
      pending = { text: comment[1]!, line: i + 1 };
      continue;
    }
    if (/^```sh\s*$/.test(line)) {
      const start = i + 1;
      const body: string[] = [];
      for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
      const code = body.join("\n");
      const first = code.trimStart();
      const tool: Tool = first.startsWith("grpcurl ") ? "grpcurl" : first.startsWith("buf curl ") ? "buf" : first.startsWith("curl ") ? "curl" : "other";
      const rpc = /((?:berth\.v1\.\w+Service)|(?:grpc\.health\.v1\.Health))\/(\w+)/.exec(code);
      blocks.push({
        line: start,
        code,
        tool,
        ...(rpc ? { rpc: `${rpc[1]}/${rpc[2]}` } : {}),
        ...(pending && pending.line === start - 1 ? { directive: parseDirective(pending.text) } : {}),
      });
      pending = undefined;
      continue;
    }
    if (line.trim() !== "") pending = undefined;
  }
  return blocks;
}

/** Every JSON value in `text`, in order (buf curl prints one pretty-printed object per stream message). */
export function parseJsonSequence(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"' && depth > 0) inString = true;
    else if (c === "{" || c === "[") {
      if (depth === 0) start = i;
      depth++;
    } else if ((c === "}" || c === "]") && depth > 0) {
      depth--;
      if (depth === 0 && start >= 0) {
        try {
          out.push(JSON.parse(text.slice(start, i + 1)));
        } catch {
          // not JSON after all (e.g. text output); skip it
        }
        start = -1;
      }
    }
  }
  return out;
}

/** `a.b.0.c` in a JSON value; undefined when absent. */
export function lookup(value: unknown, path: string): unknown {
  let cur: unknown = value;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** What in `doc` does not match `expect`; empty when everything does. */
export function mismatches(doc: unknown, expect: Directive["expect"]): string[] {
  const out: string[] = [];
  for (const e of expect) {
    const v = lookup(doc, e.path);
    if (v === undefined || v === null || v === "") out.push(`${e.path} is missing`);
    else if (e.value !== undefined && String(v) !== e.value) out.push(`${e.path} is ${JSON.stringify(v)}, expected ${e.value}`);
  }
  return out;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs `code` with bash; a stream is read for at most `streamSeconds`, then its process group is ended. */
export function runShell(code: string, env: NodeJS.ProcessEnv, streamSeconds?: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", `set -eo pipefail\n${code}`], { env, cwd: REPO_ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const limit = (streamSeconds ?? 60) * 1000;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        // already gone
      }
    }, limit);
    child.once("error", reject);
    child.once("close", (c) => {
      clearTimeout(timer);
      resolve({ code: c, stdout, stderr, timedOut });
    });
  });
}

/**
 * Runs one block of a page (retrying while its directive allows), checks its
 * output against the directive, saves values into `env`, then waits for a
 * server when the directive says so. Throws with the command and its output.
 */
export async function runDocBlock(
  b: Block,
  env: NodeJS.ProcessEnv,
  opts: { doc: string; waitForServer?: (name: string, phases: string[] | "gone", where: string) => Promise<void> },
): Promise<void> {
  const d = b.directive!;
  const where = `${opts.doc}:${b.line} (${b.rpc ?? b.code.split("\n")[0]})`;
  const deadline = Date.now() + (d.retrySeconds ?? 0) * 1000;
  let problems: string[] = [];
  let r: RunResult | undefined;
  let docs: unknown[] = [];
  for (;;) {
    r = await runShell(b.code, env, d.streamSeconds);
    problems = [];
    const streamEndedByUs = d.streamSeconds !== undefined && r.timedOut;
    docs = parseJsonSequence(r.stdout);
    if (r.timedOut && d.streamSeconds === undefined) problems.push("timed out");
    if (r.code !== 0 && !streamEndedByUs) {
      // An accepted error code (e.g. unimplemented) is an answer too.
      const errors = parseJsonSequence(`${r.stdout}\n${r.stderr}`).map((e) => lookup(e, "code"));
      if (!(d.codes.length && errors.some((c) => typeof c === "string" && d.codes.includes(c)))) {
        problems.push(`exit code ${r.code}`);
      }
    } else if (d.expect.length) {
      const candidates = d.streamSeconds !== undefined ? docs : docs.slice(0, 1);
      if (candidates.length === 0) problems.push("no JSON answer");
      else if (!candidates.some((doc) => mismatches(doc, d.expect).length === 0)) problems.push(...mismatches(candidates[0], d.expect));
    }
    for (const t of d.expectText) if (!r.stdout.includes(t)) problems.push(`output lacks "${t}"`);
    if (problems.length === 0 || Date.now() > deadline) break;
    await new Promise((res) => setTimeout(res, 1000));
  }
  if (problems.length) {
    throw new Error(`${where}: ${problems.join("; ")}\n--- command\n${b.code}\n--- stdout\n${r.stdout.slice(0, 3000)}\n--- stderr\n${r.stderr.slice(0, 3000)}`);
  }
  for (const s of d.save) {
    const from = docs.find((doc) => lookup(doc, s.path) !== undefined);
    const v = from === undefined ? undefined : lookup(from, s.path);
    if (typeof v !== "string" || !v) throw new Error(`${where}: nothing at ${s.path} to save as ${s.name}\n${r.stdout}`);
    env[s.name] = v;
  }
  if (d.wait) {
    if (!opts.waitForServer) throw new Error(`${where}: wait= is not supported on this page`);
    await opts.waitForServer(d.wait.server, d.wait.phases, where);
  }
}
