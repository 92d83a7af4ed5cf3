/**
 * berth's built-in templates: a small global catalogue that runs on any host
 * (busybox), kept by the manager. At start each one missing is created and
 * each whose definition changed in this berth is updated (version + 1);
 * through the API they are read-only (not updatable, not deletable: copy
 * one with CreateTemplate to change it). docs/templates.md.
 */
import { create, equals } from "@bufbuild/protobuf";
import { RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import { HostPortMode, TemplateSchema, VariableKind, type Template } from "@berth/proto/berth/v1/template_pb.js";
import type { TemplateRecord } from "../domain/records.js";
import { AlreadyExistsError, ConflictError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { checkTemplate } from "./render.js";

/** Images every built-in offers: BusyBox from Docker Hub, and the local image berth's tests build (test/harness/docker-engine.ts). */
const IMAGES = [
  { image: "busybox:1.36", label: "BusyBox 1.36 (Docker Hub)" },
  { image: "berth-test/busybox:1", label: "BusyBox (berth's local test image, no registry needed)" },
];

export const BUILTIN_TEMPLATES: readonly Template[] = [
  create(TemplateSchema, {
    name: "sleeper",
    description: "Does nothing for a while: a container that sleeps, for trying berth out (placement, limits, lifecycle).",
    images: IMAGES,
    startup: "sleep {{SECONDS}}",
    variables: [
      {
        env: "SECONDS",
        name: "Seconds to sleep",
        description: "How long the process sleeps before it exits (and restarts by the restart policy).",
        defaultValue: "86400",
        required: true,
        userEditable: true,
        rule: { kind: VariableKind.INTEGER, min: 1, max: 31536000 },
      },
    ],
    restartPolicy: RestartPolicy.ALWAYS,
  }),
  create(TemplateSchema, {
    name: "busybox-httpd",
    description: "BusyBox's web server serving the server's data directory (/data) over HTTP on container port 8080, published on the first free host port from 18080 to 18179. Writes an index.html with the welcome text when the data directory has none.",
    images: IMAGES,
    startupShell: true,
    startup: '[ -e /data/index.html ] || echo "{{WELCOME}}" > /data/index.html; exec httpd -f -v -p {{SERVER_PORT}} -h /data',
    variables: [
      {
        env: "WELCOME",
        name: "Welcome text",
        description: "The text of /data/index.html when the data directory has none yet.",
        defaultValue: "hello from berth",
        userEditable: true,
        rule: { kind: VariableKind.STRING, max: 200 },
      },
    ],
    ports: [{ name: "http", containerPort: 8080, hostPortMode: HostPortMode.RANGE, hostPortMin: 18080, hostPortMax: 18179 }],
    restartPolicy: RestartPolicy.ALWAYS,
  }),
  create(TemplateSchema, {
    name: "console-echo",
    description: "Reads lines from its console (SendConsoleCommand) and echoes each to its log with a prefix; 'stop' ends it. A stand-in for a game server's console.",
    images: IMAGES,
    startupShell: true,
    startup: 'echo "console-echo ready"; while read -r line; do [ "$line" = stop ] && exit 0; echo "{{PREFIX}}$line"; done',
    variables: [
      {
        env: "PREFIX",
        name: "Prefix",
        description: "Put before every line echoed.",
        defaultValue: "echo: ",
        userEditable: true,
        rule: { kind: VariableKind.STRING, max: 100 },
      },
    ],
    console: true,
    stopCommand: "stop",
    readyPattern: "^console-echo ready$",
    restartPolicy: RestartPolicy.ON_FAILURE,
  }),
];

export interface BuiltinResult {
  created: string[];
  updated: string[];
}

/**
 * Creates the built-in templates that are missing and updates those whose
 * definition differs from this berth's. Several managers starting at once
 * are fine: the name is unique and updates are conditioned on the version.
 */
export async function ensureBuiltinTemplates(store: Store, ledger: Ledger, now: () => number = Date.now): Promise<BuiltinResult> {
  const out: BuiltinResult = { created: [], updated: [] };
  for (const def of BUILTIN_TEMPLATES) {
    const problems = checkTemplate(def);
    if (problems.length > 0) throw new Error(`built-in template ${def.name} is invalid: ${JSON.stringify(problems)}`);
    const cur = await store.findTemplateByName("", def.name);
    const at = now();
    try {
      if (!cur) {
        const rec: TemplateRecord = { id: newId("tpl"), project: "", name: def.name, version: 1, template: def, builtIn: true, createdAt: at, updatedAt: at, createdBy: "manager" };
        await store.commit([
          { op: "template.insert", template: rec },
          ledger.op({ type: "template.created", project: "", actor: "manager", correlationId: rec.id, message: `built-in template "${def.name}" created (version 1)` }),
        ]);
        out.created.push(def.name);
      } else if (!cur.builtIn || !sameContent(cur.template, def)) {
        // A global template of that name made by hand becomes the built-in (its id stays: servers keep their reference).
        const next: TemplateRecord = { ...cur, version: cur.version + 1, template: def, builtIn: true, updatedAt: at };
        await store.commit([
          { op: "template.update", template: next, expectVersion: cur.version },
          ledger.op({ type: "template.updated", project: "", actor: "manager", correlationId: cur.id, message: `built-in template "${def.name}" updated to version ${next.version} (this berth's definition)`, payload: { version: next.version } }),
        ]);
        out.updated.push(def.name);
      }
    } catch (err) {
      // Another manager did it meanwhile.
      if (!(err instanceof AlreadyExistsError) && !(err instanceof ConflictError)) throw err;
    }
  }
  return out;
}

function sameContent(stored: Template, def: Template): boolean {
  const a = create(TemplateSchema, { ...stored, id: "", project: "", version: 0n, builtIn: false, createTime: undefined, updateTime: undefined });
  return equals(TemplateSchema, a, def);
}
