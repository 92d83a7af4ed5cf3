import { describe, expect, it } from "vitest";
import { ManagerUrlError, parseManagerUrls } from "./manager-urls.js";

describe("parseManagerUrls (--manager URL[,URL...])", () => {
  it.each([
    ["one URL, as today", "https://manager.example:7000", ["https://manager.example:7000"]],
    ["a trailing slash is dropped", "http://127.0.0.1:7000/", ["http://127.0.0.1:7000"]],
    ["no port: the scheme's default is kept implicit", "https://manager.example", ["https://manager.example"]],
    ["several, in order", "http://a:7000,https://b.example:7443", ["http://a:7000", "https://b.example:7443"]],
    ["spaces around commas", " http://a:7000 , http://b:7000 ", ["http://a:7000", "http://b:7000"]],
    ["IPv6 literal", "http://[::1]:7000,http://127.0.0.1:7000", ["http://[::1]:7000", "http://127.0.0.1:7000"]],
  ])("accepts %s", (_name, value, urls) => {
    expect(parseManagerUrls(value)).toEqual(urls);
  });

  it.each([
    ["empty", "", /--manager is empty/],
    ["only commas", ",", /--manager is empty/],
    ["not a URL", "manager.example:7000", /--manager "manager\.example:7000" must start with http:\/\/ or https:\/\//],
    ["a word", "manager", /--manager "manager" is not a URL/],
    ["the second is bad, named by position", "http://a:7000,ftp://b:21", /manager URL #2 "ftp:\/\/b:21" must start with http:\/\/ or https:\/\/ \(got ftp:\)/],
    ["an empty entry", "http://a:7000,,http://b:7000", /manager URL #2 is empty in "http:\/\/a:7000,,http:\/\/b:7000"/],
    ["a trailing comma", "http://a:7000,", /manager URL #2 is empty/],
    ["a path", "https://m.example:7000/berth", /must be only scheme, host and port .* use https:\/\/m\.example:7000/],
    ["user info", "https://u:p@m.example:7000", /must be only scheme, host and port/],
    ["twice the same", "http://a:7000,http://a:7000/", /manager URL #2 "http:\/\/a:7000\/" is listed twice/],
  ])("refuses %s, naming the bad one", (_name, value, message) => {
    expect(() => parseManagerUrls(value)).toThrow(ManagerUrlError);
    expect(() => parseManagerUrls(value)).toThrow(message);
  });
});
