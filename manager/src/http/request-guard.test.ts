import { describe, expect, it } from "vitest";
import { requestProblem, type RequestHead } from "./request-guard.js";
import { resolveStaticPath } from "./static-files.js";

const h1 = (url: string, host: string | undefined, httpVersion = "1.1"): RequestHead => ({ url, httpVersion, headers: host === undefined ? {} : { host } });

describe("requestProblem: what the manager refuses with 400 before any handler runs", () => {
  it.each<[string, RequestHead, RegExp | undefined]>([
    ["an RPC over HTTP/1.1", h1("/berth.v1.HostService/ListHosts", "127.0.0.1:7000"), undefined],
    ["a dashboard path with a query", h1("/servers?x=%zz", "berth.example"), undefined],
    ["an IPv6 authority", h1("/healthz", "[::1]:7000"), undefined],
    ["HTTP/1.0 without Host (load balancer probes)", h1("/healthz", undefined, "1.0"), undefined],
    ["HTTP/2 with :authority", { url: "/x", httpVersion: "2.0", authority: "h:1", headers: {} }, undefined],
    ["HTTP/1.1 without Host", h1("/berth.v1.HostService/ListHosts", undefined), /no Host header/],
    ["Host: a b", h1("/berth.v1.HostService/ListHosts", "a b"), /is not host\[:port\]/],
    ["Host with a path", h1("/", "a/b"), /is not host\[:port\]/],
    ["Host with a bad bracket", h1("/", "[zz"), /is not host\[:port\]/],
    ["absolute-form target with a broken host", h1("http://[", "x"), /origin-form/],
    ["asterisk-form", h1("*", "x"), /origin-form/],
    ["an empty target", h1("", "x"), /origin-form/],
    ["HTTP/2 without :authority or host", { url: "/x", httpVersion: "2.0", headers: {} }, /no Host header/],
  ])("%s", (_name, req, expected) => {
    const problem = requestProblem(req);
    if (expected === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(expected);
  });
});

describe("resolveStaticPath: decodes safely and never leaves the web root", () => {
  const base = "/srv/web";
  it.each<[string, string | undefined]>([
    ["/", "/srv/web/"],
    ["/assets/a.js", "/srv/web/assets/a.js"],
    ["/a%20b.css", "/srv/web/a b.css"],
    ["/../../etc/passwd", "/srv/web/etc/passwd"],
    ["/%2e%2e/%2e%2e/etc/passwd", "/srv/web/etc/passwd"],
    ["/..%2f..%2fetc%2fpasswd", "/srv/web"],
    // Undecodable: a lone %, overlong UTF-8 for ".", a truncated sequence, an encoded NUL.
    ["/%", undefined],
    ["/%c0%ae%c0%ae/x", undefined],
    ["/%e2%82", undefined],
    ["/a%00b", undefined],
  ])("%s", (url, expected) => {
    expect(resolveStaticPath(base, url)).toBe(expected);
  });
});
