/**
 * Templates end to end on real Docker (docs/templates.md): an egg imported
 * through the API, servers created from built-in and project templates whose
 * containers get the rendered command and environment, bad variables refused
 * naming the variable, and a server that shows its template moved on and
 * keeps running when the template changes and when it is deleted.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { ConditionStatus, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateService, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const EGG = fileURLToPath(new URL("./fixtures/eggs/paper-like.ptdl_v2.json", import.meta.url));

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}

describe("templates on real Docker", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let hostId: string;
  let templates: Client<typeof TemplateService>;
  const servers: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("templates");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
    templates = createClient(TemplateService, manager.transport(manager.adminToken));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: servers });
    await removeTestDir(dir);
  });

  const builtIn = async (name: string) => (await templates.listTemplates({ pageSize: 1000 })).templates.find((t) => t.name === name && t.builtIn)!;

  it("imports the Paper-like egg through the API: stored, with what was not mapped", async () => {
    const res = await templates.importTemplate({ content: new Uint8Array(readFileSync(EGG)), project: "default" });
    expect(res.template!.id).toMatch(/^tpl_/);
    expect(res.unmapped.length).toBeGreaterThan(0);
    const got = (await templates.getTemplate({ id: res.template!.id })).template!;
    expect([got.name, got.project, got.version]).toEqual([res.template!.name, "default", 1n]);
    expect(got.variables.length).toBeGreaterThan(0);
  });

  it("creates servers from built-in templates with variables: the containers run the rendered command and environment", async () => {
    const sleeper = await builtIn("sleeper");
    const { server: s } = await manager.servers.createServer({ spec: { name: "tpl-sleeper", hostId }, template: { templateId: sleeper.id, image: TEST_IMAGE, variables: { SECONDS: "4242" } } });
    servers.push(s!.id);
    const httpd = await builtIn("busybox-httpd");
    const { server: h } = await manager.servers.createServer({ spec: { name: "tpl-httpd", hostId }, template: { templateId: httpd.id, image: TEST_IMAGE, variables: { WELCOME: "hello from a template" } } });
    servers.push(h!.id);

    const sr = await waitForPhase(manager, s!.id, Phase.RUNNING);
    const si = await docker.getContainer(sr.status!.containerId).inspect();
    expect([si.Config.Image, si.Config.Cmd]).toEqual([TEST_IMAGE, ["sleep", "4242"]]);
    expect(si.Config.Env).toEqual(expect.arrayContaining(["SECONDS=4242", "SERVER_IP=0.0.0.0"]));
    expect(sr.spec!.template).toMatchObject({ templateId: sleeper.id, version: sleeper.version, variables: { SECONDS: "4242" } });

    const hr = await waitForPhase(manager, h!.id, Phase.RUNNING);
    const hi = await docker.getContainer(hr.status!.containerId).inspect();
    expect(hi.Config.Cmd).toEqual(["/bin/sh", "-c", '[ -e /data/index.html ] || echo "${WELCOME}" > /data/index.html; exec httpd -f -v -p ${SERVER_PORT} -h /data']);
    expect(hi.Config.Env).toEqual(expect.arrayContaining(["WELCOME=hello from a template", "SERVER_PORT=8080"]));
    expect(hr.spec!.ports.map((p) => [p.hostPort, p.containerPort])).toEqual([[18080, 8080]]);
    // The value went through the environment into the file, never as shell code.
    const exec = await docker.getContainer(hr.status!.containerId).exec({ Cmd: ["cat", "/data/index.html"], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    const out = await new Promise<string>((resolve) => {
      let text = "";
      stream.on("data", (b: Buffer) => (text += b.toString("latin1")));
      stream.on("end", () => resolve(text));
    });
    expect(out).toContain("hello from a template");
  });

  it("refuses bad variables naming the variable, creating nothing", async () => {
    const sleeper = await builtIn("sleeper");
    const err = await refusal(manager.servers.createServer({ spec: { name: "tpl-bad", hostId }, template: { templateId: sleeper.id, image: TEST_IMAGE, variables: { SECONDS: "soon" } } }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/^template\.variables\["SECONDS"\]: .*whole number/);
    expect((await manager.servers.listServers({})).servers.some((s) => s.spec!.name === "tpl-bad")).toBe(false);
  });

  it("a server shows TemplateOutdated when its template is updated, and keeps running when it is deleted", async () => {
    const { template: t } = await templates.createTemplate({
      template: {
        project: "default",
        name: "napper",
        images: [{ image: TEST_IMAGE }],
        startup: "sleep {{NAP}}",
        variables: [{ env: "NAP", defaultValue: "3600", userEditable: true, rule: { kind: VariableKind.INTEGER, min: 1 } }],
      },
    });
    const { server } = await manager.servers.createServer({ spec: { name: "tpl-napper", hostId }, template: { templateId: t!.id, variables: { NAP: "5000" } } });
    servers.push(server!.id);
    const running = await waitForPhase(manager, server!.id, Phase.RUNNING);
    const outdated = async () => (await manager.servers.getServer({ id: server!.id })).server!.status!.conditions.find((c) => c.type === "TemplateOutdated");
    expect(await outdated()).toBeUndefined();

    await templates.updateTemplate({ id: t!.id, template: { ...t!, startup: "sleep {{NAP}} {{NAP}}" }, expectedVersion: 1n });
    const c = await outdated();
    expect([c?.status, c?.reason]).toEqual([ConditionStatus.TRUE, "TemplateUpdated"]);
    expect(c!.message).toMatch(/version 2; this server was rendered from version 1/);

    await templates.deleteTemplate({ id: t!.id });
    expect((await outdated())?.reason).toBe("TemplateDeleted");
    const after = await manager.servers.getServer({ id: server!.id });
    expect(after.server!.status!.phase).toBe(Phase.RUNNING);
    expect(after.server!.status!.containerId).toBe(running.status!.containerId);
    const info = await docker.getContainer(running.status!.containerId).inspect();
    expect([info.State.Running, info.Config.Cmd]).toEqual([true, ["sleep", "5000"]]);
    // A restart runs the rendered spec: the template is not needed any more.
    await manager.servers.restartServer({ id: server!.id });
    const again = await waitForPhase(manager, server!.id, Phase.RUNNING);
    expect((await docker.getContainer(again.status!.containerId).inspect()).Config.Cmd).toEqual(["sleep", "5000"]);
  });
});
