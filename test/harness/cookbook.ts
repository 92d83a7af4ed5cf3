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
