/**
 * Plain HTTP endpoints for probes and scrapers, answered before the
 * dashboard's static files (they are the connect-node adapter's fallback):
 *
 * - `GET /healthz`: 200 while the process answers HTTP (liveness).
 * - `GET /readyz`: 200 when the manager listens and its database is
 *   writable, else 503 with the reason (readiness).
 * - `GET /metrics`: Prometheus text format; open, or behind
 *   `authorization: Bearer <--metrics-token>`.
 */
import { timingSafeEqual } from "node:crypto";
import type { Handler } from "./listen.js";

export interface ProbeRoutesDeps {
  /** Undefined when ready, else why not ("database not writable: SQLITE_BUSY …"). */
  notReadyReason(): string | undefined;
  /** `names`: `/metrics?name=a&name=b` asks for those metrics only. */
  metrics(names?: string[]): Promise<{ contentType: string; body: string }>;
  /** When set, /metrics needs `authorization: Bearer <token>`. */
  metricsToken?: string | undefined;
}

/** Routes /healthz, /readyz and /metrics; anything else goes to `fallback`. */
export function probeRoutes(deps: ProbeRoutesDeps, fallback: Handler): Handler {
  return ((req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path !== "/healthz" && path !== "/readyz" && path !== "/metrics") return fallback(req, res);
    const send = (status: number, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers });
      if (req.method === "HEAD") res.end();
      else res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "use GET\n", { allow: "GET, HEAD" });
    if (path === "/healthz") return send(200, "ok\n");
    if (path === "/readyz") {
      const reason = deps.notReadyReason();
      return reason === undefined ? send(200, "ready\n") : send(503, `not ready: ${reason}\n`);
    }
    if (deps.metricsToken && !bearerMatches(req.headers.authorization, deps.metricsToken)) {
      return send(401, "/metrics needs authorization: Bearer <the manager's --metrics-token>\n", { "www-authenticate": 'Bearer realm="berth-metrics"' });
    }
    const names = new URLSearchParams((req.url ?? "").split("?")[1] ?? "").getAll("name");
    deps.metrics(names.length ? names : undefined).then(
      ({ contentType, body }) => send(200, body, { "content-type": contentType }),
      (err: unknown) => send(500, `metrics failed: ${(err as Error).message}\n`),
    );
  }) satisfies Handler;
}

function bearerMatches(header: string | string[] | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(Array.isArray(header) ? (header[0] ?? "") : (header ?? ""));
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
