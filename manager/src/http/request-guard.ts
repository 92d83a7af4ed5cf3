/**
 * The outermost request handler: whatever bytes a client sends, the manager
 * answers (400 at worst) and keeps running.
 *
 * connect-node's adapter turns each Node request into a URL with
 * `new URL(path, "http(s)://" + authority)` outside any catch, so a request
 * without an authority (HTTP/1.0 with no Host) or with one that is not a
 * host (`Host: a b`) threw from inside the server's "request" event and
 * ended the process. Requests are checked here first, by a pure function,
 * and anything that still throws synchronously becomes a 400 and a log line.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Logger } from "../log.js";
import type { Handler } from "./listen.js";

/** What `requestProblem` reads of a request (HTTP/1.1 and HTTP/2 alike). */
export interface RequestHead {
  url: string | undefined;
  httpVersion: string;
  /** HTTP/2 `:authority` (Node falls back to the host header). */
  authority?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
}

/** `host` or `host:port`, host a name, an IPv4 address or a bracketed IPv6 address. */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::\d{0,5})?$/;

/**
 * Why the manager cannot serve `req`, or undefined when it can. Pure: the
 * table test in request-guard.test.ts lists what is refused and what is not.
 *
 * - The target must be a path ("/…", origin-form): berth is not a proxy, and
 *   both the RPC router and the static files read `req.url` as a path.
 * - A Host / :authority that is present must be a host[:port] (RFC 9112 3.2:
 *   an invalid Host is a 400). An HTTP/1.0 request may omit it (load
 *   balancers' probes do); `effectiveAuthority` then supplies the local one.
 * - The path and authority must make a URL, as connect-node builds it.
 */
export function requestProblem(req: RequestHead): string | undefined {
  const url = req.url ?? "";
  if (!url.startsWith("/")) return "the request target must be a path starting with / (origin-form)";
  const authority = authorityOf(req);
  if (authority === undefined) {
    if (req.httpVersion === "1.0") return undefined;
    return "the request has no Host header (HTTP/1.1) or :authority (HTTP/2); send one, e.g. Host: <manager host>:<port>";
  }
  if (!AUTHORITY.test(authority)) return `the Host header or :authority ${JSON.stringify(authority.slice(0, 100))} is not host[:port]`;
  try {
    new URL(url, `http://${authority}`);
  } catch {
    return `the request target and authority do not form a URL`;
  }
  return undefined;
}

function authorityOf(req: RequestHead): string | undefined {
  const a = req.authority ?? req.headers.host;
  return Array.isArray(a) ? a[0] : a;
}

/** `host:port` of the socket the request came in on, bracketed for IPv6: what a Host-less request addressed. */
function localAuthority(req: IncomingMessage | Http2ServerRequest): string {
  const { localAddress, localPort } = req.socket;
  const host = localAddress ?? "localhost";
  return `${host.includes(":") ? `[${host}]` : host}${localPort ? `:${localPort}` : ""}`;
}

/**
 * Wraps the whole HTTP handler: refuses malformed requests with 400 and a
 * message, gives a Host-less HTTP/1.0 request the server's own authority
 * (RFC 9112 3.3: the effective URI then uses the server's authority), and
 * turns any synchronous throw of `handler` into a 400 and a warning.
 */
export function guardRequests(handler: Handler, log: Logger): Handler {
  return ((req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
    const problem = requestProblem(req as RequestHead);
    if (problem) return refuse(res, problem);
    if (authorityOf(req as RequestHead) === undefined) req.headers.host = localAuthority(req);
    try {
      (handler as (q: typeof req, s: typeof res) => void)(req, res);
    } catch (err) {
      // A bug to fix (requestProblem should have caught the request), not a reason to stop serving.
      log.warn({ err, method: req.method, url: String(req.url).slice(0, 200) }, "request handler threw; answered 400");
      refuse(res, `the manager could not read this request: ${(err as Error).message}`);
    }
  }) as Handler;
}

/** A 400 with a one-line reason, or, if an answer had already begun, the end of the exchange. */
function refuse(res: ServerResponse | Http2ServerResponse, reason: string): void {
  try {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `bad request: ${reason}\n`;
    res.writeHead(400, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
    res.end(body);
  } catch {
    res.destroy();
  }
}
