/**
 * TLS end to end: a manager with --tls-auto (its own CA, created on first
 * start and reused after), an agent that enrolls by the CA fingerprint
 * embedded in the enrollment token and reaches ONLINE, and operators' tools
 * (buf curl with --cacert, Connect JSON over HTTPS/1.1) on the same port.
 */
import { execFile } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request } from "node:https";
import { join } from "node:path";
import { promisify } from "node:util";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HostService, HostState } from "@berth/proto/berth/v1/host_pb.js";
import { enrollAgent, REPO_ROOT, runAgent, startManager, tempDir, waitFor, type ManagerProc, type Proc } from "./harness/processes.js";

const run = promisify(execFile);
const BUF = join(REPO_ROOT, "node_modules/.bin/buf");

describe("TLS with a pinned CA", () => {
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc | undefined;

  beforeAll(async () => {
    dir = await tempDir("tls");
    manager = await startManager({ dir, args: ["--tls-auto"] });
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
  });

  it("serves https with a CA created next to the database, keys private", () => {
    expect(manager.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(manager.caPath).toBe(join(dir, "tls", "ca.pem"));
    expect(statSync(join(dir, "tls", "ca-key.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "tls", "server-key.pem")).mode & 0o777).toBe(0o600);
    const ca = new X509Certificate(manager.caPem!);
    expect(ca.ca).toBe(true);
    const leaf = new X509Certificate(readFileSync(join(dir, "tls", "server.pem")));
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.subjectAltName).toContain("IP Address:127.0.0.1");
  });

  it("puts the CA fingerprint in enrollment tokens and an https URL in the command", async () => {
    const { token, command } = await manager.hosts.createEnrollmentToken({});
    const fp = createHash("sha256").update(new X509Certificate(manager.caPem!).raw).digest("base64url");
    expect(token).toMatch(/^enr_[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}$/);
    expect(token.endsWith(`.${fp}`)).toBe(true);
    expect(command).toContain(`--manager ${manager.url}`);
  });

  it("an agent refuses a manager whose CA does not match the token, and does not send the token", async () => {
    const { token } = await manager.hosts.createEnrollmentToken({});
    const [secret] = token.split(".");
    const wrongFp = createHash("sha256").update("some other CA").digest("base64url");
    const refused = await enrollAgent({ managerUrl: manager.url, token: `${secret}.${wrongFp}`, stateDir: join(dir, "wrong"), dir });
    expect(refused.code).toBe(78);
    expect(refused.log).toMatch(/refusing to enroll: the manager at 127\.0\.0\.1:\d+ presented no certificate with the CA fingerprint in the enrollment token/);
    expect(refused.log).toMatch(/The token was NOT sent/);
    expect(existsSync(join(dir, "wrong", "credentials.json"))).toBe(false);
    // A pinned token over plain http is refused before any connection.
    const plain = await enrollAgent({ managerUrl: manager.url.replace("https:", "http:"), token, stateDir: join(dir, "plain"), dir });
    expect(plain.code).toBe(2);
    expect(plain.log).toMatch(/pins the manager's TLS certificate, so --manager must be an https:\/\/ URL/);
    // The secret never reached the manager: the genuine token still enrolls.
    const ok = await enrollAgent({ managerUrl: manager.url, token, stateDir: join(dir, "once"), dir });
    expect(ok.code).toBe(0);
  });

  it("enrolls an agent through the pinned fingerprint; it keeps the CA and reaches ONLINE over TLS", async () => {
    const { token } = await manager.hosts.createEnrollmentToken({});
    const stateDir = join(dir, "agent-state");
    const enrolled = await enrollAgent({ managerUrl: manager.url, token, stateDir, dir });
    expect(enrolled.code, enrolled.log).toBe(0);
    expect(readFileSync(join(stateDir, "manager-ca.pem"), "utf8")).toBe(manager.caPem);
    const creds = JSON.parse(readFileSync(join(stateDir, "credentials.json"), "utf8")) as { managerUrl: string; hostId: string; caFile: string };
    expect(creds.managerUrl).toBe(manager.url);
    expect(creds.caFile).toBe(join(stateDir, "manager-ca.pem"));
    agent = runAgent({ dir, stateDir, dataRoot: join(dir, "data") });
    const host = await waitFor("host online over TLS", async () =>
      (await manager.hosts.listHosts({})).hosts.find((h) => h.id === creds.hostId && h.state === HostState.ONLINE),
    );
    expect(host.dockerReachable).toBe(true);
  });

  it("is scriptable with buf curl over TLS with --cacert and a bearer token", async () => {
    const base = ["curl", "--protocol", "grpc", "--cacert", manager.caPath!];
    const list = await run(BUF, [...base, "--list-services", manager.url]);
    expect(list.stdout.split("\n")).toEqual(expect.arrayContaining(["berth.v1.ServerService", "berth.v1.AccessService", "grpc.health.v1.Health"]));
    const res = await run(BUF, [...base, "-H", `authorization: Bearer ${manager.adminToken}`, "-d", "{}", `${manager.url}/berth.v1.ServerService/ListServers`]);
    expect(JSON.parse(res.stdout || "{}")).toEqual({});
    const denied = await run(BUF, [...base, "-d", "{}", `${manager.url}/berth.v1.ServerService/ListServers`]).catch((e: { stderr: string }) => e);
    expect((denied as { stderr: string }).stderr).toMatch(/unauthenticated/);
    // Without the CA, the certificate is not trusted.
    const untrusted = await run(BUF, ["curl", "-v", "--protocol", "grpc", "--list-services", manager.url]).catch((e: { stderr: string }) => e);
    expect((untrusted as { stderr: string }).stderr).toMatch(/certificate signed by unknown authority/);
  });

  it("speaks Connect JSON over HTTPS/1.1 on the same port (ALPN)", async () => {
    const res = await new Promise<{ status: number; body: string; alpn: string | false | undefined }>((resolve, reject) => {
      const req = request(
        `${manager.url}/berth.v1.HostService/ListHosts`,
        { method: "POST", agent: new HttpsAgent({ ca: manager.caPem!, ALPNProtocols: ["http/1.1"] }), headers: { "content-type": "application/json", authorization: `Bearer ${manager.adminToken}` } },
        (r) => {
          const alpn = (r.socket as unknown as { alpnProtocol?: string | false }).alpnProtocol;
          let body = "";
          r.on("data", (d: Buffer) => (body += d.toString()));
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body, alpn }));
        },
      );
      req.on("error", reject);
      req.end("{}");
    });
    expect(res.status).toBe(200);
    expect(res.alpn).toBe("http/1.1");
    expect((JSON.parse(res.body) as { hosts: unknown[] }).hosts.length).toBeGreaterThanOrEqual(1);
  });

  it("refuses plaintext clients on the TLS port, telling HTTP/1 clients to use https", async () => {
    const plain = createClient(HostService, createGrpcTransport({ baseUrl: manager.url.replace("https:", "http:") }));
    const err = await plain.listHosts({}).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err).toBeInstanceOf(ConnectError);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${manager.url.replace("https:", "http:")}/`, (r) => {
        let body = "";
        r.on("data", (d: Buffer) => (body += d.toString()));
        r.on("end", () => resolve({ status: r.statusCode ?? 0, body }));
      });
      req.on("error", reject);
      req.end();
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatch(/serves TLS only on this port: use https:\/\//);
  });

  it("reuses the CA on restart, so enrolled agents keep trusting the manager", async () => {
    const before = manager.caPem;
    const port = Number(new URL(manager.url).port);
    await manager.stop();
    manager = await startManager({ dir, port, args: ["--tls-auto"] });
    expect(manager.caPem).toBe(before);
    await waitFor("agent back online", async () => (await manager.hosts.listHosts({})).hosts.find((h) => h.state === HostState.ONLINE), 30_000);
  });
});
