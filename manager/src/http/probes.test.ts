import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Handler } from "./listen.js";
import { probeRoutes, type ProbeRoutesDeps } from "./probes.js";

async function serve(deps: ProbeRoutesDeps): Promise<{ server: Server; get: (path: string, headers?: Record<string, string>, method?: string) => Promise<{ status: number; body: string; headers: Record<string, unknown> }> }> {
  const fallback: Handler = (_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>dashboard</html>");
  };
  const server = createServer(probeRoutes(deps, fallback) as Parameters<typeof createServer>[0] & object);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
    new Promise<{ status: number; body: string; headers: Record<string, unknown> }>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path, method, headers }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, body, headers: res.headers }));
      });
      req.on("error", reject);
      req.end();
    });
  return { server, get };
}

describe("probeRoutes: /healthz, /readyz, /metrics before the dashboard", () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  });
  const metrics = async () => ({ contentType: "text/plain; version=0.0.4; charset=utf-8", body: "berth_up 1\n" });

  it("answers liveness always and readiness with the reason it is not ready", async () => {
    let reason: string | undefined = "database not writable: SQLITE_FULL: database or disk is full";
    const { server, get } = await serve({ notReadyReason: () => reason, metrics });
    servers.push(server);
    expect(await get("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await get("/readyz")).toMatchObject({ status: 503, body: "not ready: database not writable: SQLITE_FULL: database or disk is full\n" });
    reason = undefined;
    expect(await get("/readyz?verbose=1")).toMatchObject({ status: 200, body: "ready\n" });
    expect((await get("/readyz", {}, "HEAD")).status).toBe(200);
    expect((await get("/readyz", {}, "POST")).status).toBe(405);
    // Everything else is still the dashboard.
    expect(await get("/servers/web")).toMatchObject({ status: 200, body: "<html>dashboard</html>" });
  });

  it("serves /metrics openly without a token", async () => {
    const { server, get } = await serve({ notReadyReason: () => undefined, metrics });
    servers.push(server);
    const r = await get("/metrics");
    expect(r.status).toBe(200);
    expect(r.body).toBe("berth_up 1\n");
    expect(r.headers["content-type"]).toMatch(/version=0\.0\.4/);
  });

  it("passes /metrics?name=… on as the metrics asked for (a cheap partial scrape)", async () => {
    const asked: (string[] | undefined)[] = [];
    const { server, get } = await serve({
      notReadyReason: () => undefined,
      metrics: async (names) => {
        asked.push(names);
        return metrics();
      },
    });
    servers.push(server);
    expect((await get("/metrics?name=berth_event_loop_delay_seconds&name=berth_event_loop_delay_max_seconds")).status).toBe(200);
    expect((await get("/metrics")).status).toBe(200);
    expect(asked).toEqual([["berth_event_loop_delay_seconds", "berth_event_loop_delay_max_seconds"], undefined]);
  });

  it("requires the bearer token on /metrics when one is set (and only there)", async () => {
    const { server, get } = await serve({ notReadyReason: () => undefined, metrics, metricsToken: "0123456789abcdef" });
    servers.push(server);
    expect((await get("/metrics")).status).toBe(401);
    expect((await get("/metrics", { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await get("/metrics", { authorization: "Bearer 0123456789abcdef" })).status).toBe(200);
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
  });
});
